//! `POST /orchestrate`: validate, file the job, wait for it within the sync budget, answer 200
//! with the outcome or 202 with where to find it. The body is `request`'s; how long to wait
//! comes from the body or `prefer`.

mod prefer;
mod request;

pub use request::OrchestrateRequest;

use prefer::{Preferences, preferences};
use request::idempotency_key;

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
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    AppState,
    auth::Permissions,
    body::parse_json_body,
    problem::ApiError,
    responses::{BodyProblems, IntakeProblems, KeyProblems, RateLimited},
    streams::{self, Finale, json_event},
};
use crate::{
    auth::Authenticated,
    catalog::{Intent, ResolveError},
    ids::JobId,
    intake::{Submission, Submitted, WaitOutcome},
    model::{FieldError, FinishedJob, JobError, JobStatus, Mode, Principal},
    store::StreamPosition,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/orchestrate", post(orchestrate))
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

/// The outcome's body, bounded by `limits`.
fn result_body(
    job: &FinishedJob,
    replay: bool,
    limits: AnswerLimits,
    public_url: &str,
) -> OrchestrateResult {
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
    body
}

fn finished_response(
    job: &FinishedJob,
    replay: bool,
    limits: AnswerLimits,
    public_url: &str,
) -> Response {
    let body = result_body(job, replay, limits, public_url);
    with_replay_header((StatusCode::OK, Json(body)).into_response(), replay)
}

/// The streamed answer: `accepted`, the job's events, then `result` with the outcome.
async fn streamed_response(state: &AppState, accepted: Accepted) -> Result<Response, ApiError> {
    let job_id = accepted.job_id;
    let replay = accepted.idempotent_replay;
    let prelude = vec![json_event(Some("accepted"), &accepted)];
    let intake = state.intake.clone();
    let public_url = state.config.server.public_url.clone();
    let finale: Finale = Box::new(move |job_id, status| {
        Box::pin(async move {
            match intake.finished(job_id).await {
                Ok(Some(done)) => json_event(
                    Some("result"),
                    &result_body(&done, replay, AnswerLimits::API, &public_url),
                ),
                // The outcome is in the job (`status_url`); the stream still ends cleanly.
                Ok(None) | Err(_) => (streams::end_event())(job_id, status).await,
            }
        })
    });
    // From the start: a replayed job that already finished has its final event in the history.
    streams::job_stream(state, job_id, None, StreamPosition::START, prelude, finale).await
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
        `Idempotency-Key` header or `idempotency_key` field to retry safely. With `Accept: \
        text/event-stream` the answer streams the job's events, then its result.",
    request_body = OrchestrateRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = "^[ -~]+$", description = "Replays the stored answer for a repeated request (1 to 255 printable ASCII characters)."),
        ("Prefer" = Option<String>, Header, description = "`respond-async` or `wait=N` (seconds)."),
    ),
    responses(
        (status = 200, description = "Finished within the wait; with `Accept: text/event-stream`, \
         the stream of `accepted`, the job's events and `result` (an `OrchestrateResult`)",
         content((OrchestrateResult = "application/json"), (String = "text/event-stream"))),
        (status = 202, description = "Accepted; still running", body = Accepted,
         headers(("Location" = String, description = "The job's status URL"))),
        IntakeProblems, BodyProblems, KeyProblems, RateLimited,
    )
)]
pub async fn orchestrate(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let stream = streams::wants_event_stream(&headers);
    run(&state, auth, &headers, body, AnswerLimits::API, stream).await
}

/// Validates, files the job, waits within the budget and answers, under `limits`.
pub async fn run(
    state: &AppState,
    auth: Authenticated,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limits: AnswerLimits,
    stream: bool,
) -> Result<Response, ApiError> {
    let config = &state.config.server;
    let req = parse_json_body(headers, body, config.max_body_bytes)
        .and_then(OrchestrateRequest::from_json)?;

    let idempotency_key = idempotency_key(headers, req.idempotency_key.clone())?;

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
    check_inputs(state, &req.intent, &intent, &req.inputs, &auth.principal).await?;
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

    let when = req.when()?;
    let later = when
        .as_ref()
        .is_some_and(|(_, at)| *at > chrono::Utc::now());
    super::rate_limit::admit(state, &auth.principal, intent.name()).await?;

    let prefer = preferences(headers);
    // A job for later is answered at once: 202, `scheduled`.
    let respond_async = later || req.async_.unwrap_or(prefer.respond_async);
    let wait = wait_for(req.timeout_ms, &prefer, config, limits);
    // A streamed answer follows the job through its events rather than a waiter.
    let wants_wait = !respond_async && !wait.is_zero() && !stream;

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
            run_at: when.as_ref().map(|(_, at)| *at),
            when: when.map(|(said, _)| said),
            schedule_id: None,
        })
        .await?;
    let (job_id, waiter, replay) = match submitted {
        Submitted::Created { job_id, waiter } => (job_id, waiter, false),
        Submitted::Replay { job_id, waiter } if !stream => {
            if let Some(done) = state.intake.finished(job_id).await? {
                return Ok(finished_response(&done, true, limits, &config.public_url));
            }
            (job_id, waiter, true)
        }
        Submitted::Replay { job_id, waiter } => (job_id, waiter, true),
    };
    if let Some(mut waiter) = waiter
        && let WaitOutcome::Finished(done) = state.intake.wait(&mut waiter, wait).await
    {
        return Ok(finished_response(&done, replay, limits, &config.public_url));
    }
    let accepted = Accepted {
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
    };
    if stream {
        return streamed_response(state, accepted).await;
    }
    Ok(accepted_response(accepted))
}

/// The intent's schema and own checks; a refusal that is a policy decision (an SSH command
/// refused) is audited although no job exists. The refusal names the intent `asked_as`.
pub async fn check_inputs(
    state: &AppState,
    asked_as: &str,
    intent: &Intent,
    inputs: &Value,
    principal: &Principal,
) -> Result<(), ApiError> {
    let Err(errors) = intent.validate(inputs) else {
        return Ok(());
    };
    if let Some((kind, detail)) = intent.tool.refusal_audit(inputs, &errors) {
        state
            .store
            .audit_intake_refusal(kind, intent.name(), principal, &detail)
            .await?;
    }
    Err(ApiError::from_input_errors(asked_as.to_owned(), errors))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
