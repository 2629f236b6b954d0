//! From a request to an engine: the catalog of intents (and how `auto` picks one), and the
//! intake that files jobs and waits for them.

mod canonical;
pub mod catalog;
pub mod ingest;
mod intake;
pub mod routing;

pub use intake::{IdempotencyKey, Orchestrator, Submission, SubmitError, Submitted, WaitOutcome};

use crate::{
    config::Config,
    model::Mode,
    store::Store,
    tools::{memory, ssh, system},
};
use catalog::{Catalog, Intent};

/// The intents served by this process's own tools.
pub fn local_catalog(config: &Config, store: &Store) -> Result<Catalog, String> {
    let mut catalog = Catalog::default();
    let mut tools = memory::tools(store);
    if config.tools.system {
        tools.extend(system::tools());
    }
    tools.extend(ssh::tools(&config.ssh, &config.tools.overrides, store)?);
    for tool in tools {
        let overrides = config.tools.overrides.get(&tool.spec().name);
        catalog.add(Intent::new(Mode::Agent, tool, overrides)?)?;
    }
    for name in config.tools.overrides.keys() {
        if catalog.get(name, Mode::Agent).is_none() {
            return Err(format!(
                "tools.overrides.\"{name}\": no such local intent (known: {})",
                catalog
                    .iter()
                    .map(|i| i.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(catalog)
}
