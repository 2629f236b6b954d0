//! Tools: what an intent runs. Local tools (memory, system, SSH, fetch, fs) run in this process; flows and
//! MCP servers are tools too, behind the same trait (`crate::catalog::Tool`), so intake,
//! workers and discovery treat every engine alike. Each tool's configuration lives with it.

pub mod content;
pub mod fetch;
pub mod flow;
pub mod fs;
pub mod mcp;
pub mod memory;
pub mod ssh;
pub mod system;

pub use crate::catalog::{
    Effect, InlineTool, Progress, Tool, ToolContext, ToolError, ToolOutput, ToolResult, ToolSpec,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{Catalog, CatalogError, Intent, IntentOverride},
    model::{ConfigProblem, Mode},
    store::Store,
};

/// Inputs that fail a tool's own checks when the job runs (they passed at intake, so the
/// configuration changed in between): one permanent error naming every field.
pub(crate) fn invalid_inputs(errors: Vec<crate::model::FieldError>) -> ToolError {
    let why: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    ToolError::permanent("invalid_inputs", why.join("; "))
}

/// Why this configuration's tools cannot be set up: at start, so that a broken inventory
/// stops the server rather than a job later.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Setting(#[from] ConfigProblem),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// `[tools]`: the built-in local tools; each entry of `overrides` may change an intent's
/// defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// `system.echo` and `system.sleep` (diagnostics, tests, benchmarks).
    pub system: bool,
    /// `[tools.fetch]`: `http.fetch` (off by default).
    pub fetch: fetch::FetchConfig,
    /// `[tools.fs]`: the roots of the `fs.*` tools (none by default: no tools).
    pub fs: fs::FsConfig,
    pub overrides: BTreeMap<String, IntentOverride>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            system: true,
            fetch: fetch::FetchConfig::default(),
            fs: fs::FsConfig::default(),
            overrides: BTreeMap::new(),
        }
    }
}

impl ToolsConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.fetch.problems();
        out.extend(self.fs.problems());
        for (intent, o) in &self.overrides {
            let field = |key: &str| format!("tools.overrides.\"{intent}\".{key}");
            if o.max_attempts.is_some_and(|n| n < 1) {
                out.push(ConfigProblem::new(
                    field("max_attempts"),
                    "must be at least 1",
                ));
            }
            if let Some(problem) = o.concurrency.as_ref().and_then(|c| c.problem()) {
                out.push(ConfigProblem::new(field("concurrency"), problem));
            }
            if o.timeout.is_some_and(|t| t.is_zero()) {
                out.push(ConfigProblem::new(field("timeout_ms"), "must be positive"));
            }
        }
        out
    }
}

/// The intents served by this process's own tools (memory, system, SSH, fetch, fs).
pub fn local_catalog(
    config: &ToolsConfig,
    ssh_config: &ssh::SshConfig,
    store: &Store,
) -> Result<Catalog, SetupError> {
    let mut catalog = Catalog::default();
    let mut tools = memory::tools(store);
    if config.system {
        tools.extend(system::tools());
    }
    tools.extend(ssh::tools(ssh_config, &config.overrides, store)?);
    tools.extend(fetch::tools(&config.fetch));
    tools.extend(fs::tools(&config.fs, store)?);
    for tool in tools {
        let overrides = config.overrides.get(&tool.spec().name);
        catalog.add(Intent::new(Mode::Agent, tool, overrides)?)?;
    }
    for name in config.overrides.keys() {
        if catalog.get(name, Mode::Agent).is_none() {
            return Err(ConfigProblem::new(
                format!("tools.overrides.\"{name}\""),
                format!(
                    "no such local intent (known: {})",
                    catalog
                        .iter()
                        .map(|i| i.name().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        }
    }
    Ok(catalog)
}
