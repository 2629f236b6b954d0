//! The `Tool` trait: what an intent runs, and what it gets and gives. Engines implement it;
//! the catalog, intake and workers only know this.

use std::{borrow::Cow, time::Duration};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    ids::JobId,
    model::{AuditKind, FieldError},
    store::{InlineTx, StoreError},
};

/// Whether running an intent twice with the same inputs changes anything. Write intents get an
/// idempotency key derived from their inputs when the client sends none; read intents do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
}

/// What an intent is and how it runs by default (config may override the numbers).
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub effect: Effect,
    /// Per attempt.
    pub timeout: Duration,
    pub max_attempts: i32,
    pub priority: i16,
    /// Shown to callers without a key (`/openapi.json`): true only for intents every server
    /// has, whose name and schema reveal nothing of this deployment's configuration (no host
    /// names, URLs or server names).
    pub public: bool,
    /// May destroy or overwrite something a caller cannot get back (`ssh.exec`,
    /// `memory.delete`): what MCP clients are told (`destructiveHint`) so they ask a person
    /// first. Meaningful for write intents only.
    pub destructive: bool,
    /// Reaches beyond this server and its database (a webhook, a host, another MCP server):
    /// MCP's `openWorldHint`.
    pub open_world: bool,
    /// JSON Schema of a successful result, where the intent declares one (an MCP server's
    /// `outputSchema`).
    pub output_schema: Option<Value>,
}

/// What one attempt of a job gives a tool.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub job_id: JobId,
    pub attempt: i32,
    /// Fires when the job is cancelled or its lease is lost; tools holding remote resources
    /// release them when it does.
    pub cancel: CancellationToken,
    /// Where the tool reports how far it got (the job's `progress` events).
    pub progress: super::Progress,
}

/// Why an attempt did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    /// Stable, machine-readable.
    pub code: Cow<'static, str>,
    pub message: String,
    /// Worth another attempt (transient: network, database unavailable, 5xx).
    pub retryable: bool,
    /// The attempt ran out of time (the job ends `timed_out` when no attempt is left).
    pub timed_out: bool,
    /// A hint from the remote side for when to try again.
    pub retry_after: Option<Duration>,
    /// The tool did not run and should in this long (its engine's rate limit): the job goes
    /// back to the queue until then, the attempt not counted (see [`ToolError::not_now`]).
    pub defer: Option<Duration>,
}

impl ToolError {
    /// A failure another attempt would not fix.
    pub fn permanent(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
            timed_out: false,
            retry_after: None,
            defer: None,
        }
    }

    /// Not now: nothing was done, and the job should run in `wait`. Unlike a retry, it costs
    /// no attempt, however many times it happens.
    pub fn not_now(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
        wait: Duration,
    ) -> Self {
        Self {
            defer: Some(wait),
            ..Self::permanent(code, message)
        }
    }

    pub fn transient(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::permanent(code, message)
        }
    }

    pub fn timed_out(message: impl Into<String>) -> Self {
        Self {
            timed_out: true,
            retryable: true,
            ..Self::permanent("timed_out", message)
        }
    }
}

impl From<StoreError> for ToolError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "tool storage error");
        if e.is_unavailable() {
            ToolError::transient("database_unavailable", "the database is unavailable")
        } else {
            ToolError::permanent("storage_error", "the tool could not store or read its data")
        }
    }
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutput {
    /// The job's result.
    Done(Value),
    /// The work was handed to someone who will report through `/callbacks/ingest` within
    /// `deadline` (the job waits in `awaiting_callback`, then ends `timed_out`).
    AwaitCallback { deadline: Duration },
}

impl From<Value> for ToolOutput {
    fn from(v: Value) -> Self {
        ToolOutput::Done(v)
    }
}

pub type ToolResult = Result<ToolOutput, ToolError>;

pub trait Tool: Send + Sync + 'static {
    fn spec(&self) -> &ToolSpec;

    /// Checks the JSON Schema cannot express (an allowlist, a parse); each error names a field
    /// as `inputs.<path>`.
    fn check_inputs(&self, _inputs: &Value) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// The audit entry for inputs `check_inputs` refused at intake, when such a refusal is a
    /// policy decision worth recording although no job exists (an SSH command refused):
    /// `(kind, detail)`. `host` and `decision` in the detail become the entry's target and
    /// outcome, as for the events a job records.
    fn refusal_audit(&self, _inputs: &Value, _errors: &[FieldError]) -> Option<(AuditKind, Value)> {
        None
    }

    /// The effect of a call with these inputs, where it depends on them (`http.fetch`: GET and
    /// HEAD read, other methods write); the spec's effect describes the intent as a whole.
    fn effect_of(&self, _inputs: &Value) -> Effect {
        self.spec().effect
    }

    /// The tool's own concurrency key for these inputs, when it has one (SSH: one key per host
    /// with its `max_sessions`); configuration may set another.
    fn concurrency_of(&self, _inputs: &Value) -> Option<super::concurrency::ConcurrencyKey> {
        None
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult>;

    /// The same call as statements of a request's transaction, for a tool whose whole effect
    /// is SQL in this database (or nothing): a caller waiting for it then gets its job filed,
    /// run and finished in one commit. `None` (the default): the tool reaches outside the
    /// database, and its jobs take the claim/lease path.
    fn inline(&self) -> Option<&dyn InlineTool> {
        None
    }
}

/// A tool that can run inside the request's transaction (see [`Tool::inline`]). It produces a
/// result or an error, never a deferral or a callback, and must not keep the transaction
/// waiting on anything but the database.
pub trait InlineTool: Send + Sync {
    fn call_in<'a>(
        &'a self,
        tx: &'a mut InlineTx,
        job_id: JobId,
        inputs: &'a Value,
    ) -> BoxFuture<'a, Result<Value, ToolError>>;

    /// Whether a call runs statements of its own (`memory.get` reads, `memory.delete`
    /// deletes). A tool whose calls run none (`system.echo`; `memory.write`, whose item is
    /// written with its job) says so, and its queued jobs are run and finished during their
    /// claim, in the claim's transaction, instead of taking a lease.
    fn runs_statements(&self) -> bool {
        true
    }
}
