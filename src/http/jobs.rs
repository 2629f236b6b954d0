//! The jobs API: status, listing, cancellation and history.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    AppState,
    auth::Permissions,
    problem::ApiError,
    responses::{BadParameters, JobLookup, KeyProblems, ScopeProblem},
};
use crate::{
    auth::Authenticated,
    ids::JobId,
    intake::WaitOutcome,
    model::{JobError, JobStatus, Mode, job_error},
    store::{CancelOutcome, JobEvent, JobFilter, JobRecord, ListCursor, RetryOutcome},
};

/// How long `POST /jobs/{id}/cancel` waits for a running attempt to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{job_id}", get(get_job))
        .route("/jobs/{job_id}/cancel", post(cancel_job))
        .route("/jobs/{job_id}/retry", post(retry_job))
        .route("/jobs/{job_id}/events", get(job_events))
}

/// A job as clients and operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: JobId,
    pub intent: String,
    /// The engine that runs it.
    pub mode: Mode,
    /// What the client asked for (`auto` when the server chose).
    pub requested_mode: Mode,
    pub status: JobStatus,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub priority: i16,
    pub callback_url: Option<String>,
    pub request_id: Option<String>,
    /// The API key that created it (null: anonymous).
    pub api_key_id: Option<Uuid>,
    /// The key's name, or `anonymous`.
    pub principal: Option<String>,
    pub client_addr: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From acceptance to the final state.
    pub duration_ms: Option<i64>,
    /// When a queued job becomes due (retries wait here).
    pub run_at: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// When retention dropped its inputs and result.
    pub payload_purged_at: Option<DateTime<Utc>>,
    /// The schedule that filed it.
    pub schedule_id: Option<Uuid>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        JobView {
            job_id: r.id,
            intent: r.intent,
            mode: r.mode,
            requested_mode: r.requested_mode,
            status: r.status,
            inputs: r.inputs,
            result: r.result,
            error: if r.status == JobStatus::Succeeded {
                None
            } else {
                job_error(r.error_code, r.error_message)
            },
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            priority: r.priority,
            callback_url: r.callback_url,
            request_id: r.request_id,
            api_key_id: r.api_key_id,
            principal: r.principal,
            client_addr: r.client_addr,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            run_at: r.run_at,
            cancel_requested_at: r.cancel_requested_at,
            payload_purged_at: r.payload_purged_at,
            schedule_id: r.schedule_id,
        }
    }
}

pub fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|e: crate::ids::IdParseError| ApiError::invalid("job_id", e.to_string()))
}

/// The job, if it exists and this principal may see it (another client's job is reported as
/// missing, not forbidden: its existence is not theirs to learn).
pub async fn load_visible(
    state: &AppState,
    auth: &Authenticated,
    id: JobId,
) -> Result<JobRecord, ApiError> {
    state
        .store
        .get_job(id)
        .await?
        .filter(|job| auth.sees(job.api_key_id))
        .ok_or_else(|| ApiError::JobNotFound {
            job_id: id.to_string(),
        })
}

#[utoipa::path(get, path = "/jobs/{job_id}", operation_id = "getJob", tag = "jobs",
    summary = "A job's status and outcome",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "The job", body = JobView), JobLookup, KeyProblems))]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    Ok(Json(load_visible(&state, &auth, id).await?.into()))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Exact intent name.
    #[param(max_length = 200)]
    pub intent: Option<String>,
    /// One status or several, comma-separated (`queued,running`).
    #[param(value_type = Option<Vec<JobStatus>>, style = Form, explode = false)]
    pub status: Option<String>,
    /// The engine that ran it: `flow`, `agent` or `mcp`.
    #[param(pattern = "^(flow|agent|mcp)$")]
    pub mode: Option<String>,
    /// Only the jobs created with this API key (`key_id` of `GET /keys`); another key's jobs
    /// need `jobs:read:all`.
    #[param(value_type = Option<Uuid>)]
    pub api_key_id: Option<String>,
    /// Only the jobs this schedule filed (`schedule_id` of `GET /schedules`).
    #[param(value_type = Option<Uuid>)]
    pub schedule_id: Option<String>,
    /// Accepted at or after (RFC 3339, to the millisecond). Listings go by the time in the
    /// job's id (UUIDv7: when the instance accepted the request), which can precede
    /// `created_at` (the database's time of the intake's commit) by a few milliseconds.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// Accepted before (RFC 3339, to the millisecond; see `since`).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
    /// How many jobs a page holds (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn parse_time(field: &str, raw: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid(field, "must be an RFC 3339 timestamp"))
        })
        .transpose()
}

fn encode_cursor(c: ListCursor) -> String {
    URL_SAFE_NO_PAD.encode(c.id.simple().to_string())
}

/// Cursors issued before listings were all in id order also carried the last job's creation
/// time (`<micros>:<id>`); the id alone is the position, so those still work.
fn decode_cursor(raw: &str) -> Option<ListCursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let id = match text.split_once(':') {
        Some((micros, id)) => {
            micros.parse::<i64>().ok()?;
            id
        }
        None => &text,
    };
    Some(ListCursor {
        id: Uuid::try_parse(id).ok()?,
    })
}

fn filter_from(p: &ListParams) -> Result<JobFilter, ApiError> {
    let statuses = p
        .status
        .as_deref()
        .map(|raw| {
            raw.split(',')
                .map(|s| {
                    JobStatus::parse(s.trim()).ok_or_else(|| {
                        ApiError::invalid(
                            "status",
                            format!(
                                "`{}` is not one of: {}",
                                s.trim(),
                                JobStatus::ALL.map(|s| s.as_str()).join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|statuses| {
                    // Each status is one statement (see `Store::list_jobs`): named twice, it
                    // would list its jobs twice and cost a query per repetition.
                    let mut unique = Vec::with_capacity(statuses.len());
                    for status in statuses {
                        if !unique.contains(&status) {
                            unique.push(status);
                        }
                    }
                    unique
                })
        })
        .transpose()?;
    let limit = match p.limit.as_deref() {
        None => 50,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be an integer from 1 to 500"))?,
    };
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))
        })
        .transpose()?;
    if p.intent.as_ref().is_some_and(|i| i.chars().count() > 200) {
        return Err(ApiError::invalid(
            "intent",
            "must be at most 200 characters",
        ));
    }
    let mode = p
        .mode
        .as_deref()
        .map(|raw| match Mode::parse(raw) {
            Some(m) if m != Mode::Auto => Ok(m),
            _ => Err(ApiError::invalid(
                "mode",
                "must be one of: flow, agent, mcp",
            )),
        })
        .transpose()?;
    let owner = p
        .api_key_id
        .as_deref()
        .map(|raw| {
            Uuid::try_parse(raw).map_err(|_| ApiError::invalid("api_key_id", "must be a UUID"))
        })
        .transpose()?;
    let schedule = p
        .schedule_id
        .as_deref()
        .map(|raw| {
            Uuid::try_parse(raw).map_err(|_| ApiError::invalid("schedule_id", "must be a UUID"))
        })
        .transpose()?;
    Ok(JobFilter {
        owner,
        intent: p.intent.clone().filter(|s| !s.is_empty()),
        statuses,
        mode,
        schedule,
        since: parse_time("since", &p.since)?,
        until: parse_time("until", &p.until)?,
        cursor,
        limit,
    })
}

/// The store filter of `params` over the jobs `auth` may see.
pub(crate) fn filter_for(auth: &Authenticated, params: &ListParams) -> Result<JobFilter, ApiError> {
    let mut filter = filter_from(params)?;
    if !auth.sees_all_jobs() {
        // A key without jobs:read:all lists its own jobs; asking for another key's gets none
        // (the nil id, like an unused key's, matches no job).
        let own = auth.principal.api_key_id.unwrap_or_default();
        filter.owner = Some(match filter.owner {
            Some(asked) if asked != own => Uuid::nil(),
            _ => own,
        });
    }
    Ok(filter)
}

/// One page of the jobs `auth` may see, newest first, and the cursor of the next page.
pub(crate) async fn page_of_jobs(
    state: &AppState,
    auth: &Authenticated,
    params: &ListParams,
) -> Result<(Vec<JobRecord>, Option<String>), ApiError> {
    let filter = filter_for(auth, params)?;
    // One extra row tells whether another page exists.
    let page = JobFilter {
        limit: filter.limit + 1,
        ..filter.clone()
    };
    let page = &page;
    // Listings may lag a little: the replica, when there is one. A job by id (read your own
    // write right after a 202) stays on the primary.
    let mut rows = state
        .store
        .from_replica(|reads| async move { reads.list_jobs(page).await })
        .await?;
    let next = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last()
            .map(|r| encode_cursor(ListCursor { id: r.id.uuid() }))
    } else {
        None
    };
    Ok((rows, next))
}

#[utoipa::path(get, path = "/jobs", operation_id = "listJobs", tag = "jobs",
    summary = "Jobs, newest first",
    description = "Newest first by id (UUIDv7, so in the order the jobs were accepted), the \
        same order whatever the filter; `next_cursor` continues after the page's last job.",
    params(ListParams),
    responses((status = 200, description = "A page of jobs", body = JobList), BadParameters, KeyProblems))]
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let (rows, next_cursor) = page_of_jobs(&state, &auth, &params).await?;
    Ok(Json(JobList {
        jobs: rows.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/jobs/{job_id}/cancel", operation_id = "cancelJob", tag = "jobs",
    summary = "Cancel a job that has not finished (scope jobs:cancel)",
    description = "A queued job (or one awaiting a callback) is cancelled at once. A running one \
        is told to stop; the answer waits up to 5 s for it (200), else 202 while it stops.",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "Cancelled", body = JobView),
              (status = 202, description = "Told to stop; still stopping", body = JobView),
              (status = 409, description = "Already finished (`job_finished`, with `job_status`)", body = super::problem::Problem, content_type = "application/problem+json"),
              JobLookup, KeyProblems, ScopeProblem))]
pub async fn cancel_job(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job_id)?;
    auth.require("jobs:cancel")?;
    load_visible(&state, &auth, id).await?;
    let mut waiter = state.intake.register_waiter(id);
    match state.intake.cancel(id, &auth.principal).await? {
        CancelOutcome::NotFound => Err(ApiError::JobNotFound { job_id }),
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::JobFinished { job_id, status }),
        CancelOutcome::Cancelled => {
            Ok(Json(JobView::from(load_visible(&state, &auth, id).await?)).into_response())
        }
        CancelOutcome::Requested { .. } => {
            let code = match state.intake.wait(&mut waiter, CANCEL_WAIT).await {
                WaitOutcome::Finished(_) => StatusCode::OK,
                WaitOutcome::Pending => StatusCode::ACCEPTED,
            };
            let job = load_visible(&state, &auth, id).await?;
            Ok((code, Json(JobView::from(job))).into_response())
        }
    }
}

#[utoipa::path(post, path = "/jobs/{job_id}/retry", operation_id = "retryJob", tag = "jobs",
    summary = "Run a failed, timed-out or cancelled job again (scope jobs:retry)",
    description = "The same job goes back to `queued` (audited as `retried`) with its outcome \
        cleared and one more attempt if its budget was spent; its callback, if any, is sent \
        again when it finishes. The key must also be allowed the job's intent.",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "Queued again", body = JobView),
              (status = 409, description = "Not failed, timed out or cancelled (`job_not_retryable`, with `job_status`), or its inputs were removed by retention (`payload_purged`)", body = super::problem::Problem, content_type = "application/problem+json"),
              JobLookup, KeyProblems, ScopeProblem))]
pub async fn retry_job(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    auth.require("jobs:retry")?;
    let job = load_visible(&state, &auth, id).await?;
    // Running it again is running the intent: the key must be allowed to.
    auth.require_intent(&job.intent)?;
    match state.intake.retry(id, &auth.principal).await? {
        RetryOutcome::NotFound => return Err(ApiError::JobNotFound { job_id }),
        RetryOutcome::NotRetryable(status) => {
            return Err(ApiError::JobNotRetryable { job_id, status });
        }
        RetryOutcome::PayloadPurged => return Err(ApiError::PayloadPurged { job_id }),
        RetryOutcome::Retried => {}
    }
    Ok(Json(JobView::from(load_visible(&state, &auth, id).await?)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `created`, `claimed`, `retry_scheduled`, `succeeded`, `failed`, `timed_out`,
    /// `cancel_requested`, `cancelled`, `rescued`, `released`, …
    pub kind: String,
    pub from_status: Option<JobStatus>,
    pub to_status: Option<JobStatus>,
    pub attempt: i32,
    /// The server instance that made the change.
    pub instance_id: Option<Uuid>,
    /// Who: `api_key`, `anonymous`, `instance`, `maintenance`, `flow`, `operator`.
    pub actor_kind: Option<String>,
    /// The API key's name for client actions.
    pub actor_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

impl From<JobEvent> for EventView {
    fn from(e: JobEvent) -> Self {
        EventView {
            id: e.id,
            at: e.at,
            kind: e.kind,
            from_status: e.from_status,
            to_status: e.to_status,
            attempt: e.attempt,
            instance_id: e.instance_id,
            actor_kind: e.actor_kind,
            actor_name: e.actor_name,
            detail: e.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub job_id: JobId,
    pub events: Vec<EventView>,
}

#[utoipa::path(get, path = "/jobs/{job_id}/events", operation_id = "getJobEvents", tag = "jobs",
    summary = "A job's history: every state change, oldest first",
    description = "As JSON; with `Accept: text/event-stream`, as Server-Sent Events that go on \
        live until the job is final (see `GET /jobs/{job_id}/stream`).",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "The job's history",
        content((EventList = "application/json"), (String = "text/event-stream"))),
        JobLookup, KeyProblems))]
pub async fn job_events(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job_id)?;
    if super::streams::wants_event_stream(&headers) {
        return super::streams::job_events_stream(&state, &auth, &headers, id).await;
    }
    load_visible(&state, &auth, id).await?;
    let events = state.store.job_events(id).await?;
    Ok(Json(EventList {
        job_id: id,
        events: events.into_iter().map(EventView::from).collect(),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = ListCursor { id: Uuid::now_v7() };
        assert_eq!(decode_cursor(&encode_cursor(c)), Some(c));
        let issued_before = URL_SAFE_NO_PAD.encode(format!("1700000000123456:{}", c.id.simple()));
        assert_eq!(decode_cursor(&issued_before), Some(c));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("12:nope")), None);
        let no_time = URL_SAFE_NO_PAD.encode(format!("soon:{}", c.id.simple()));
        assert_eq!(decode_cursor(&no_time), None);
    }

    #[test]
    fn status_filters_are_checked() {
        let p = ListParams {
            intent: None,
            status: Some("queued, failed".into()),
            mode: None,
            api_key_id: None,
            schedule_id: None,
            since: None,
            until: None,
            limit: None,
            cursor: None,
        };
        assert_eq!(
            filter_from(&p).unwrap().statuses,
            Some(vec![JobStatus::Queued, JobStatus::Failed])
        );
        let repeated = ListParams {
            status: Some("failed,queued,failed,failed".into()),
            ..p.clone()
        };
        assert_eq!(
            filter_from(&repeated).unwrap().statuses,
            Some(vec![JobStatus::Failed, JobStatus::Queued])
        );
        let bad = ListParams {
            status: Some("done".into()),
            ..p
        };
        assert!(matches!(
            filter_from(&bad),
            Err(ApiError::InvalidRequest { .. })
        ));
    }
}
