//! The ChatGPT Action surface: `orchestrate`, `getJob` and `listTools` under `/actions/…`,
//! described by `/openapi.json?profile=actions`. The same intake, jobs and scopes as the API,
//! but the server itself holds what an Action can take: a wait of at most 40 s (an Action gives
//! up at 45 s; longer jobs answer 202 and are polled with `getJob`) and answers of at most
//! 100,000 characters (a larger result is replaced by a preview and where to read it whole).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    auth::Permissions,
    bounded::{bound, json_chars},
    jobs::{JobView, load_visible, parse_job_id},
    orchestrate::{self, AnswerLimits},
    problem::ApiError,
    responses::{BodyProblems, IntakeProblems, JobLookup, KeyProblems, RateLimited},
};
use crate::{auth::Authenticated, ids::JobId, model::Mode, tools::Effect};

/// The longest an Action request waits for its job.
pub const MAX_WAIT: Duration = Duration::from_secs(40);
/// The most characters an Action answer holds.
pub const MAX_CHARS: usize = 100_000;
/// Tool descriptions in the list are cut to this (the whole is in `GET /tools`).
const DESCRIPTION_CHARS: usize = 300;

const LIMITS: AnswerLimits = AnswerLimits {
    max_wait: Some(MAX_WAIT),
    max_chars: Some(MAX_CHARS),
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/actions/orchestrate", post(orchestrate))
        .route("/actions/jobs/{job_id}", get(get_job))
        .route("/actions/tools", get(list_tools))
}

#[utoipa::path(post, path = "/actions/orchestrate", operation_id = "orchestrate", tag = "actions",
    summary = "Run an intent",
    description = "Runs `intent` with `inputs` (see listTools). Answers with the outcome when the \
        job ends within 40 s, otherwise 202 with a `job_id`: then call getJob until `status` is \
        final. Send `idempotency_key` to retry safely.",
    request_body = crate::http::orchestrate::OrchestrateRequest,
    responses(
        (status = 200, description = "Finished within the wait", body = crate::http::orchestrate::OrchestrateResult),
        (status = 202, description = "Accepted; still running: poll getJob", body = crate::http::orchestrate::Accepted),
        IntakeProblems, BodyProblems, KeyProblems, RateLimited,
    ))]
pub async fn orchestrate(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    orchestrate::run(&state, auth, &headers, body, LIMITS, false).await
}

#[utoipa::path(get, path = "/actions/jobs/{job_id}", operation_id = "getJob", tag = "actions",
    summary = "A job's status and outcome",
    description = "Final states: succeeded, failed, cancelled, timed_out. A result too large to \
        read here is replaced by a preview.",
    params(("job_id" = JobId, Path, description = "`job_` + 32 hex digits")),
    responses((status = 200, description = "The job", body = JobView), JobLookup, KeyProblems))]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    let mut job = JobView::from(load_visible(&state, &auth, id).await?);
    let full_at = format!(
        "{}/jobs/{id}",
        state.config.server.public_url.trim_end_matches('/')
    );
    // The result first; the inputs too if that was not enough.
    let result = job.result.take();
    let rest = json_chars(&job);
    job.result = result;
    bound(&mut job.result, rest, MAX_CHARS, &full_at);
    let mut inputs = Some(std::mem::take(&mut job.inputs));
    let rest = json_chars(&job);
    bound(&mut inputs, rest, MAX_CHARS, &full_at);
    job.inputs = inputs.unwrap_or_default();
    Ok(Json(job))
}

/// An intent, briefly (its inputs are in this document's `inputs.<intent>` schemas).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionTool {
    pub name: String,
    pub mode: Mode,
    /// At most 300 characters.
    pub description: String,
    /// `read` or `write`.
    pub effect: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionToolList {
    pub tools: Vec<ActionTool>,
    /// Some intents were left out to keep the answer readable; `GET /tools` has them all.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[utoipa::path(get, path = "/actions/tools", operation_id = "listTools", tag = "actions",
    summary = "The intents this key may run",
    responses((status = 200, description = "The intents", body = ActionToolList), KeyProblems))]
pub async fn list_tools(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Json<ActionToolList> {
    let catalog = state.registry.snapshot();
    let mut list = ActionToolList {
        tools: Vec::new(),
        truncated: false,
    };
    let mut used = json_chars(&list) + 20;
    for intent in catalog
        .iter()
        .filter(|i| auth.require_intent(i.name()).is_ok())
    {
        let spec = intent.tool.spec();
        let tool = ActionTool {
            name: spec.name.clone(),
            mode: intent.mode,
            description: spec.description.chars().take(DESCRIPTION_CHARS).collect(),
            effect: match spec.effect {
                Effect::Read => "read",
                Effect::Write => "write",
            },
        };
        let size = json_chars(&tool) + 1;
        if used + size > MAX_CHARS {
            list.truncated = true;
            break;
        }
        used += size;
        list.tools.push(tool);
    }
    Json(list)
}
