//! The tools `/mcp` lists: one per intent of the live catalog (under the names of
//! [`super::names`]), with the annotations ChatGPT and Claude require set on every one, plus
//! our own `job_status` and `job_cancel`. Built once per catalog version and shared; each
//! caller sees the part its scopes allow.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rmcp::model::{JsonObject, MetaObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::names::tool_names;
use crate::{
    auth::Authenticated,
    catalog::{Catalog, Effect, Intent, Registry},
    model::Mode,
};

pub const JOB_STATUS: &str = "job_status";
pub const JOB_CANCEL: &str = "job_cancel";
/// `_meta` keys of a listed tool: the intent it runs, its engine and its effect.
pub const META_INTENT: &str = "orchestrator/intent";
const META_MODE: &str = "orchestrator/mode";
const META_EFFECT: &str = "orchestrator/effect";

/// One listed intent.
pub struct Listed {
    pub intent: Arc<Intent>,
    pub tool: Tool,
}

/// The tools of one catalog version.
pub struct Listing {
    catalog: Arc<Catalog>,
    intents: Vec<Listed>,
    by_name: HashMap<String, usize>,
    job_tools: [Tool; 2],
}

impl Listing {
    fn build(catalog: Arc<Catalog>, call_wait_ms: u64) -> Self {
        // One tool per intent name, run as `auto` would run it; a name served by several
        // engines with no preference configured has no single meaning and is left out.
        let mut resolved: Vec<Arc<Intent>> = Vec::new();
        for intent in catalog.iter() {
            if resolved.last().is_some_and(|r| r.name() == intent.name()) {
                continue;
            }
            match catalog.resolve(intent.name(), Mode::Auto) {
                Ok(chosen) => resolved.push(chosen),
                Err(_) => tracing::debug!(
                    intent = intent.name(),
                    "served by several engines without a preference: not listed over MCP"
                ),
            }
        }
        let names = tool_names(resolved.iter().map(|i| i.name()), &[JOB_STATUS, JOB_CANCEL]);
        let intents: Vec<Listed> = resolved
            .into_iter()
            .map(|intent| Listed {
                tool: intent_tool(&intent, &names[intent.name()]),
                intent,
            })
            .collect();
        let by_name = intents
            .iter()
            .enumerate()
            .map(|(i, l)| (l.tool.name.to_string(), i))
            .collect();
        Self {
            catalog,
            intents,
            by_name,
            job_tools: job_tools(call_wait_ms),
        }
    }

    /// The tools `auth` may call.
    pub fn visible(&self, auth: &Authenticated) -> Vec<Tool> {
        self.intents
            .iter()
            .filter(|l| allows(auth, l.intent.name()))
            .map(|l| l.tool.clone())
            .chain(self.job_tools.iter().cloned())
            .collect()
    }

    /// The intent behind tool `name`, if `auth` may call it (another caller's tools do not
    /// exist for this one).
    pub fn intent(&self, name: &str, auth: &Authenticated) -> Option<&Listed> {
        self.by_name
            .get(name)
            .map(|&i| &self.intents[i])
            .filter(|l| allows(auth, l.intent.name()))
    }
}

fn allows(auth: &Authenticated, intent: &str) -> bool {
    auth.scopes.as_ref().is_none_or(|s| s.allows_intent(intent))
}

/// The current listing, rebuilt when the catalog changes.
pub struct Listings {
    registry: Arc<Registry>,
    call_wait_ms: u64,
    current: Mutex<Option<Arc<Listing>>>,
}

impl Listings {
    pub fn new(registry: Arc<Registry>, call_wait_ms: u64) -> Self {
        Self {
            registry,
            call_wait_ms,
            current: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Arc<Listing> {
        let catalog = self.registry.snapshot();
        let mut current = self.current.lock().expect("listing lock poisoned");
        match current.as_ref() {
            Some(listing) if Arc::ptr_eq(&listing.catalog, &catalog) => listing.clone(),
            _ => {
                let listing = Arc::new(Listing::build(catalog, self.call_wait_ms));
                *current = Some(listing.clone());
                listing
            }
        }
    }
}

fn intent_tool(intent: &Intent, name: &str) -> Tool {
    let spec = intent.tool.spec();
    let read_only = spec.effect == Effect::Read;
    let annotations = ToolAnnotations::with_title(spec.name.clone())
        .read_only(read_only)
        .destructive(!read_only && intent.destructive)
        // Reads change nothing; a write without the caller's own key is filed under a key
        // derived from its inputs, so the same call again answers with the first job.
        .idempotent(true)
        .open_world(spec.open_world);
    let mut meta = MetaObject::new();
    meta.insert(META_INTENT.into(), json!(spec.name));
    meta.insert(META_MODE.into(), json!(intent.mode.as_str()));
    meta.insert(
        META_EFFECT.into(),
        json!(if read_only { "read" } else { "write" }),
    );
    let mut tool = Tool::new(
        name.to_owned(),
        spec.description.clone(),
        Arc::new(object_schema(&spec.input_schema)),
    )
    .with_title(spec.name.clone())
    .with_annotations(annotations)
    .with_meta(meta);
    if let Some(output) = &spec.output_schema {
        tool = tool.with_raw_output_schema(Arc::new(envelope_schema(output.clone())));
    }
    tool
}

/// MCP wants `"type": "object"` at the top of an input schema.
fn object_schema(schema: &Value) -> JsonObject {
    let mut object = match schema {
        Value::Object(o) => o.clone(),
        _ => JsonObject::new(),
    };
    object
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
    object
}

/// What `structuredContent` holds: the job and, once it succeeded, its result (of the
/// intent's own output schema).
fn envelope_schema(result: Value) -> JsonObject {
    let Value::Object(o) = json!({
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string"},
            "job_status": {"type": "string"},
            "intent": {"type": "string"},
            "result": result,
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
            "duration_ms": {"type": ["integer", "null"]},
            "status_url": {"type": "string"},
            "message": {"type": "string"},
        },
        "required": ["job_id", "status"],
    }) else {
        unreachable!("an object literal")
    };
    o
}

fn job_tools(call_wait_ms: u64) -> [Tool; 2] {
    let job_id = json!({
        "type": "string",
        "pattern": "^job_[0-9a-f]{32}$",
        "description": "The job_id a tool call answered with."
    });
    let schema = |value: Value| match value {
        Value::Object(o) => Arc::new(o),
        _ => unreachable!("an object literal"),
    };
    let status = Tool::new(
        JOB_STATUS,
        format!(
            "The status of a job a tool call started, and its result once it has finished. \
             Tool calls answer with a job_id when their job takes longer than the call may \
             wait; call this with that job_id (and wait_ms, up to {call_wait_ms}, to wait for \
             the result) until the status is final."
        ),
        schema(json!({
            "type": "object",
            "properties": {
                "job_id": job_id,
                "wait_ms": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": call_wait_ms,
                    "description": "How long to wait for the job to finish before answering."
                }
            },
            "required": ["job_id"],
            "additionalProperties": false
        })),
    )
    .with_title("Job status")
    .with_annotations(
        ToolAnnotations::with_title("Job status")
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    );
    let cancel = Tool::new(
        JOB_CANCEL,
        "Cancel a job that has not finished (one this caller started, or any with the \
         jobs:cancel scope). Work it already did is not undone.",
        schema(json!({
            "type": "object",
            "properties": {"job_id": job_id},
            "required": ["job_id"],
            "additionalProperties": false
        })),
    )
    .with_title("Cancel a job")
    .with_annotations(
        ToolAnnotations::with_title("Cancel a job")
            .read_only(false)
            // Stopping work half-way may leave it half-done.
            .destructive(true)
            .idempotent(true)
            .open_world(false),
    );
    [status, cancel]
}
