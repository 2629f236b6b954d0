//! The HTTP layer's one error type, rendered as RFC 9457 `application/problem+json` with a
//! stable `code` (a typed `Problem` with its extra members), and every mapping from the
//! layers below into it. Internal details are logged, never shown.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::admin::KeyAdminError,
    callbacks::ingest::IngestError,
    catalog::ResolveError,
    intake::SubmitError,
    model::{FieldError, JobStatus, Mode},
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    InvalidRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("unknown intent `{intent}`")]
    UnknownIntent {
        intent: String,
        suggestions: Vec<String>,
    },
    #[error("intent `{intent}` is not served in mode `{}`", requested.as_str())]
    ModeNotSupported {
        intent: String,
        requested: Mode,
        served_by: Vec<Mode>,
    },
    #[error("intent `{intent}` is served by several engines; choose one with `mode`")]
    AmbiguousIntent {
        intent: String,
        served_by: Vec<Mode>,
    },
    #[error("the inputs do not match the schema of `{intent}`")]
    InvalidInputs {
        intent: String,
        errors: Vec<FieldError>,
    },
    #[error("{detail}")]
    InvalidField {
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("this idempotency key is being claimed by another request; retry")]
    IdempotencyKeyBusy,
    #[error("job {job_id} does not exist")]
    JobNotFound { job_id: String },
    #[error("job {job_id} already finished ({})", status.as_str())]
    JobFinished { job_id: String, status: JobStatus },
    #[error("job {job_id} is {} (only failed, timed-out and cancelled jobs are retried)", status.as_str())]
    JobNotRetryable { job_id: String, status: JobStatus },
    #[error("job {job_id} cannot run again: retention removed its inputs")]
    PayloadPurged { job_id: String },
    #[error("schedule {schedule_id} does not exist")]
    ScheduleNotFound { schedule_id: String },
    #[error("a schedule named `{name}` exists already")]
    ScheduleNameTaken { name: String },
    #[error("schedule `{name}` is in the configuration ([[schedules]]): change or remove it there")]
    ScheduleInConfig { name: String },
    #[error(
        "schedule `{name}` filed no job: it is being fired this moment, or its intent or inputs no longer file one (see its schedule.skipped events)"
    )]
    ScheduleBusy { name: String },
    #[error("{detail}")]
    Unauthorized { detail: String },
    /// No valid API key.
    #[error("{detail}")]
    Unauthenticated { detail: String },
    #[error("this API key lacks the scope `{missing_scope}`")]
    Forbidden { missing_scope: String },
    #[error("job {job_id} has no callback delivery (it has no callback_url, or has not finished)")]
    NoDelivery { job_id: String },
    #[error("the callback delivery of job {job_id} is {status:?}, not exhausted")]
    DeliveryNotExhausted {
        job_id: String,
        status: crate::store::DeliveryStatus,
    },
    #[error("no active API key `{key}`")]
    KeyNotFound { key: String },
    #[error("an active API key named `{name}` exists already")]
    KeyNameTaken { name: String },
    #[error("no route for {path}")]
    RouteNotFound { path: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{} `{name}` is over its rate limit of {}; retry in {} s", kind_label(*limit), rate.describe(), crate::limits::retry_after_secs(*retry_after))]
    RateLimited {
        limit: crate::limits::LimitKind,
        /// The key's name or the intent pattern.
        name: String,
        rate: crate::limits::Rate,
        /// Until the limit's bucket has a token.
        retry_after: std::time::Duration,
    },
    #[error("the database is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::InvalidRequest {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UnknownIntent { .. }
            | JobNotFound { .. }
            | RouteNotFound { .. }
            | ScheduleNotFound { .. }
            | NoDelivery { .. } => StatusCode::NOT_FOUND,
            Unauthorized { .. } | Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            KeyNotFound { .. } => StatusCode::NOT_FOUND,
            KeyNameTaken { .. } => StatusCode::CONFLICT,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            DeliveryNotExhausted { .. } => StatusCode::CONFLICT,
            ModeNotSupported { .. }
            | InvalidInputs { .. }
            | InvalidField { .. }
            | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            AmbiguousIntent { .. }
            | IdempotencyKeyBusy
            | JobFinished { .. }
            | JobNotRetryable { .. }
            | PayloadPurged { .. }
            | ScheduleNameTaken { .. }
            | ScheduleInConfig { .. }
            | ScheduleBusy { .. } => StatusCode::CONFLICT,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRequest { .. } => "invalid_request",
            BodyTooLarge { .. } => "body_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            UnknownIntent { .. } => "unknown_intent",
            ModeNotSupported { .. } => "mode_not_supported",
            AmbiguousIntent { .. } => "ambiguous_intent",
            InvalidInputs { .. } => "invalid_inputs",
            InvalidField { code, .. } => code,
            IdempotencyKeyReused => "idempotency_key_reused",
            IdempotencyKeyBusy => "idempotency_key_busy",
            JobNotFound { .. } => "job_not_found",
            JobFinished { .. } => "job_finished",
            JobNotRetryable { .. } => "job_not_retryable",
            PayloadPurged { .. } => "payload_purged",
            ScheduleNotFound { .. } => "schedule_not_found",
            ScheduleNameTaken { .. } => "schedule_name_taken",
            ScheduleInConfig { .. } => "schedule_in_config",
            ScheduleBusy { .. } => "schedule_busy",
            RouteNotFound { .. } => "not_found",
            Unauthorized { .. } | Unauthenticated { .. } => "unauthorized",
            Forbidden { .. } => "forbidden",
            KeyNotFound { .. } => "key_not_found",
            KeyNameTaken { .. } => "key_name_taken",
            NoDelivery { .. } => "no_delivery",
            DeliveryNotExhausted { .. } => "delivery_not_exhausted",
            MethodNotAllowed => "method_not_allowed",
            RateLimited { .. } => "rate_limited",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }

    /// The typed body: the standard members and the extra ones this problem has.
    pub fn problem(&self) -> Problem {
        use ApiError::*;
        let status = self.status();
        let mut p = Problem {
            type_: format!("urn:orchestrator:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_owned(),
            ..Problem::default()
        };
        match self {
            InvalidRequest { errors, .. }
            | InvalidInputs { errors, .. }
            | InvalidField { errors, .. } => p.errors = Some(errors.clone()),
            BodyTooLarge { limit } => p.limit_bytes = Some(*limit),
            UnknownIntent {
                intent,
                suggestions,
            } => {
                p.intent = Some(intent.clone());
                p.suggestions = Some(suggestions.clone());
            }
            ModeNotSupported {
                intent, served_by, ..
            }
            | AmbiguousIntent { intent, served_by } => {
                p.intent = Some(intent.clone());
                p.served_by = Some(served_by.clone());
            }
            JobNotFound { job_id } | NoDelivery { job_id } | PayloadPurged { job_id } => {
                p.job_id = Some(job_id.clone())
            }
            Forbidden { missing_scope } => p.missing_scope = Some(missing_scope.clone()),
            DeliveryNotExhausted { job_id, status } => {
                p.job_id = Some(job_id.clone());
                p.delivery_status = Some(*status);
            }
            JobFinished { job_id, status } | JobNotRetryable { job_id, status } => {
                p.job_id = Some(job_id.clone());
                p.job_status = Some(*status);
            }
            RateLimited {
                limit,
                name,
                retry_after,
                ..
            } => {
                p.limit = Some(limit.as_str().to_owned());
                p.limit_name = Some(name.clone());
                p.retry_after = Some(crate::limits::retry_after_secs(*retry_after));
            }
            _ => {}
        }
        p
    }

    /// Inputs the intent refused: `invalid_inputs`, or the code a tool's check gave the first
    /// error that has one (e.g. `unknown_host`).
    pub fn from_input_errors(intent: String, errors: Vec<FieldError>) -> Self {
        match errors.iter().find_map(|e| e.code) {
            Some(code) => ApiError::InvalidField {
                code,
                detail: errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                errors,
            },
            None => ApiError::InvalidInputs { intent, errors },
        }
    }

    pub fn from_resolve(intent: &str, e: ResolveError) -> Self {
        match e {
            ResolveError::Unknown { suggestions } => ApiError::UnknownIntent {
                intent: intent.to_owned(),
                suggestions,
            },
            ResolveError::ModeNotServed {
                requested,
                served_by,
            } => ApiError::ModeNotSupported {
                intent: intent.to_owned(),
                requested,
                served_by,
            },
            ResolveError::Ambiguous { served_by } => ApiError::AmbiguousIntent {
                intent: intent.to_owned(),
                served_by,
            },
        }
    }
}

/// Every error body (RFC 9457 `application/problem+json`): the standard members, a stable
/// `code`, and the extra members that problem has.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:orchestrator:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable.
    pub code: String,
    /// Field-level problems: one entry per bad field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// `unknown_intent`: close matches the caller may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<String>>,
    /// The intent a routing problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// `ambiguous_intent`, `mode_not_supported`: the engines that serve the intent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<Vec<Mode>>,
    /// `forbidden`: the scope the key lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scope: Option<String>,
    /// The job a problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `job_finished`: the job's final state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
    /// `delivery_not_exhausted`: the delivery's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_status: Option<crate::store::DeliveryStatus>,
    /// `body_too_large`: the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
    /// `rate_limited`: which limit refused the request, `api_key` or `intent`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// …whose (the key's name, or the intent pattern of `[rate_limits.intents]`)…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_name: Option<String>,
    /// …and the seconds until it admits a request (as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

fn kind_label(kind: crate::limits::LimitKind) -> &'static str {
    match kind {
        crate::limits::LimitKind::ApiKey => "API key",
        crate::limits::LimitKind::Intent => "intent",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), "request failed: {self}");
        }
        let body = serde_json::to_string(&self.problem()).expect("a problem serializes");
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unavailable) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if let ApiError::RateLimited { retry_after, .. } = &self {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::retry_after_secs(*retry_after)),
            );
        }
        if matches!(self, ApiError::Unauthenticated { .. }) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"orchestrator\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::Internal
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::KeyReused => ApiError::IdempotencyKeyReused,
            SubmitError::KeyBusy => ApiError::IdempotencyKeyBusy,
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Unauthorized(reason) => ApiError::Unauthorized { detail: reason },
            IngestError::Malformed { field, message } => ApiError::invalid(field, message),
            IngestError::UnknownJob(id) => ApiError::JobNotFound {
                job_id: id.to_string(),
            },
            IngestError::Conflict { job_id, status } => ApiError::JobFinished {
                job_id: job_id.to_string(),
                status,
            },
            IngestError::Store(s) => s.into(),
        }
    }
}

impl From<KeyAdminError> for ApiError {
    fn from(e: KeyAdminError) -> Self {
        match e {
            KeyAdminError::BadName => ApiError::invalid("name", "must be 1 to 100 characters"),
            KeyAdminError::BadScopes(e) => ApiError::invalid("scopes", e.to_string()),
            KeyAdminError::NameTaken(name) => ApiError::KeyNameTaken { name },
            KeyAdminError::Store(s) => s.into(),
        }
    }
}
