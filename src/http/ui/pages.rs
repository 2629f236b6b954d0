//! The pages: overview, jobs (filtered, keyset-paginated), one job (payloads, timeline live,
//! cancel).

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde_json::Value;

use super::session::{CsrfForm, Session};
use crate::{
    http::{
        AppState,
        auth::Permissions,
        jobs::{JobView, ListParams, load_visible, page_of_jobs, parse_job_id},
        problem::ApiError,
    },
    model::JobStatus,
    store::JobEvent,
};

/// What every page shows around its content.
pub struct Chrome {
    pub who: String,
    pub csrf: String,
    pub tab: &'static str,
    /// The key may manage keys (the Keys tab).
    pub keys_admin: bool,
}

impl Chrome {
    pub fn of(session: &Session, tab: &'static str) -> Self {
        Self {
            who: session.auth.principal.name.clone(),
            csrf: session.csrf.clone(),
            tab,
            keys_admin: session.auth.require("keys:admin").is_ok(),
        }
    }
}

pub fn render_failed(e: askama::Error) -> Response {
    tracing::error!(error = %e, "a dashboard page did not render");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "The page could not be shown.",
    )
        .into_response()
}

pub fn page(template: impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => render_failed(e),
    }
}

/// An API error as a page (the status and the problem's detail).
pub fn problem_page(e: ApiError) -> Response {
    let resp = e.into_response();
    let status = resp.status();
    (
        status,
        format!("{status}: see the API's answer for details"),
    )
        .into_response()
}

struct Count {
    label: &'static str,
    value: String,
    status: &'static str,
}

/// One bar of a chart: succeeded stacked under failed, in SVG units (the chart is 100 high).
pub struct Bar {
    x: usize,
    ok_y: f64,
    ok_height: f64,
    failed_y: f64,
    failed_height: f64,
    title: String,
}

/// Finished jobs per hour as stacked bars, drawn as inline SVG (no chart library, nothing
/// fetched): `width` is in bar slots.
pub struct Chart {
    caption: &'static str,
    width: usize,
    bars: Vec<Bar>,
    total: i64,
    failed: i64,
}

impl Chart {
    fn of(caption: &'static str, hours: &[(chrono::DateTime<chrono::Utc>, i64, i64)]) -> Self {
        let peak = hours
            .iter()
            .map(|(_, ok, bad)| ok + bad)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let bars = hours
            .iter()
            .enumerate()
            .map(|(i, (hour, ok, bad))| {
                let ok_height = *ok as f64 / peak * 100.0;
                let failed_height = *bad as f64 / peak * 100.0;
                Bar {
                    x: i * 4,
                    ok_y: 100.0 - ok_height,
                    ok_height,
                    failed_y: 100.0 - ok_height - failed_height,
                    failed_height,
                    title: format!(
                        "{} UTC: {ok} succeeded, {bad} failed",
                        hour.format("%Y-%m-%d %H:00")
                    ),
                }
            })
            .collect();
        Chart {
            caption,
            width: hours.len() * 4,
            bars,
            total: hours.iter().map(|(_, ok, bad)| ok + bad).sum(),
            failed: hours.iter().map(|(_, _, bad)| bad).sum(),
        }
    }

    fn failure_rate(&self) -> String {
        if self.total == 0 {
            "–".into()
        } else {
            format!("{:.1} %", self.failed as f64 * 100.0 / self.total as f64)
        }
    }
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    chrome: Chrome,
    charts: Vec<Chart>,
    /// Counts for the whole deployment (keys with `jobs:read:all`), else none.
    counts: Vec<Count>,
    oldest_queued: String,
    sees_all: bool,
}

pub async fn overview(State(state): State<AppState>, session: Session) -> Response {
    let sees_all = session.auth.sees_all_jobs();
    let mut counts = Vec::new();
    let mut oldest_queued = String::new();
    let mut charts = Vec::new();
    if sees_all {
        let (gauges, finished, week) = match tokio::try_join!(
            state.store.queue_gauges(),
            state.store.finished_since(24.0),
            state.store.hourly_outcomes(24 * 7)
        ) {
            Ok(all) => all,
            Err(e) => return problem_page(e.into()),
        };
        let finished_of = |s: JobStatus| {
            finished
                .iter()
                .find(|(status, _)| *status == s)
                .map_or(0, |(_, n)| *n)
        };
        counts = vec![
            Count {
                label: "Queued",
                value: gauges.queued.to_string(),
                status: "queued",
            },
            Count {
                label: "Running",
                value: gauges.running.to_string(),
                status: "running",
            },
            Count {
                label: "Awaiting callback",
                value: gauges.awaiting_callback.to_string(),
                status: "awaiting_callback",
            },
            Count {
                label: "Succeeded (24 h)",
                value: finished_of(JobStatus::Succeeded).to_string(),
                status: "succeeded",
            },
            Count {
                label: "Failed (24 h)",
                value: finished_of(JobStatus::Failed).to_string(),
                status: "failed",
            },
            Count {
                label: "Timed out (24 h)",
                value: finished_of(JobStatus::TimedOut).to_string(),
                status: "timed_out",
            },
        ];
        oldest_queued = format!("{:.1} s", gauges.oldest_queued_seconds);
        let day = &week[week.len().saturating_sub(24)..];
        charts = vec![
            Chart::of("Last 24 hours", day),
            Chart::of("Last 7 days", &week),
        ];
    }
    page(Overview {
        chrome: Chrome::of(&session, "overview"),
        charts,
        counts,
        oldest_queued,
        sees_all,
    })
}

struct Row {
    id: String,
    intent: String,
    mode: &'static str,
    status: &'static str,
    principal: String,
    created_at: String,
    duration: String,
}

#[derive(Template)]
#[template(path = "ui/jobs.html")]
struct Jobs {
    chrome: Chrome,
    rows: Vec<Row>,
    intent: String,
    status: String,
    next: Option<String>,
    error: Option<String>,
    statuses: Vec<&'static str>,
    /// The key may cancel jobs (the bulk cancel link).
    can_cancel: bool,
    /// The filter as a query string.
    filter_query: String,
}

pub async fn jobs(
    State(state): State<AppState>,
    session: Session,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let chrome = Chrome::of(&session, "jobs");
    let statuses = JobStatus::ALL.map(JobStatus::as_str).to_vec();
    let Ok(Query(mut params)) = params else {
        return Redirect::to("/ui/jobs").into_response();
    };
    // A form's empty fields mean "any".
    params.status = params.status.filter(|s| !s.is_empty());
    params.intent = params.intent.filter(|s| !s.trim().is_empty());
    // A job id typed into the intent box opens that job.
    if let Some(found) = params
        .intent
        .as_deref()
        .and_then(|i| parse_job_id(i.trim()).ok())
    {
        return Redirect::to(&format!("/ui/jobs/{found}")).into_response();
    }
    let intent = params.intent.clone().unwrap_or_default();
    let status = params.status.clone().unwrap_or_default();
    let (rows, cursor) = match page_of_jobs(&state, &session.auth, &params).await {
        Ok(found) => found,
        Err(e) => {
            let error = match &e {
                ApiError::InvalidField { detail, .. } => detail.clone(),
                other => other.to_string(),
            };
            return page(Jobs {
                chrome,
                rows: Vec::new(),
                intent,
                status,
                next: None,
                error: Some(error),
                statuses,
                can_cancel: false,
                filter_query: String::new(),
            });
        }
    };
    let filter_query =
        serde_urlencoded::to_string([("intent", &intent), ("status", &status)]).unwrap_or_default();
    let next = cursor.map(|cursor| {
        let mut query = vec![("cursor", cursor)];
        if !intent.is_empty() {
            query.push(("intent", intent.clone()));
        }
        if !status.is_empty() {
            query.push(("status", status.clone()));
        }
        serde_urlencoded::to_string(query).unwrap_or_default()
    });
    let rows = rows
        .into_iter()
        .map(|r| Row {
            id: r.id.to_string(),
            intent: r.intent,
            mode: r.mode.as_str(),
            status: r.status.as_str(),
            principal: r.principal.unwrap_or_default(),
            created_at: r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            duration: r
                .duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default(),
        })
        .collect();
    page(Jobs {
        chrome,
        rows,
        intent,
        status,
        next,
        error: None,
        statuses,
        can_cancel: session.auth.require("jobs:cancel").is_ok(),
        filter_query,
    })
}

struct TimelineRow {
    at: String,
    kind: String,
    to_status: String,
    attempt: i32,
}

impl From<JobEvent> for TimelineRow {
    fn from(e: JobEvent) -> Self {
        TimelineRow {
            at: e.at.format("%H:%M:%S%.3f").to_string(),
            kind: e.kind,
            to_status: e
                .to_status
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            attempt: e.attempt,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/job.html")]
struct JobPage {
    chrome: Chrome,
    job: JobView,
    inputs: String,
    result: String,
    error: String,
    /// Payloads shown only with `jobs:read:payloads`.
    payloads_hidden: bool,
    timeline: Vec<TimelineRow>,
    can_cancel: bool,
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub async fn job(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
) -> Response {
    let shown = async {
        let id = parse_job_id(&job_id)?;
        let job = load_visible(&state, &session.auth, id).await?;
        let events = state.store.job_events(id).await?;
        Ok::<_, ApiError>((JobView::from(job), events))
    };
    let (job, events) = match shown.await {
        Ok(found) => found,
        Err(e) => return problem_page(e),
    };
    let payloads_hidden = session.auth.require("jobs:read:payloads").is_err();
    let (inputs, result) = if payloads_hidden {
        (String::new(), String::new())
    } else {
        (
            pretty(&job.inputs),
            job.result.as_ref().map(pretty).unwrap_or_default(),
        )
    };
    let error = job
        .error
        .as_ref()
        .map(|e| format!("{}: {}", e.code, e.message))
        .unwrap_or_default();
    let can_cancel = !job.status.is_final() && session.auth.require("jobs:cancel").is_ok();
    page(JobPage {
        chrome: Chrome::of(&session, "jobs"),
        inputs,
        result,
        error,
        payloads_hidden,
        timeline: events.into_iter().map(TimelineRow::from).collect(),
        can_cancel,
        job,
    })
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    let cancelled = async {
        let id = parse_job_id(&job_id)?;
        session.auth.require("jobs:cancel")?;
        load_visible(&state, &session.auth, id).await?;
        state.intake.cancel(id, &session.auth.principal).await?;
        Ok::<_, ApiError>(id)
    };
    match cancelled.await {
        Ok(id) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(e) => problem_page(e),
    }
}
