//! `GET /tools`: every intent this server can run.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{AppState, auth::Permissions, responses::KeyProblems};
use crate::{auth::Authenticated, model::Mode, tools::Effect};

pub fn router() -> Router<AppState> {
    Router::new().route("/tools", get(list_tools))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolView {
    /// The intent name to send to `/orchestrate`.
    pub name: String,
    pub mode: Mode,
    pub description: String,
    /// JSON Schema of `inputs`.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// `write` intents are deduplicated by their inputs for a while when no idempotency key
    /// is sent; `read` intents run every time.
    #[schema(example = "write")]
    pub effect: &'static str,
    pub timeout_ms: u64,
    pub max_attempts: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolView>,
}

#[utoipa::path(get, path = "/tools", operation_id = "listTools", tag = "discovery",
    summary = "Every intent the server can run (that this key may use), with its input schema",
    responses((status = 200, description = "The intents", body = ToolList), KeyProblems))]
pub async fn list_tools(State(state): State<AppState>, auth: Authenticated) -> Json<ToolList> {
    let catalog = state.registry.snapshot();
    Json(ToolList {
        tools: catalog
            .iter()
            .filter(|i| auth.require_intent(i.name()).is_ok())
            .map(|i| {
                let spec = i.tool.spec();
                ToolView {
                    name: spec.name.clone(),
                    mode: i.mode,
                    description: spec.description.clone(),
                    input_schema: spec.input_schema.clone(),
                    effect: match spec.effect {
                        Effect::Read => "read",
                        Effect::Write => "write",
                    },
                    timeout_ms: i.timeout.as_millis() as u64,
                    max_attempts: i.max_attempts,
                }
            })
            .collect(),
    })
}
