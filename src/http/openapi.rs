//! The OpenAPI 3.1 documents, generated from the handlers' types, then completed with the live
//! catalog (every intent and its inputs) and `servers` = `public_url`: the whole API, and the
//! ChatGPT Action profile (`?profile=actions`: `orchestrate`, `getJob`, `listTools` only).

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{
    AppState, actions,
    auth::Permissions,
    callbacks, health, jobs, keys, oauth, orchestrate,
    problem::{self, ApiError},
    schedules, streams, tools,
};
use crate::{
    auth::Authenticated,
    catalog::{Catalog, Intent},
    model::{FieldError, JobError, JobStatus, Mode},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "One endpoint, `POST /orchestrate`, runs an intent on the engine that \
            serves it: local agent tools (memory, SSH), n8n/ActivePieces flows, or MCP tools. \
            It answers within the sync wait or with a job to poll.",
        license(name = "Apache-2.0"),
    ),
    paths(
        orchestrate::orchestrate,
        jobs::get_job,
        jobs::list_jobs,
        jobs::cancel_job,
        jobs::retry_job,
        jobs::job_events,
        streams::stream_job,
        streams::stream_events,
        callbacks::ingest,
        callbacks::job_callbacks,
        callbacks::retry_delivery,
        callbacks::signing_secret,
        keys::list_keys,
        keys::create,
        keys::revoke,
        schedules::list,
        schedules::create,
        schedules::show,
        schedules::delete,
        schedules::pause,
        schedules::resume,
        schedules::trigger,
        tools::list_tools,
        health::healthz,
        health::readyz,
        health::metrics,
        oauth::metadata::protected_resource,
        oauth::metadata::protected_resource_of_mcp,
        oauth::metadata::authorization_server,
        oauth::register::register,
        oauth::authorize::show,
        oauth::authorize::answer,
        oauth::token::token,
        oauth::token::revoke,
    ),
    components(schemas(
        orchestrate::OrchestrateRequest,
        orchestrate::OrchestrateResult,
        orchestrate::Accepted,
        jobs::JobView,
        jobs::JobList,
        jobs::EventView,
        jobs::EventList,
        streams::StreamedEvent,
        callbacks::IngestAnswer,
        callbacks::IngestReport,
        callbacks::IngestStatus,
        callbacks::IngestErrorReport,
        health::Readiness,
        health::ReadinessChecks,
        callbacks::DeliveryView,
        callbacks::CallbackAttemptView,
        callbacks::JobCallbacks,
        callbacks::SigningSecretView,
        crate::callbacks::SecretSource,
        crate::model::Direction,
        crate::model::Outcome,
        crate::store::DeliveryStatus,
        keys::KeyView,
        keys::CreateKey,
        keys::CreatedKeyView,
        schedules::ScheduleView,
        schedules::ScheduleList,
        schedules::CreateSchedule,
        schedules::Triggered,
        crate::schedules::Overlap,
        crate::schedules::CatchUp,
        tools::ToolView,
        tools::ToolList,
        problem::Problem,
        FieldError,
        JobError,
        JobStatus,
        Mode,
    )),
    tags(
        (name = "orchestrate", description = "Run intents"),
        (name = "jobs", description = "Follow and control jobs"),
        (name = "callbacks", description = "Flows reporting back; callback deliveries"),
        (name = "keys", description = "API keys (scope keys:admin)"),
        (name = "schedules", description = "Intents filed on a cron timetable (scope schedules:admin)"),
        (name = "discovery", description = "What can run"),
        (name = "operations", description = "Health and metrics"),
        (name = "oauth", description = "OAuth 2.1 for /mcp: discovery and the built-in authorization server"),
    )
)]
struct ApiDoc;

/// The ChatGPT Action profile: three operations whose waits and answers the server bounds.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "Runs intents (memory, SSH diagnostics, workflows, MCP tools) and reports \
            their outcome. Call listTools to see what may run, orchestrate to run it, and getJob \
            to follow a job that took longer than 40 s.",
        license(name = "Apache-2.0"),
    ),
    paths(actions::orchestrate, actions::get_job, actions::list_tools),
    components(schemas(
        orchestrate::OrchestrateRequest,
        orchestrate::OrchestrateResult,
        orchestrate::Accepted,
        jobs::JobView,
        actions::ActionTool,
        actions::ActionToolList,
        problem::Problem,
        FieldError,
        JobError,
        JobStatus,
        Mode,
    )),
    tags((name = "actions", description = "Run intents and follow jobs")),
)]
struct ActionsDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

#[derive(Debug, Deserialize)]
struct DocParams {
    profile: Option<String>,
}

/// Without a key: the API and the intents every server has, nothing of this deployment (no
/// host names, URLs or server names). With a key: every intent that key may run.
async fn openapi_json(
    State(state): State<AppState>,
    auth: Option<Authenticated>,
    Query(params): Query<DocParams>,
) -> Result<Json<Value>, ApiError> {
    let catalog = state.registry.snapshot();
    let shown = |intent: &Intent| match &auth {
        None => intent.tool.spec().public,
        Some(auth) => auth.require_intent(intent.name()).is_ok(),
    };
    let public_url = &state.config.server.public_url;
    match params.profile.as_deref() {
        None | Some("") => Ok(Json(document(&catalog, public_url, shown))),
        Some("actions") => Ok(Json(actions_document(&catalog, public_url, shown))),
        Some(_) => Err(ApiError::invalid(
            "profile",
            "must be `actions` (or absent)",
        )),
    }
}

/// The whole API for the intents of `catalog` that `shown` admits, at this public URL.
pub fn document(catalog: &Catalog, public_url: &str, shown: impl Fn(&Intent) -> bool) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("OpenAPI serializes");
    complete(&mut doc, catalog, public_url, shown);
    doc
}

/// The ChatGPT Action profile: what an Action imports.
pub fn actions_document(
    catalog: &Catalog,
    public_url: &str,
    shown: impl Fn(&Intent) -> bool,
) -> Value {
    let mut doc = serde_json::to_value(ActionsDoc::openapi()).expect("OpenAPI serializes");
    complete(&mut doc, catalog, public_url, shown);
    let timeout =
        &mut doc["components"]["schemas"]["OrchestrateRequest"]["properties"]["timeout_ms"];
    timeout["maximum"] = json!(actions::MAX_WAIT.as_millis() as u64);
    timeout["description"] = json!(
        "How long to wait for the result before answering 202 (default 8000, at most 40000)."
    );
    doc
}

/// What both documents share: version, server, security, and the intents with their inputs.
fn complete(doc: &mut Value, catalog: &Catalog, public_url: &str, shown: impl Fn(&Intent) -> bool) {
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["servers"] = json!([{"url": public_url.trim_end_matches('/')}]);
    // API keys: `Authorization: Bearer orch_…` (what ChatGPT Actions send) or `X-API-Key`.
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "An API key (orch_…); see `orchestrator keys create`."},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    });
    doc["security"] = json!([{"bearer": []}, {"apiKeyHeader": []}]);

    let mut names: Vec<&str> = Vec::new();
    let mut refs = Vec::new();
    for intent in catalog.iter().filter(|i| shown(i)) {
        let spec = intent.tool.spec();
        if names.contains(&spec.name.as_str()) {
            continue;
        }
        names.push(&spec.name);
        let schema_name = format!("inputs.{}", spec.name);
        let mut schema = spec.input_schema.clone();
        if let Value::Object(map) = &mut schema {
            map.insert("title".into(), json!(spec.name));
            map.insert(
                "description".into(),
                json!(spec.description.chars().take(700).collect::<String>()),
            );
        }
        doc["components"]["schemas"][&schema_name] = schema;
        refs.push(json!({"$ref": format!("#/components/schemas/{schema_name}")}));
    }

    let request = &mut doc["components"]["schemas"]["OrchestrateRequest"];
    // The body parser refuses members it does not know.
    request["additionalProperties"] = json!(false);
    let props = &mut request["properties"];
    props["intent"]["enum"] = json!(names);
    props["inputs"] = json!({
        "type": "object",
        "description": "The intent's inputs: the schema titled with the intent's name.",
        "anyOf": refs,
    });
}
