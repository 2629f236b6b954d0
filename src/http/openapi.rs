//! The OpenAPI 3.1 document: generated from the handlers' types, then completed with the live
//! catalog (every intent and its inputs) and `servers` = `public_url`, so it imports as a
//! ChatGPT Action as is.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{
    AppState, auth::Permissions, callbacks, health, jobs, keys, orchestrate, problem, tools,
};
use crate::{
    auth::Authenticated,
    dispatch::catalog::{Catalog, Intent},
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
        jobs::job_events,
        callbacks::ingest,
        callbacks::job_callbacks,
        callbacks::retry_delivery,
        callbacks::signing_secret,
        keys::list_keys,
        keys::create,
        keys::revoke,
        tools::list_tools,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        orchestrate::OrchestrateRequest,
        orchestrate::OrchestrateResult,
        orchestrate::Accepted,
        jobs::JobView,
        jobs::JobList,
        jobs::EventView,
        jobs::EventList,
        callbacks::IngestAnswer,
        callbacks::DeliveryView,
        callbacks::CallbackAttemptView,
        callbacks::JobCallbacks,
        callbacks::SigningSecretView,
        crate::webhook::SecretSource,
        crate::store::DeliveryStatus,
        keys::KeyView,
        keys::CreateKey,
        keys::CreatedKeyView,
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
        (name = "discovery", description = "What can run"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// Without a key: the API and the intents every server has, nothing of this deployment (no
/// host names, URLs or server names). With a key: every intent that key may run.
async fn openapi_json(State(state): State<AppState>, auth: Option<Authenticated>) -> Json<Value> {
    let catalog = state.registry.snapshot();
    let shown = |intent: &Intent| match &auth {
        None => intent.tool.spec().public,
        Some(auth) => auth.require_intent(intent.name()).is_ok(),
    };
    Json(document(&catalog, &state.config.server.public_url, shown))
}

/// The document for the intents of `catalog` that `shown` admits, and this public URL.
pub fn document(catalog: &Catalog, public_url: &str, shown: impl Fn(&Intent) -> bool) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("OpenAPI serializes");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["servers"] = json!([{"url": public_url.trim_end_matches('/')}]);
    // API keys: `Authorization: Bearer orch_…` (what ChatGPT Actions send) or `X-API-Key`.
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "An API key (orch_…); see `orchestrator keys create`."},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    });
    doc["security"] = json!([{"bearer": []}, {"apiKeyHeader": []}]);
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/callbacks/ingest", "post"),
    ] {
        doc["paths"][path][method]["security"] = json!([]);
    }

    let mut names: Vec<&str> = Vec::new();
    let mut refs = Vec::new();
    let mut listing = String::new();
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
            map.insert("description".into(), json!(spec.description));
        }
        doc["components"]["schemas"][&schema_name] = schema;
        refs.push(json!({"$ref": format!("#/components/schemas/{schema_name}")}));
        listing.push_str(&format!("\n- `{}`: {}", spec.name, spec.description));
    }

    let props = &mut doc["components"]["schemas"]["OrchestrateRequest"]["properties"];
    props["intent"]["enum"] = json!(names);
    props["intent"]["description"] = json!(format!(
        "What to do. The inputs of each intent are the schema titled with its name.{listing}"
    ));
    props["inputs"] = json!({
        "type": "object",
        "description": "The intent's inputs (see the schema titled with the intent's name).",
        "anyOf": refs,
    });
    doc
}
