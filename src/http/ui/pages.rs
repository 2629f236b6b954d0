//! The pages: overview and one job (payloads, timeline live, attempts, callback delivery;
//! cancel and retry).

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde_json::Value;

use super::session::{CsrfForm, Session};
use crate::{
    http::{
        AppState,
        auth::Permissions,
        jobs::{JobView, load_visible, parse_job_id},
        problem::ApiError,
    },
    ids::JobId,
    model::{Direction, JobStatus},
    store::{CallbackAudit, DeliveryRecord, DeliveryStatus, JobEvent, RetryOutcome},
};

/// What every page shows around its content.
pub struct Chrome {
    /// `server.base_path`, the start of every link.
    pub base: String,
    pub who: String,
    pub csrf: String,
    pub tab: &'static str,
    /// The key may manage keys (the Keys tab).
    pub keys_admin: bool,
}

impl Chrome {
    pub fn of(session: &Session, tab: &'static str) -> Self {
        Self {
            base: session.base.clone(),
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

/// One row of the engine health tables.
struct EngineRow {
    name: String,
    /// `ok`, `degraded`, `down` or `idle`: the badge's class.
    state: &'static str,
    detail: String,
}

/// One engine's rows: flows' circuit breakers, MCP servers or SSH hosts.
struct EngineSection {
    title: &'static str,
    rows: Vec<EngineRow>,
}

/// Every engine's health (operators: `ops:read` or `keys:admin`).
async fn engine_health(state: &AppState) -> Result<Vec<EngineSection>, ApiError> {
    // Flow URLs may carry secrets (ActivePieces webhooks): only their hosts are shown.
    let flows = state
        .breakers
        .views()
        .into_iter()
        .map(|b| EngineRow {
            name: url::Url::parse(&b.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            state: match b.state {
                "closed" => "ok",
                "half_open" => "degraded",
                _ => "down",
            },
            detail: format!(
                "circuit {}, {} failures in a row",
                b.state, b.consecutive_failures
            ),
        })
        .collect();
    let mcp = state
        .mcp
        .servers()
        .into_iter()
        .map(|s| EngineRow {
            state: match (s.up, s.idle) {
                (true, _) => "ok",
                (false, true) => "idle",
                (false, false) => "down",
            },
            detail: format!(
                "{}; {} restarts on this instance",
                match (s.up, s.idle) {
                    (true, _) => "connected",
                    (false, true) => "starts on first use",
                    (false, false) => "not connected",
                },
                s.restarts
            ),
            name: s.name,
        })
        .collect();
    let activity = state
        .store
        .from_replica(|reads| async move { reads.ssh_activity(24.0).await })
        .await?;
    let ssh = state
        .config
        .ssh
        .hosts
        .iter()
        .map(|(name, host)| {
            let seen = activity.iter().find(|a| &a.host == name);
            let (runs, failures) = seen.map_or((0, 0), |a| (a.runs, a.failures));
            let mut detail = format!(
                "{}@{}:{}, at most {} sessions; last 24 h: {runs} commands, {failures} connection failures",
                host.user, host.address, host.port, host.max_sessions
            );
            if let Some(a) = seen
                && let (Some(at), Some(why)) = (a.last_failure_at, &a.last_failure)
            {
                detail.push_str(&format!(
                    " (last at {} UTC: {why})",
                    at.format("%Y-%m-%d %H:%M")
                ));
            }
            EngineRow {
                name: name.clone(),
                state: match (runs, failures) {
                    (_, 0) => "ok",
                    (0, _) => "down",
                    _ => "degraded",
                },
                detail,
            }
        })
        .collect();
    Ok(vec![
        EngineSection {
            title: "Flows",
            rows: flows,
        },
        EngineSection {
            title: "MCP servers",
            rows: mcp,
        },
        EngineSection {
            title: "SSH hosts",
            rows: ssh,
        },
    ])
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    chrome: Chrome,
    /// For operators only.
    engines: Option<Vec<EngineSection>>,
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
        // Overviews may lag a little: the replica, when there is one.
        let (gauges, finished, week) = match tokio::try_join!(
            state.store.queue_gauges(),
            state
                .store
                .from_replica(|reads| async move { reads.finished_since(24.0).await }),
            state
                .store
                .from_replica(|reads| async move { reads.hourly_outcomes(24 * 7).await })
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
    let engines = if session.auth.key_holds_any(&["ops:read", "keys:admin"]) {
        match engine_health(&state).await {
            Ok(health) => Some(health),
            Err(e) => return problem_page(e),
        }
    } else {
        None
    };
    page(Overview {
        chrome: Chrome::of(&session, "overview"),
        engines,
        charts,
        counts,
        oldest_queued,
        sees_all,
    })
}

struct TimelineRow {
    at: String,
    kind: String,
    to_status: String,
    attempt: i32,
}

impl From<&JobEvent> for TimelineRow {
    fn from(e: &JobEvent) -> Self {
        TimelineRow {
            at: e.at.format("%H:%M:%S%.3f").to_string(),
            kind: e.kind.clone(),
            to_status: e
                .to_status
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            attempt: e.attempt,
        }
    }
}

/// How one attempt ended, from the audit trail.
struct AttemptRow {
    attempt: i32,
    at: String,
    outcome: String,
    error: String,
}

/// Events that end an attempt (or the job between attempts).
const ATTEMPT_ENDS: [&str; 8] = [
    "retry_scheduled",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "rescued",
    "released",
    // Not run (a flow's rate): the attempt is given back, shown with its reason.
    "deferred",
];

fn attempts_of(events: &[JobEvent]) -> Vec<AttemptRow> {
    events
        .iter()
        .filter(|e| e.attempt > 0 && ATTEMPT_ENDS.contains(&e.kind.as_str()))
        .map(|e| {
            let field = |name: &str| {
                e.detail
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let (code, message) = (field("code"), field("message"));
            AttemptRow {
                attempt: e.attempt,
                at: e.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                outcome: e.kind.clone(),
                error: match (code.is_empty(), message.is_empty()) {
                    (true, true) => String::new(),
                    (false, true) => code,
                    (true, false) => message,
                    (false, false) => format!("{code}: {message}"),
                },
            }
        })
        .collect()
}

/// The job's callback delivery and each attempt at it.
struct DeliveryView {
    url: String,
    status: &'static str,
    attempts: i32,
    next_attempt: String,
    exhausted: bool,
    tries: Vec<DeliveryTry>,
}

struct DeliveryTry {
    attempt: String,
    at: String,
    answer: String,
    outcome: String,
}

fn delivery_view(d: DeliveryRecord, audits: Vec<CallbackAudit>) -> DeliveryView {
    let status = match d.status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Gone => "gone",
        DeliveryStatus::Exhausted => "exhausted",
    };
    DeliveryView {
        url: d.url,
        status,
        attempts: d.attempts,
        next_attempt: if d.status == DeliveryStatus::Pending {
            d.next_attempt_at.format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            String::new()
        },
        exhausted: d.status == DeliveryStatus::Exhausted,
        tries: audits
            .into_iter()
            .filter(|a| a.direction == Direction::Out)
            .map(|a| DeliveryTry {
                attempt: a.attempt.map(|n| n.to_string()).unwrap_or_default(),
                at: a.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                answer: match (a.status_code, a.error) {
                    (Some(code), Some(e)) => format!("{code}: {e}"),
                    (Some(code), None) => code.to_string(),
                    (None, Some(e)) => e,
                    (None, None) => String::new(),
                },
                outcome: a.outcome.map(|o| o.as_str().to_owned()).unwrap_or_default(),
            })
            .collect(),
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
    attempts: Vec<AttemptRow>,
    delivery: Option<DeliveryView>,
    can_cancel: bool,
    can_retry: bool,
    can_retry_callback: bool,
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
        let (events, delivery, audits) = tokio::try_join!(
            state.store.job_events(id),
            state.store.delivery_of(id),
            state.store.callback_audits(id)
        )?;
        Ok::<_, ApiError>((JobView::from(job), events, delivery, audits))
    };
    let (job, events, delivery, audits) = match shown.await {
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
    let can_retry = job.status.is_retryable()
        && session.auth.require("jobs:retry").is_ok()
        && session.auth.require_intent(&job.intent).is_ok();
    page(JobPage {
        chrome: Chrome::of(&session, "jobs"),
        inputs,
        result,
        error,
        payloads_hidden,
        timeline: events.iter().map(TimelineRow::from).collect(),
        attempts: attempts_of(&events),
        delivery: delivery.map(|d| delivery_view(d, audits)),
        can_cancel,
        can_retry,
        can_retry_callback: session.auth.require("callbacks:retry").is_ok(),
        job,
    })
}

/// A single-job action from its page (`cancel`, `retry`), then back to the page.
async fn job_action<F, Fut>(session: Session, job_id: String, csrf: &str, action: F) -> Response
where
    F: FnOnce(Session, JobId) -> Fut,
    Fut: std::future::Future<Output = (Session, Result<(), ApiError>)>,
{
    if let Some(refused) = session.csrf_refusal(csrf) {
        return refused;
    }
    let id = match parse_job_id(&job_id) {
        Ok(id) => id,
        Err(e) => return problem_page(e),
    };
    match action(session, id).await {
        (session, Ok(())) => Redirect::to(&session.at(&format!("/ui/jobs/{id}"))).into_response(),
        (_, Err(e)) => problem_page(e),
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    job_action(session, job_id, &form.csrf, |session, id| async move {
        let done = async {
            session.auth.require("jobs:cancel")?;
            load_visible(&state, &session.auth, id).await?;
            state.intake.cancel(id, &session.auth.principal).await?;
            Ok(())
        }
        .await;
        (session, done)
    })
    .await
}

pub async fn retry(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    job_action(session, job_id, &form.csrf, |session, id| async move {
        let done = async {
            session.auth.require("jobs:retry")?;
            let job = load_visible(&state, &session.auth, id).await?;
            session.auth.require_intent(&job.intent)?;
            match state.intake.retry(id, &session.auth.principal).await? {
                RetryOutcome::Retried => Ok(()),
                RetryOutcome::NotFound => Err(ApiError::JobNotFound {
                    job_id: id.to_string(),
                }),
                RetryOutcome::NotRetryable(status) => Err(ApiError::JobNotRetryable {
                    job_id: id.to_string(),
                    status,
                }),
                RetryOutcome::PayloadPurged => Err(ApiError::PayloadPurged {
                    job_id: id.to_string(),
                }),
            }
        }
        .await;
        (session, done)
    })
    .await
}
