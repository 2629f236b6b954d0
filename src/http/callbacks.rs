//! Callbacks: the inbound ingest endpoint for flows, and each job's outbound delivery record.

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    auth::Permissions,
    jobs::{load_visible, parse_job_id},
    problem::ApiError,
    responses::{JobLookup, KeyProblems, ScopeProblem},
};
use crate::{
    auth::Authenticated,
    callbacks::ingest::{Credentials, IngestOutcome, IngestRequest},
    callbacks::{SecretSource, WebhookHeaders},
    ids::JobId,
    model::{Direction, JobStatus, Outcome},
    store::{CallbackAudit, DeliveryRecord, DeliveryStatus},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/callbacks/ingest", post(ingest))
        .route("/jobs/{job_id}/callbacks", get(job_callbacks))
        .route("/jobs/{job_id}/callbacks/retry", post(retry_delivery))
        .route("/callbacks/secret", get(signing_secret))
}

/// The secrets outbound callbacks and flow requests are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretView {
    /// The primary secret (`whsec_…`): receivers verify `webhook-signature` with it.
    pub secret: String,
    /// Every secret that signs, the primary first (several during a rotation).
    pub secrets: Vec<String>,
    pub source: SecretSource,
    /// When the generated secret was made (absent for configured secrets).
    pub generated_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/callbacks/secret", operation_id = "getSigningSecret", tag = "callbacks",
    summary = "The secret that signs callbacks and flow requests (a key with keys:admin, even while the API is open; audited)",
    responses((status = 200, description = "The signing secrets", body = SigningSecretView),
              KeyProblems, ScopeProblem))]
pub async fn signing_secret(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    // Never to anonymous callers, not even while the API is open (no key created yet): with
    // it anyone could sign callbacks that receivers would trust.
    if !auth.key_holds_any(&["keys:admin"]) {
        return Err(ApiError::Forbidden {
            missing_scope: "keys:admin".to_owned(),
        });
    }
    let signing = &state.signing;
    let source = signing.source();
    state
        .store
        .audit_secret_read(
            &auth.principal,
            match source {
                SecretSource::Configured => "configured",
                SecretSource::Generated => "generated",
            },
        )
        .await?;
    let secrets: Vec<String> = signing
        .secrets()
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
    let view = SigningSecretView {
        secret: secrets[0].clone(),
        secrets,
        source,
        generated_at: signing.generated_at(),
    };
    // A secret must not linger in caches on the way.
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(view),
    )
        .into_response())
}

/// What a flow reports (`POST /callbacks/ingest`). Documentation only: the body is verified
/// over its raw bytes, then parsed by the ingest service.
#[allow(dead_code)]
#[derive(serde::Deserialize, ToSchema)]
pub struct IngestReport {
    /// The job the flow ran (from the flow request's `job_id`).
    pub job_id: JobId,
    pub status: IngestStatus,
    /// The outcome when `status` is `success` (any JSON).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// What went wrong when `status` is `error`: a message, or `{code, message}`.
    pub error: Option<IngestErrorReport>,
}

#[allow(dead_code)]
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    Success,
    Error,
}

#[allow(dead_code)]
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IngestErrorReport {
    Message(String),
    Detail {
        code: Option<String>,
        message: Option<String>,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAnswer {
    /// `accepted`, or `duplicate` when nothing changed (a repeated callback).
    pub status: &'static str,
    pub job_id: JobId,
    pub job_status: Option<JobStatus>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[utoipa::path(post, path = "/callbacks/ingest", operation_id = "ingestCallback", tag = "callbacks",
    summary = "A flow reports a job's outcome",
    description = "Body `{job_id, status: success|error, result?, error?}`. Authenticate with \
        Standard Webhooks headers signed with the ingest secret, or `Authorization: Bearer` \
        with the token the flow request carried. Repeating a callback is harmless.",
    request_body(content = IngestReport, content_type = "application/json"),
    security(()),
    responses((status = 200, description = "Applied, or a repeat of what was applied", body = IngestAnswer),
              (status = 400, description = "Malformed body or field, named in `errors` (`invalid_request`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 401, description = "Neither a valid signature nor the job's token (`unauthorized`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such job (`job_not_found`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 409, description = "The job already finished with another outcome (`job_finished`, with `job_status`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 413, description = "The body exceeds server.max_body_bytes (`body_too_large`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 503, description = "The database is unavailable (`unavailable`)", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAnswer>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: state.config.server.max_body_bytes,
            }
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })?;
    let signed = match (
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
    ) {
        (Some(id), Some(timestamp), Some(signature)) => Some(WebhookHeaders {
            id,
            timestamp,
            signature,
        }),
        _ => None,
    };
    let bearer = header(&headers, AUTHORIZATION.as_str())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let credentials = match (signed, bearer) {
        (Some(h), _) => Credentials::Signed(h),
        (None, Some(token)) => Credentials::Bearer(token),
        (None, None) => Credentials::None,
    };
    let outcome = state
        .ingest
        .ingest(IngestRequest {
            credentials,
            body: &body,
            remote_addr: Some(remote.ip().to_string()),
        })
        .await?;
    Ok(Json(match outcome {
        IngestOutcome::Accepted { job_id, status } => IngestAnswer {
            status: "accepted",
            job_id,
            job_status: Some(status),
        },
        IngestOutcome::Duplicate { job_id } => IngestAnswer {
            status: "duplicate",
            job_id,
            job_status: None,
        },
        IngestOutcome::AlreadyApplied { job_id, status } => IngestAnswer {
            status: "duplicate",
            job_id,
            job_status: Some(status),
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub url: String,
    /// The `webhook-id` of every attempt.
    pub webhook_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            url: d.url,
            webhook_id: d.webhook_id,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            finished_at: d.finished_at,
        }
    }
}

/// One audited attempt, outbound (`out`) or inbound (`in`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackAttemptView {
    pub id: i64,
    pub direction: Direction,
    pub url: Option<String>,
    pub attempt: Option<i32>,
    pub webhook_id: Option<String>,
    /// Out: the receiver's answer. In: what we answered.
    pub status_code: Option<i32>,
    pub outcome: Option<Outcome>,
    pub response_excerpt: Option<String>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub auth_method: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<CallbackAudit> for CallbackAttemptView {
    fn from(a: CallbackAudit) -> Self {
        CallbackAttemptView {
            id: a.id,
            direction: a.direction,
            url: a.url,
            attempt: a.attempt,
            webhook_id: a.webhook_id,
            status_code: a.status_code,
            outcome: a.outcome,
            response_excerpt: a.response_excerpt,
            duration_ms: a.duration_ms,
            error: a.error,
            next_attempt_at: a.next_attempt_at,
            auth_method: a.auth_method,
            at: a.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobCallbacks {
    pub job_id: JobId,
    /// The outbound delivery, once the job finished with a `callback_url`.
    pub delivery: Option<DeliveryView>,
    pub attempts: Vec<CallbackAttemptView>,
}

#[utoipa::path(get, path = "/jobs/{job_id}/callbacks", operation_id = "getJobCallbacks", tag = "callbacks",
    summary = "A job's callback delivery and every audited attempt (in and out)",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "The delivery and its attempts", body = JobCallbacks),
              JobLookup, KeyProblems))]
pub async fn job_callbacks(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Json<JobCallbacks>, ApiError> {
    let id = parse_job_id(&job_id)?;
    load_visible(&state, &auth, id).await?;
    let delivery = state.store.delivery_of(id).await?.map(DeliveryView::from);
    let attempts = state
        .store
        .callback_audits(id)
        .await?
        .into_iter()
        .map(CallbackAttemptView::from)
        .collect();
    Ok(Json(JobCallbacks {
        job_id: id,
        delivery,
        attempts,
    }))
}

#[utoipa::path(post, path = "/jobs/{job_id}/callbacks/retry", operation_id = "retryJobCallback", tag = "callbacks",
    summary = "Send an exhausted callback delivery once more",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 202, description = "Queued to be sent again", body = DeliveryView),
              (status = 409, description = "The delivery is not exhausted (`delivery_not_exhausted`)", body = super::problem::Problem, content_type = "application/problem+json"),
              JobLookup, KeyProblems, ScopeProblem))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job_id)?;
    auth.require("callbacks:retry")?;
    load_visible(&state, &auth, id).await?;
    match state.store.retry_delivery(id).await? {
        None => Err(ApiError::NoDelivery { job_id }),
        Some(DeliveryStatus::Exhausted) => {
            let view = state
                .store
                .delivery_of(id)
                .await?
                .map(DeliveryView::from)
                .ok_or(ApiError::NoDelivery { job_id })?;
            Ok((StatusCode::ACCEPTED, Json(view)).into_response())
        }
        Some(status) => Err(ApiError::DeliveryNotExhausted { job_id, status }),
    }
}
