//! The catalog: every intent this server can run — the `Tool` each runs, the engine (mode) it
//! belongs to, its compiled input schema and run policy — and how `auto` picks an engine.
//! Engines register into it; intake, workers and the HTTP API read it. It knows no engine.

mod concurrency;
mod progress;
mod registry;
pub mod routing;
mod tool;

pub use concurrency::{Concurrency, ConcurrencyKey, limit_problem};
pub use progress::{OutputStream, Progress, ProgressWriter};
pub use registry::{
    Catalog, CatalogError, Intent, IntentOverride, LazySource, Registry, ResolveError,
    schema_error_fields,
};
pub use tool::{
    Effect, InlineTool, Tool, ToolContext, ToolError, ToolOutput, ToolResult, ToolSpec,
};
