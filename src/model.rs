//! Domain vocabulary shared by every layer: job states, engines, and a finished job's outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use uuid::Uuid;

use crate::ids::JobId;

/// The life of a job. Who moves it where:
/// - `queued`: intake (async requests), retry scheduling, lease rescue and shutdown release.
///   Left when a worker claims it (`running`) or it is cancelled.
/// - `running`: a worker (or the intake, for a request that waits and finds a free slot) holds
///   the lease. Left by the fenced completion of that attempt, or by lease rescue.
/// - `awaiting_callback`: a flow accepted the work and will report through `/callbacks/ingest`.
/// - `succeeded`, `failed`, `cancelled`, `timed_out`: final; nothing moves a job out of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "job_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    AwaitingCallback,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::AwaitingCallback,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::TimedOut,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::AwaitingCallback => "awaiting_callback",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Which engine runs an intent. `auto` is only ever requested, never stored as the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "job_mode", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Auto,
    Flow,
    Agent,
    Mcp,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Flow, Mode::Agent, Mode::Mcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Flow => "flow",
            Mode::Agent => "agent",
            Mode::Mcp => "mcp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Why a job did not succeed, as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// Stable machine-readable code, e.g. `timed_out`, `not_found`, `tool_failed`.
    pub code: String,
    pub message: String,
}

/// A job in a final state: everything needed to answer the client that waited for it.
#[derive(Debug, Clone)]
pub struct FinishedJob {
    pub id: JobId,
    pub intent: String,
    pub mode: Mode,
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub callback_url: Option<String>,
    pub duration_ms: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl FinishedJob {
    /// The outcome as clients see it (200 answers, callbacks): `success`, `error`, or
    /// `dry_run` when the tool declined to act.
    pub fn client_status(&self) -> &'static str {
        match self.status {
            JobStatus::Succeeded
                if self
                    .result
                    .as_ref()
                    .and_then(|r| r.get("dry_run"))
                    .and_then(Value::as_bool)
                    == Some(true) =>
            {
                "dry_run"
            }
            JobStatus::Succeeded => "success",
            _ => "error",
        }
    }
}

pub fn job_error(code: Option<String>, message: Option<String>) -> Option<JobError> {
    code.map(|code| JobError {
        code,
        message: message.unwrap_or_default(),
    })
}

/// One problem with one field of a request, named by its path (`inputs.tags[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// A problem code of its own for the whole answer (e.g. `unknown_host`), when a tool's
    /// check has one; otherwise the request's usual code applies.
    #[serde(skip)]
    #[schema(ignore)]
    pub code: Option<&'static str>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            code: None,
        }
    }

    pub fn with_code(self, code: &'static str) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }
}

/// Who asks: recorded on the job and in the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// None for anonymous access (no keys configured).
    pub api_key_id: Option<Uuid>,
    /// The key's name, or `anonymous`.
    pub name: String,
    pub client_addr: Option<String>,
    pub request_id: Option<String>,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            ..Self::default()
        }
    }

    pub fn actor_kind(&self) -> &'static str {
        if self.api_key_id.is_some() {
            "api_key"
        } else {
            "anonymous"
        }
    }
}

/// One thing wrong with the configuration: the setting (`ssh.hosts."web-1".key_file`) and why.
/// Validation reports every one at once; setting up a tool fails with the first it meets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigProblem {
    pub field: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
