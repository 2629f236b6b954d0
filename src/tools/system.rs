//! `system.*`: diagnostics for operators, tests and benchmarks.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use serde_json::{Value, json};

use super::{Effect, InlineTool, Tool, ToolContext, ToolError, ToolResult, ToolSpec};
use crate::{ids::JobId, store::InlineTx};

const MAX_SLEEP_MS: u64 = 3_600_000;

pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(Echo::new()), Arc::new(Sleep::new())]
}

pub struct Echo {
    spec: ToolSpec,
}

impl Echo {
    fn new() -> Self {
        Self {
            spec: ToolSpec {
                name: "system.echo".into(),
                description: "Return the inputs unchanged (diagnostics).".into(),
                input_schema: json!({"type": "object"}),
                effect: Effect::Read,
                timeout: Duration::from_secs(5),
                max_attempts: 1,
                priority: 0,
                public: true,
                destructive: false,
                open_world: false,
                output_schema: None,
            },
        }
    }
}

impl Tool for Echo {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        futures::future::ready(Ok(inputs.clone().into())).boxed()
    }

    /// Nothing to run outside the database: a waited-for echo is one commit.
    fn inline(&self) -> Option<&dyn InlineTool> {
        Some(self)
    }
}

impl InlineTool for Echo {
    fn call_in<'a>(
        &'a self,
        _tx: &'a mut InlineTx,
        _job_id: JobId,
        inputs: &'a Value,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        futures::future::ready(Ok(inputs.clone())).boxed()
    }

    fn runs_statements(&self) -> bool {
        false
    }
}

pub struct Sleep {
    spec: ToolSpec,
}

impl Sleep {
    fn new() -> Self {
        Self {
            spec: ToolSpec {
                name: "system.sleep".into(),
                description: "Wait `ms` milliseconds, then return; stops when cancelled.".into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS}},
                    "required": ["ms"],
                    "additionalProperties": false
                }),
                effect: Effect::Read,
                timeout: Duration::from_millis(MAX_SLEEP_MS + 60_000),
                max_attempts: 1,
                priority: 0,
                public: true,
                destructive: false,
                open_world: false,
                output_schema: None,
            },
        }
    }
}

impl Tool for Sleep {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            let ms = inputs.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms}).into()),
                _ = ctx.cancel.cancelled() => Err(super::ToolError::permanent("cancelled", "sleep interrupted")),
            }
        }
        .boxed()
    }
}
