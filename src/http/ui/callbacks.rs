//! The callbacks page: deliveries pending and exhausted across the jobs the key may see,
//! filtered by host; retry one, or every exhausted one to a host (`callbacks:retry`).

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    pages::{Chrome, page, problem_page},
    session::Session,
};
use crate::{
    http::{
        AppState,
        auth::Permissions,
        jobs::{load_visible, parse_job_id},
        problem::ApiError,
    },
    ids::JobId,
    store::OpenDelivery,
};

/// Rows a page shows.
const SHOWN: i64 = 200;

struct DeliveryRow {
    job_id: String,
    url: String,
    host: String,
    status: &'static str,
    attempts: i32,
    manual_retries: i32,
    next_attempt: String,
    last: String,
}

impl From<OpenDelivery> for DeliveryRow {
    fn from(d: OpenDelivery) -> Self {
        let last = match (d.last_status_code, d.last_error) {
            (Some(code), Some(e)) => format!("{code}: {e}"),
            (Some(code), None) => code.to_string(),
            (None, Some(e)) => e,
            (None, None) => String::new(),
        };
        DeliveryRow {
            job_id: JobId::from(d.job_id).to_string(),
            url: d.url,
            host: d.host,
            status: match d.status {
                crate::store::DeliveryStatus::Exhausted => "exhausted",
                _ => "pending",
            },
            attempts: d.attempts,
            manual_retries: d.manual_retries,
            next_attempt: d.next_attempt_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            last,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/callbacks.html")]
struct CallbacksPage {
    chrome: Chrome,
    rows: Vec<DeliveryRow>,
    host: String,
    can_retry: bool,
}

#[derive(Deserialize)]
pub struct HostFilter {
    #[serde(default)]
    host: String,
}

/// A host as a filter: a host name or an IP literal, as the delivery's URL has it.
fn checked_host(raw: &str) -> Option<&str> {
    let host = raw.trim();
    (!host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')))
    .then_some(host)
}

fn owner_filter(session: &Session) -> Option<uuid::Uuid> {
    (!session.auth.sees_all_jobs()).then(|| session.auth.principal.api_key_id.unwrap_or_default())
}

pub async fn callbacks(
    State(state): State<AppState>,
    session: Session,
    Query(filter): Query<HostFilter>,
) -> Response {
    let host = checked_host(&filter.host);
    let owner = owner_filter(&session);
    let rows = match state
        .store
        .from_replica(|reads| async move { reads.open_deliveries(owner, host, SHOWN).await })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return problem_page(e.into()),
    };
    page(CallbacksPage {
        chrome: Chrome::of(&session, "callbacks"),
        rows: rows.into_iter().map(DeliveryRow::from).collect(),
        host: host.unwrap_or_default().to_owned(),
        can_retry: session.auth.require("callbacks:retry").is_ok(),
    })
}

#[derive(Deserialize)]
pub struct RetryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    host: String,
    /// Sent from the job's page: go back there.
    #[serde(default)]
    to_job: bool,
}

fn back_to(session: &Session, host: &str) -> Response {
    let query = serde_urlencoded::to_string([("host", host)]).unwrap_or_default();
    Redirect::to(&session.at(&format!("/ui/callbacks?{query}"))).into_response()
}

pub async fn retry_one(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    Form(form): Form<RetryForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    let retried = async {
        let id = parse_job_id(&job_id)?;
        session.auth.require("callbacks:retry")?;
        load_visible(&state, &session.auth, id).await?;
        state.store.retry_delivery(id).await?;
        Ok::<_, ApiError>(id)
    };
    match retried.await {
        Ok(id) if form.to_job => {
            Redirect::to(&session.at(&format!("/ui/jobs/{id}"))).into_response()
        }
        Ok(_) => back_to(&session, form.host.trim()),
        Err(e) => problem_page(e),
    }
}

pub async fn retry_host(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<RetryForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    if let Err(e) = session.auth.require("callbacks:retry") {
        return problem_page(e);
    }
    let Some(host) = checked_host(&form.host) else {
        return (StatusCode::BAD_REQUEST, "Name the host to retry.").into_response();
    };
    match state
        .store
        .retry_exhausted_to(owner_filter(&session), host)
        .await
    {
        Ok(_) => back_to(&session, host),
        Err(e) => problem_page(e.into()),
    }
}
