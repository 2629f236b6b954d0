//! Tools: what an intent runs. Local tools (memory, system, SSH) run in this process; flows and
//! MCP servers are tools too, behind the same trait (`crate::catalog::Tool`), so intake,
//! workers and discovery treat every engine alike. Each tool's configuration lives with it.

pub mod flow;
pub mod mcp;
pub mod memory;
pub mod ssh;
pub mod system;

pub use crate::catalog::{
    Effect, Progress, Tool, ToolContext, ToolError, ToolOutput, ToolResult, ToolSpec,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    catalog::{Catalog, CatalogError, Intent, IntentOverride},
    model::{ConfigProblem, Mode},
    store::Store,
};

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
    pub overrides: BTreeMap<String, IntentOverride>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            system: true,
            overrides: BTreeMap::new(),
        }
    }
}

impl ToolsConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (intent, o) in &self.overrides {
            let field = |key: &str| format!("tools.overrides.\"{intent}\".{key}");
            if o.max_attempts.is_some_and(|n| n < 1) {
                out.push(ConfigProblem::new(
                    field("max_attempts"),
                    "must be at least 1",
                ));
            }
            if o.timeout.is_some_and(|t| t.is_zero()) {
                out.push(ConfigProblem::new(field("timeout_ms"), "must be positive"));
            }
        }
        out
    }
}

/// The intents served by this process's own tools (memory, system, SSH).
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
