//! An MCP tool as an intent: `mcp.<server>.<tool>` (and its configured aliases), described by
//! the tool's own description and input schema, called through the server's session.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use serde_json::Value;

use super::{config::EffectPolicy, server::McpServer};
use crate::{
    catalog::Intent,
    model::Mode,
    tools::{Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec},
};

/// Our own call timeout fires first, so a slow call ends as a clean `timed_out` that names
/// the server, and the server is checked.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(1);

pub struct McpTool {
    server: Arc<McpServer>,
    /// The name the server knows it by.
    tool: String,
    spec: ToolSpec,
}

impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        let arguments = inputs.as_object().cloned().unwrap_or_default();
        Box::pin(async move {
            tokio::select! {
                // Dropping the call sends `notifications/cancelled` for it.
                _ = ctx.cancel.cancelled() => Err(ToolError::permanent("cancelled", "stopped")),
                r = self.server.call(&self.tool, arguments, &ctx.progress) => r,
            }
        })
    }
}

/// The intents for a server's tool list: each published tool under `mcp.<server>.<tool>`,
/// plus the aliases whose tool is there. Tools whose schema cannot be compiled are left out.
pub fn intents(server: &Arc<McpServer>, tools: Vec<rmcp::model::Tool>) -> Vec<Arc<Intent>> {
    let config = &server.config;
    let mut out = Vec::new();
    for t in tools.iter().filter(|t| config.publishes(&t.name)) {
        let mut names = vec![format!("{}{}", server.intent_prefix(), t.name)];
        names.extend(
            config
                .aliases
                .iter()
                .filter(|(_, tool)| **tool == *t.name)
                .map(|(alias, _)| alias.clone()),
        );
        for name in names {
            let tool = McpTool {
                server: server.clone(),
                tool: t.name.to_string(),
                spec: spec(server, name, t),
            };
            match Intent::new(Mode::Mcp, Arc::new(tool), None) {
                Ok(intent) => out.push(Arc::new(intent)),
                Err(e) => tracing::warn!(server = %server.name, "tool left out: {e}"),
            }
        }
    }
    for (alias, tool) in &config.aliases {
        if !tools
            .iter()
            .any(|t| t.name == *tool && config.publishes(tool))
        {
            tracing::warn!(server = %server.name, %alias, %tool, "alias names a tool the server does not publish");
        }
    }
    out
}

fn spec(server: &McpServer, name: String, t: &rmcp::model::Tool) -> ToolSpec {
    let config = &server.config;
    let read_only = t
        .annotations
        .as_ref()
        .and_then(|a| a.read_only_hint)
        .unwrap_or(false);
    let effect = match config.effect {
        EffectPolicy::Read => Effect::Read,
        EffectPolicy::Write => Effect::Write,
        EffectPolicy::Auto if read_only => Effect::Read,
        EffectPolicy::Auto => Effect::Write,
    };
    let description = t
        .description
        .as_deref()
        .or(t.title.as_deref())
        .unwrap_or_default()
        .to_owned();
    ToolSpec {
        name,
        description,
        input_schema: Value::Object((*t.input_schema).clone()),
        effect,
        timeout: config.call_timeout + ATTEMPT_MARGIN,
        max_attempts: config.max_attempts,
        priority: 0,
        public: false,
        // MCP's own default for a tool that does not say: a write may destroy.
        destructive: effect == Effect::Write
            && t.annotations
                .as_ref()
                .and_then(|a| a.destructive_hint)
                .unwrap_or(true),
        open_world: true,
        output_schema: t
            .output_schema
            .as_ref()
            .map(|s| Value::Object((**s).clone())),
    }
}
