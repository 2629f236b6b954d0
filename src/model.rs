//! Domain vocabulary shared by every layer: job states, engines, and a finished job's outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use uuid::Uuid;

use crate::ids::JobId;

/// The life of a job: `scheduled` (for later; queued when due), `queued` (waiting for a
/// worker), `running` (a worker holds the lease), `awaiting_callback` (a flow will report
/// back), then final: `succeeded`, `failed`, `cancelled`, `timed_out` (only a retry sends a
/// failed, timed-out or cancelled job back to `queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "job_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Scheduled,
    Queued,
    Running,
    AwaitingCallback,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Scheduled,
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

    /// A job that ended without success may be sent back to the queue (`retry`).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
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
    /// Acting for the operator without a key: the configuration file (its schedules and the
    /// jobs they file) or the command line. Audited as `operator`, not `anonymous`.
    pub operator: bool,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            ..Self::default()
        }
    }

    pub fn actor_kind(&self) -> ActorKind {
        if self.api_key_id.is_some() {
            ActorKind::ApiKey
        } else if self.operator {
            ActorKind::Operator
        } else {
            ActorKind::Anonymous
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

/// Declares an enum of fixed audit values with its one list (`ALL`) and their text, which is
/// what the database's CHECK constraints admit (a test compares the two).
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Stored as text, checked by the column's CHECK constraint.
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("`{s}` is not a {}", stringify!($name)))
            }
        }
    };
}

vocabulary! {
    /// What an audit event records (`audit_events.kind`). Job state changes keep their short
    /// names; the rest are namespaced.
    AuditKind {
        Created = "created",
        Claimed = "claimed",
        RetryScheduled = "retry_scheduled",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        CancelRequested = "cancel_requested",
        Cancelled = "cancelled",
        Rescued = "rescued",
        Released = "released",
        /// An engine did not run the job yet (its flow's rate limit): back to the queue until
        /// `run_at`, the attempt not counted.
        Deferred = "deferred",
        AwaitingCallback = "awaiting_callback",
        CallbackReceived = "callback_received",
        /// An engine reported how far a running job got (MCP progress, SSH output).
        Progress = "progress",
        /// A person sent a finished job back to the queue (`POST /jobs/{id}/retry`).
        Retried = "retried",
        /// A scheduled job's time came: it is queued now.
        Due = "due",
        ScheduleCreated = "schedule.created",
        /// Paused, resumed or changed (`detail.action`).
        ScheduleChanged = "schedule.changed",
        ScheduleDeleted = "schedule.deleted",
        /// A schedule filed a job for one of its fire times (or on demand).
        ScheduleFired = "schedule.fired",
        /// A fire time passed without a job: the previous run was still going (`overlap`).
        ScheduleSkipped = "schedule.skipped",
        SshRun = "ssh.run",
        SshExit = "ssh.exit",
        SshDryRun = "ssh.dry_run",
        SshRefused = "ssh.refused",
        SshHostKeyMismatch = "ssh.host_key_mismatch",
        SshConnectFailed = "ssh.connect_failed",
        /// `fs.write` wrote a file in a root, or refused to (`decision`: `ok` or `refused`).
        FsWrite = "fs.write",
        /// `fs.delete` removed an entry of a root, or refused to.
        FsDelete = "fs.delete",
        CallbackOut = "callback.out",
        CallbackIn = "callback.in",
        AuthFailed = "auth.failed",
        KeyCreated = "key.created",
        KeyRevoked = "key.revoked",
        SecretGenerated = "callbacks.secret_generated",
        SecretRead = "callbacks.secret_read",
        /// A client registered itself (RFC 7591) or its metadata document was fetched.
        OauthClientRegistered = "oauth.client_registered",
        /// A person approved (`approved`) or denied (`denied`) a client on the consent page.
        OauthGrant = "oauth.grant",
        OauthTokenIssued = "oauth.token_issued",
        OauthTokenRefreshed = "oauth.token_refreshed",
        OauthTokenRevoked = "oauth.token_revoked",
        /// A grant ended: revoked, a refresh token or code reused, its key revoked.
        OauthGrantRevoked = "oauth.grant_revoked",
        /// A token or authorization request refused (the reason in `error`).
        OauthRefused = "oauth.refused",
        /// A person signed in to the dashboard with an API key, or out.
        UiSignedIn = "ui.signed_in",
        UiSignedOut = "ui.signed_out",
        /// Retention dropped a whole partition of job history or of this trail (`target`: the
        /// partition; `detail`: its table, time range and rows). The only way rows leave.
        RetentionDropped = "retention.dropped",
    }
}

vocabulary! {
    /// Who did what an audit event records (`audit_events.actor_kind`).
    ActorKind {
        /// A client with an API key.
        ApiKey = "api_key",
        /// A client while the API is open (no key was ever created).
        Anonymous = "anonymous",
        /// A server instance (claims, completions, deliveries).
        Instance = "instance",
        /// An instance's maintenance (lease rescue, deadlines).
        Maintenance = "maintenance",
        /// A flow reporting back through `/callbacks/ingest`.
        Flow = "flow",
        /// Someone at the command line (`orchestrator keys …`), or the configuration file
        /// (its schedules, and the jobs they file).
        Operator = "operator",
        /// An OAuth client at the token or revocation endpoint.
        OauthClient = "oauth_client",
    }
}

vocabulary! {
    /// How an audited action ended (`audit_events.outcome`), where it has an outcome.
    Outcome {
        /// Key and secret administration.
        Ok = "ok",
        /// Refused: a bad key (`auth.failed`), an ingest that did not verify (`callback.in`).
        Rejected = "rejected",
        /// `callback.in`: applied.
        Accepted = "accepted",
        /// `callback.in`: the same report again; nothing changed.
        Duplicate = "duplicate",
        /// `callback.out`: a 2xx.
        Delivered = "delivered",
        /// `callback.out`: will be tried again.
        Retry = "retry",
        /// `callback.out`: the receiver answered 410.
        Gone = "gone",
        /// `callback.out`: every scheduled attempt failed.
        Exhausted = "exhausted",
        /// `callback.out`: not sent (a refused address); SSH: refused by policy.
        Refused = "refused",
        /// SSH: a dangerous command answered with a dry run.
        DryRun = "dry_run",
        /// SSH: about to run.
        Run = "run",
        /// SSH: about to run a dangerous command the caller confirmed.
        RunConfirmed = "run_confirmed",
        /// SSH: ran to its end (any exit code).
        Ran = "ran",
        /// SSH: stopped at its time limit.
        TimedOut = "timed_out",
        /// SSH: stopped because the job was cancelled.
        Cancelled = "cancelled",
        /// SSH: the host refused to run it.
        RefusedByHost = "refused_by_host",
        /// SSH: the connection dropped while it ran.
        ConnectionLost = "connection_lost",
        /// `oauth.grant`: the person approved the client.
        Approved = "approved",
        /// `oauth.grant`: the person denied the client.
        Denied = "denied",
    }
}

vocabulary! {
    /// Which way a callback went: `out` (a delivery we sent), `in` (a flow reporting back).
    Direction {
        In = "in",
        Out = "out",
    }
}
