//! `POST /orchestrate`: validate, file the job, wait for it within the sync budget, answer 200
//! with the outcome or 202 with where to find it.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    AppState,
    auth::Permissions,
    body::parse_json_body,
    problem::ApiError,
    responses::{BodyProblems, KeyProblems},
};
use crate::{
    auth::Authenticated,
    catalog::ResolveError,
    ids::JobId,
    intake::{Submission, Submitted, WaitOutcome},
    model::{FieldError, FinishedJob, JobError, JobStatus, Mode},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/orchestrate", post(orchestrate))
}

/// Run an intent.
#[derive(Debug, Clone, ToSchema)]
#[cfg_attr(test, derive(PartialEq))]
pub struct OrchestrateRequest {
    /// What to do, e.g. `memory.write` or `memory.search`; `GET /tools` lists
    /// every intent with its inputs.
    #[schema(min_length = 1, max_length = 200)]
    pub intent: String,
    /// The intent's inputs, validated against its JSON Schema (see `GET /tools`).
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Which engine runs it; `auto` lets the server choose.
    pub mode: Option<Mode>,
    /// Receives the signed result when the job ends (http or https, a public address).
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    pub callback_url: Option<String>,
    /// Same as the `Idempotency-Key` header: 1 to 255 printable ASCII characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    pub idempotency_key: Option<String>,
    /// `true`: answer 202 at once (also `Prefer: respond-async`).
    #[schema(rename = "async")]
    pub async_: Option<bool>,
    /// How long to wait for the result before answering 202 (default 8000, capped by config;
    /// also `Prefer: wait=N` in seconds).
    #[schema(minimum = 0)]
    pub timeout_ms: Option<u64>,
    /// Lowers the intent's default number of attempts.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
}

const FIELDS: [&str; 8] = [
    "intent",
    "inputs",
    "mode",
    "callback_url",
    "idempotency_key",
    "async",
    "timeout_ms",
    "max_attempts",
];

impl OrchestrateRequest {
    /// Reads a parsed body, collecting one error per bad field.
    pub fn from_json(body: Value) -> Result<Self, ApiError> {
        let Value::Object(mut obj) = body else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    key.clone(),
                    format!(
                        "is not a known field (expected one of: {})",
                        FIELDS.join(", ")
                    ),
                ));
            }
        }
        let intent = match obj.remove("intent") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => Some(s),
            Some(Value::String(_)) => {
                errors.push(FieldError::new("intent", "must be 1 to 200 characters"));
                None
            }
            None | Some(Value::Null) => {
                errors.push(FieldError::new("intent", "is required"));
                None
            }
            Some(_) => {
                errors.push(FieldError::new("intent", "must be a string"));
                None
            }
        };
        let inputs = match obj.remove("inputs") {
            Some(v @ Value::Object(_)) => Some(v),
            None | Some(Value::Null) => {
                errors.push(FieldError::new("inputs", "is required (an object)"));
                None
            }
            Some(_) => {
                errors.push(FieldError::new("inputs", "must be an object"));
                None
            }
        };
        let mode = match obj.remove("mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match Mode::parse(&s) {
                Some(m) => Some(m),
                None => {
                    errors.push(FieldError::new(
                        "mode",
                        "must be one of auto, flow, mcp, agent",
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new(
                    "mode",
                    "must be one of auto, flow, mcp, agent",
                ));
                None
            }
        };
        let callback_url = optional_string(&mut obj, "callback_url", 2048, &mut errors);
        let idempotency_key = optional_string(&mut obj, "idempotency_key", 255, &mut errors);
        let async_ = match obj.remove("async") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                errors.push(FieldError::new("async", "must be true or false"));
                None
            }
        };
        let timeout_ms = match obj.remove("timeout_ms") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(_) => {
                errors.push(FieldError::new(
                    "timeout_ms",
                    "must be a non-negative integer (milliseconds)",
                ));
                None
            }
        };
        let max_attempts = match obj.remove("max_attempts") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=100).contains(&n)) => {
                n.as_i64().map(|n| n as i32)
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "max_attempts",
                    "must be an integer from 1 to 100",
                ));
                None
            }
        };
        match (intent, inputs) {
            (Some(intent), Some(inputs)) if errors.is_empty() => Ok(Self {
                intent,
                inputs,
                mode,
                callback_url,
                idempotency_key,
                async_,
                timeout_ms,
                max_attempts,
            }),
            _ => Err(ApiError::InvalidRequest {
                detail: format!(
                    "invalid request: {}",
                    errors
                        .iter()
                        .map(|e| format!("{} {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                errors,
            }),
        }
    }
}

fn optional_string(
    obj: &mut Map<String, Value>,
    field: &str,
    max_len: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.remove(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len => Some(s),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                field,
                format!("must be 1 to {max_len} characters"),
            ));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `Prefer: respond-async` and `Prefer: wait=N` (RFC 7240).
#[derive(Debug, Default, PartialEq, Eq)]
struct Preferences {
    respond_async: bool,
    wait_secs: Option<u64>,
}

fn preferences(headers: &HeaderMap) -> Preferences {
    let mut p = Preferences::default();
    for value in headers.get_all("prefer") {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            let (name, arg) = token
                .split_once('=')
                .map_or((token, None), |(n, v)| (n.trim(), Some(v.trim())));
            match name.to_ascii_lowercase().as_str() {
                "respond-async" => p.respond_async = true,
                "wait" => p.wait_secs = arg.and_then(|v| v.trim_matches('"').parse().ok()),
                _ => {}
            }
        }
    }
    p
}

/// How long a request waits: what it asks (`timeout_ms`, else `Prefer: wait`, else the
/// default), within the configured cap and the caller's limit.
fn wait_for(
    timeout_ms: Option<u64>,
    prefer: &Preferences,
    config: &crate::config::ServerConfig,
    limits: AnswerLimits,
) -> Duration {
    timeout_ms
        .map(Duration::from_millis)
        .or(prefer.wait_secs.map(Duration::from_secs))
        .unwrap_or(config.sync_timeout)
        .min(config.max_sync_timeout)
        .min(limits.max_wait.unwrap_or(Duration::MAX))
}

/// The answer when the job finished within the wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrchestrateResult {
    /// `success`, `error`, or `dry_run` (a dangerous command was not run).
    #[schema(example = "success")]
    pub status: &'static str,
    pub job_id: JobId,
    pub intent: String,
    pub mode: Mode,
    /// The job's final state.
    pub job_status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub idempotent_replay: bool,
}

/// The answer when the job goes on in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "accepted")]
    pub status: &'static str,
    pub job_id: JobId,
    pub message: &'static str,
    pub intent: String,
    pub mode: Mode,
    pub callback_url: Option<String>,
    /// Poll this for the outcome.
    pub status_url: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub idempotent_replay: bool,
}

/// How answers are shaped for a kind of caller: REST clients get everything; a ChatGPT Action
/// gets a wait it can afford and an answer it can read.
#[derive(Debug, Clone, Copy)]
pub struct AnswerLimits {
    /// The most a request may wait, whatever it asks (also capped by configuration).
    pub max_wait: Option<Duration>,
    /// The most characters an answer may have; a larger result becomes a marker.
    pub max_chars: Option<usize>,
}

impl AnswerLimits {
    pub const API: Self = Self {
        max_wait: None,
        max_chars: None,
    };
}

fn finished_response(
    job: &FinishedJob,
    replay: bool,
    limits: AnswerLimits,
    public_url: &str,
) -> Response {
    let mut body = OrchestrateResult {
        status: job.client_status(),
        job_id: job.id,
        intent: job.intent.clone(),
        mode: job.mode,
        job_status: job.status,
        result: job.result.clone(),
        error: job.error.clone(),
        duration_ms: job.duration_ms,
        idempotent_replay: replay,
    };
    if let Some(max) = limits.max_chars {
        let result = body.result.take();
        let rest = super::bounded::json_chars(&body);
        body.result = result;
        let full_at = format!("{}/jobs/{}", public_url.trim_end_matches('/'), job.id);
        super::bounded::bound(&mut body.result, rest, max, &full_at);
    }
    with_replay_header((StatusCode::OK, Json(body)).into_response(), replay)
}

fn accepted_response(body: Accepted) -> Response {
    let location = format!("/jobs/{}", body.job_id);
    let replay = body.idempotent_replay;
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    with_replay_header(resp, replay)
}

fn with_replay_header(mut resp: Response, replay: bool) -> Response {
    if replay {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

#[utoipa::path(
    post,
    path = "/orchestrate",
    operation_id = "orchestrate",
    tag = "orchestrate",
    summary = "Run an intent (memory, SSH, workflows, MCP tools)",
    description = "Runs `intent` with `inputs` on the engine chosen by `mode`. Answers 200 with \
        the outcome when the job ends within the wait (default 8 s), otherwise 202 with a \
        `job_id` to poll at `GET /jobs/{job_id}`. Requests are idempotent: send an \
        `Idempotency-Key` header or `idempotency_key` field to retry safely.",
    request_body = OrchestrateRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = "^[ -~]+$", description = "Replays the stored answer for a repeated request (1 to 255 printable ASCII characters)."),
        ("Prefer" = Option<String>, Header, description = "`respond-async` or `wait=N` (seconds)."),
    ),
    responses(
        (status = 200, description = "Finished within the wait", body = OrchestrateResult),
        (status = 202, description = "Accepted; still running", body = Accepted,
         headers(("Location" = String, description = "The job's status URL"))),
        (status = 403, description = "The key may not run this intent (`forbidden`, with `missing_scope`)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown intent (`unknown_intent`, with `suggestions`)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Ambiguous intent (`ambiguous_intent`, with `served_by`), or the idempotency key is being claimed (`idempotency_key_busy`)", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid inputs, mode, callback URL, or a reused idempotency key (`invalid_inputs`, `mode_not_supported`, `invalid_callback_url`, `idempotency_key_reused`, or a tool's own code)", body = super::problem::Problem, content_type = "application/problem+json"),
        BodyProblems, KeyProblems,
    )
)]
pub async fn orchestrate(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run(&state, auth, &headers, body, AnswerLimits::API).await
}

/// Validates, files the job, waits within the budget and answers, under `limits`.
pub async fn run(
    state: &AppState,
    auth: Authenticated,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limits: AnswerLimits,
) -> Result<Response, ApiError> {
    let config = &state.config.server;
    let req = parse_json_body(headers, body, config.max_body_bytes)
        .and_then(OrchestrateRequest::from_json)?;

    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| valid_key(k))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        "must be 1 to 255 printable ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    if let Some(k) = &req.idempotency_key
        && !valid_key(k)
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    let idempotency_key = match (header_key, req.idempotency_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::invalid(
                "idempotency_key",
                "differs from the Idempotency-Key header; send one or make them equal",
            ));
        }
        (h, b) => h.or(b),
    };

    let requested_mode = req.mode.unwrap_or(Mode::Auto);
    let intent = state
        .registry
        .resolve(&req.intent, requested_mode)
        .await
        .map_err(|e| match e {
            // Only suggest what this key may run.
            ResolveError::Unknown { suggestions } => ApiError::UnknownIntent {
                intent: req.intent.clone(),
                suggestions: suggestions
                    .into_iter()
                    .filter(|s| auth.require_intent(s).is_ok())
                    .collect(),
            },
            e => ApiError::from_resolve(&req.intent, e),
        })?;
    auth.require_intent(intent.name())?;
    if let Err(errors) = intent.validate(&req.inputs) {
        if let Some((kind, detail)) = intent.tool.refusal_audit(&req.inputs, &errors) {
            state
                .store
                .audit_intake_refusal(kind, intent.name(), &auth.principal, &detail)
                .await?;
        }
        return Err(ApiError::from_input_errors(req.intent, errors));
    }
    if let Some(url) = &req.callback_url {
        state
            .callback_policy
            .check_literal(url)
            .map_err(|reason| ApiError::InvalidField {
                code: "invalid_callback_url",
                detail: format!("callback_url: {reason}"),
                errors: vec![FieldError::new("callback_url", reason)],
            })?;
    }

    let prefer = preferences(headers);
    let respond_async = req.async_.unwrap_or(prefer.respond_async);
    let wait = wait_for(req.timeout_ms, &prefer, config, limits);
    let wants_wait = !respond_async && !wait.is_zero();

    let mode = intent.mode;
    let intent_name = intent.name().to_owned();
    let callback_url = req.callback_url.clone();
    let submitted = state
        .intake
        .submit(Submission {
            intent,
            requested_mode,
            inputs: req.inputs,
            callback_url: req.callback_url,
            idempotency_key,
            max_attempts: req.max_attempts,
            principal: auth.principal,
            wait: wants_wait,
        })
        .await?;
    let (job_id, waiter, replay) = match submitted {
        Submitted::Created { job_id, waiter } => (job_id, waiter, false),
        Submitted::Replay { job_id, waiter } => {
            if let Some(done) = state.intake.finished(job_id).await? {
                return Ok(finished_response(&done, true, limits, &config.public_url));
            }
            (job_id, waiter, true)
        }
    };
    if let Some(mut waiter) = waiter
        && let WaitOutcome::Finished(done) = state.intake.wait(&mut waiter, wait).await
    {
        return Ok(finished_response(&done, replay, limits, &config.public_url));
    }
    Ok(accepted_response(Accepted {
        status: "accepted",
        job_id,
        message: "Job accepted for async processing",
        intent: intent_name,
        mode,
        callback_url,
        status_url: format!(
            "{}/jobs/{job_id}",
            state.config.server.public_url.trim_end_matches('/')
        ),
        idempotent_replay: replay,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(v: Value) -> Vec<String> {
        match OrchestrateRequest::from_json(v) {
            Err(ApiError::InvalidRequest { errors, .. }) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_seed_examples() {
        let r = OrchestrateRequest::from_json(json!({
            "intent": "memory.write",
            "inputs": {"text": "The Eiffel Tower is in Paris", "tags": ["geography"]},
            "mode": "agent"
        }))
        .unwrap();
        assert_eq!(r.mode, Some(Mode::Agent));
        assert_eq!(r.intent, "memory.write");
    }

    #[test]
    fn names_every_bad_field() {
        assert_eq!(
            errors_of(json!({"inputs": [], "mode": "fast", "async": "yes", "extra": 1})),
            vec!["extra", "intent", "inputs", "mode", "async"]
        );
        assert_eq!(errors_of(json!({"intent": "x"})), vec!["inputs"]);
        assert_eq!(errors_of(json!([1, 2])), vec!["body"]);
        assert_eq!(
            errors_of(json!({"intent": "x", "inputs": {}, "timeout_ms": -1, "max_attempts": 0})),
            vec!["timeout_ms", "max_attempts"]
        );
    }

    #[test]
    fn reads_prefer_headers() {
        let mut h = HeaderMap::new();
        h.append("prefer", HeaderValue::from_static("respond-async, wait=5"));
        assert_eq!(
            preferences(&h),
            Preferences {
                respond_async: true,
                wait_secs: Some(5)
            }
        );
        let mut h = HeaderMap::new();
        h.append("prefer", HeaderValue::from_static("handling=lenient"));
        h.append("prefer", HeaderValue::from_static("wait=\"2\""));
        assert_eq!(preferences(&h).wait_secs, Some(2));
    }

    #[test]
    fn waits_stay_within_the_cap_and_the_callers_limit() {
        let config = crate::config::ServerConfig::default();
        let none = Preferences::default();
        let ms = |d: Duration| d.as_millis() as u64;
        assert_eq!(ms(wait_for(None, &none, &config, AnswerLimits::API)), 8_000);
        assert_eq!(
            ms(wait_for(Some(59_000), &none, &config, AnswerLimits::API)),
            59_000
        );
        assert_eq!(
            ms(wait_for(Some(600_000), &none, &config, AnswerLimits::API)),
            60_000
        );
        let action = AnswerLimits {
            max_wait: Some(crate::http::actions::MAX_WAIT),
            max_chars: None,
        };
        assert_eq!(ms(wait_for(Some(59_000), &none, &config, action)), 40_000);
        let prefer = Preferences {
            respond_async: false,
            wait_secs: Some(3_600),
        };
        assert_eq!(ms(wait_for(None, &prefer, &config, action)), 40_000);
    }

    #[test]
    fn idempotency_keys_must_be_printable() {
        assert!(valid_key("order-123"));
        assert!(!valid_key(""));
        assert!(!valid_key("a\nb"));
        assert!(!valid_key(&"k".repeat(256)));
    }
}
