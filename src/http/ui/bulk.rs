//! Cancelling every unfinished job that matches a filter (`jobs:cancel`): a confirmation page
//! with the count first, then the cancels go on in the background, each one through the same
//! path (and audit trail) as cancelling a single job.

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    pages::{Chrome, page, problem_page},
    session::Session,
};
use crate::{
    auth::Authenticated,
    http::{AppState, auth::Permissions, problem::ApiError},
    model::JobStatus,
    store::{JobFilter, JobRecord, ListCursor},
};

/// Jobs read per page while counting or cancelling.
const PAGE: i64 = 500;
/// Counting stops here (the page then says "at least").
const COUNT_CAP: usize = 50_000;
const UNFINISHED: [JobStatus; 3] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::AwaitingCallback,
];

#[derive(Deserialize)]
pub struct BulkFilter {
    #[serde(default)]
    intent: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    csrf: String,
}

/// The unfinished jobs of the filter that `auth` may see, as a store filter.
fn unfinished_matching(auth: &Authenticated, f: &BulkFilter) -> Result<JobFilter, ApiError> {
    let intent = f.intent.trim();
    if intent.chars().count() > 200 {
        return Err(ApiError::invalid(
            "intent",
            "must be at most 200 characters",
        ));
    }
    let statuses = match f.status.trim() {
        "" => UNFINISHED.to_vec(),
        one => {
            let status = JobStatus::parse(one)
                .ok_or_else(|| ApiError::invalid("status", format!("`{one}` is not a status")))?;
            UNFINISHED.into_iter().filter(|s| *s == status).collect()
        }
    };
    Ok(JobFilter {
        owner: (!auth.sees_all_jobs()).then(|| auth.principal.api_key_id.unwrap_or_default()),
        intent: (!intent.is_empty()).then(|| intent.to_owned()),
        statuses: Some(statuses),
        since: None,
        until: None,
        cursor: None,
        limit: PAGE,
    })
}

/// Moves `filter` past a full page; false after the last one.
fn advance(filter: &mut JobFilter, rows: &[JobRecord]) -> bool {
    match rows.last() {
        Some(last) if rows.len() as i64 == PAGE => {
            filter.cursor = Some(ListCursor {
                created_at: last.created_at,
                id: last.id.uuid(),
            });
            true
        }
        _ => false,
    }
}

async fn count(state: &AppState, mut filter: JobFilter) -> Result<usize, ApiError> {
    let mut n = 0;
    loop {
        if filter.statuses.as_ref().is_some_and(Vec::is_empty) {
            return Ok(0);
        }
        let rows = state.store.list_jobs(&filter).await?;
        n += rows.len();
        if n >= COUNT_CAP || !advance(&mut filter, &rows) {
            return Ok(n);
        }
    }
}

#[derive(Template)]
#[template(path = "ui/bulk_cancel.html")]
struct Confirm {
    chrome: Chrome,
    intent: String,
    status: String,
    count: usize,
    capped: bool,
}

pub async fn confirm(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<BulkFilter>,
) -> Response {
    if let Err(e) = session.auth.require("jobs:cancel") {
        return problem_page(e);
    }
    let counted = async {
        let filter = unfinished_matching(&session.auth, &f)?;
        count(&state, filter).await
    };
    match counted.await {
        Ok(count) => page(Confirm {
            chrome: Chrome::of(&session, "jobs"),
            intent: f.intent.trim().to_owned(),
            status: f.status.trim().to_owned(),
            count,
            capped: count >= COUNT_CAP,
        }),
        Err(e) => problem_page(e),
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<BulkFilter>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&f.csrf) {
        return refused;
    }
    if let Err(e) = session.auth.require("jobs:cancel") {
        return problem_page(e);
    }
    let mut filter = match unfinished_matching(&session.auth, &f) {
        Ok(filter) => filter,
        Err(e) => return problem_page(e),
    };
    if filter.statuses.as_ref().is_some_and(Vec::is_empty) {
        return (StatusCode::BAD_REQUEST, "No unfinished status matches.").into_response();
    }
    let principal = session.auth.principal.clone();
    let worker_state = state.clone();
    // In the background: the page answers at once. Cancelled jobs leave the filter, so the
    // next page starts after the last job seen.
    tokio::spawn(async move {
        let mut cancelled = 0u64;
        loop {
            let rows = match worker_state.store.list_jobs(&filter).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, cancelled, "bulk cancel stopped; run it again");
                    return;
                }
            };
            for job in &rows {
                match worker_state.intake.cancel(job.id, &principal).await {
                    Ok(_) => cancelled += 1,
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = %e, "bulk cancel: not cancelled")
                    }
                }
            }
            if !advance(&mut filter, &rows) {
                break;
            }
        }
        tracing::info!(cancelled, by = %principal.name, "bulk cancel done");
    });
    let query = serde_urlencoded::to_string([("intent", f.intent.trim()), ("status", "cancelled")])
        .unwrap_or_default();
    Redirect::to(&format!("/ui/jobs?{query}")).into_response()
}
