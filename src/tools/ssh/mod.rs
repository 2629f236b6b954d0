//! `ssh.exec` and `ssh.exec.peek`: commands on configured hosts over SSH (russh).
//!
//! - `ssh.exec.peek` runs read-only diagnostics: one program from the allowlist, its arguments
//!   checked, the paths it names kept away from secrets (and, per host, inside `allow_paths`),
//!   sent as quoted words so the remote shell runs exactly what was checked.
//! - `ssh.exec` runs any command, but one the classifier flags as destructive only runs with
//!   `confirm_dangerous: true`; otherwise the job is a dry run that says why.
//!
//! Every decision (ran, refused, dry run, host key rejected) goes into the job's history before
//! anything is sent, and the outcome after. Host keys are pinned; nothing is sent to a host
//! whose key does not match.

pub mod allowlist;
mod classifier;
mod client;
pub mod config;
mod exec;
mod paths;
mod pool;
pub mod shell;

pub use classifier::dangers;
pub use config::{HostConfig, HostPeekConfig, SshConfig};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec};
use crate::{
    catalog::IntentOverride,
    model::{AuditKind, ConfigProblem, FieldError, Outcome},
    store::Store,
};
use allowlist::Allowlist;
use client::{ConnectError, Target};
use exec::RunError;
use pool::{HostPool, OpenError, Pools};

pub const EXEC: &str = "ssh.exec";
pub const PEEK: &str = "ssh.exec.peek";

const MAX_COMMAND_CHARS: usize = 8192;
const MAX_TIMEOUT_MS: u64 = 24 * 3_600_000;

/// The SSH tools, or none when no host is configured. Fails when a host's key cannot be
/// loaded, so a broken inventory stops the server at start rather than a job later.
pub fn tools(
    config: &SshConfig,
    overrides: &BTreeMap<String, IntentOverride>,
    store: &Store,
) -> Result<Vec<Arc<dyn Tool>>, ConfigProblem> {
    if config.hosts.is_empty() {
        return Ok(Vec::new());
    }
    let targets = config
        .hosts
        .iter()
        .map(|(name, host)| Target::load(name, host))
        .collect::<Result<Vec<_>, _>>()?;
    let path_policies = config
        .hosts
        .iter()
        .map(|(name, host)| {
            paths::Policy::new(&host.peek)
                .map(|p| (name.clone(), p))
                .map_err(|e| ConfigProblem::new(format!("ssh.hosts.\"{name}\".peek.deny_paths"), e))
        })
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared {
        pools: Pools::new(targets, config.idle_timeout),
        allowlist: Allowlist::new(&config.peek),
        paths: path_policies,
        store: store.clone(),
        max_output_bytes: config.max_output_bytes,
    });
    let spec = |name: &str, description: &str, effect, schema| {
        let timeout = default_attempt_timeout(config, name);
        let budget = overrides
            .get(name)
            .and_then(|o| o.timeout)
            .unwrap_or(timeout);
        let spec = ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema: schema,
            effect,
            timeout,
            max_attempts: 3,
            priority: 0,
            public: false,
            // Read-only `peek` commands cannot destroy anything; `exec` runs what it is given.
            destructive: name == EXEC,
            open_world: true,
            output_schema: None,
        };
        (spec, budget)
    };
    let hosts = host_list(&shared.pools);
    let (exec_spec, exec_budget) = spec(
        EXEC,
        "Run a shell command on a configured host over SSH. Destructive commands (rm -rf on \
         system paths, mkfs, reboot, …) are not run unless confirm_dangerous is true: the job \
         is a dry run that lists the reasons.",
        Effect::Write,
        inputs_schema(&hosts, true),
    );
    let (peek_spec, peek_budget) = spec(
        PEEK,
        "Run a read-only diagnostic command on a configured host over SSH: one allowlisted \
         program (ls, cat, tail, grep, df, ps, journalctl, systemctl status, …) with checked \
         arguments; no shell syntax. Paths that may hold secrets (.ssh, /etc/shadow, private \
         keys, .env, /proc/*/environ, …) are refused, and a host may allow only some \
         directories.",
        Effect::Read,
        inputs_schema(&hosts, false),
    );
    Ok(vec![
        Arc::new(SshTool {
            shared: shared.clone(),
            spec: exec_spec,
            budget: exec_budget,
        }),
        Arc::new(SshTool {
            shared,
            spec: peek_spec,
            budget: peek_budget,
        }),
    ])
}

/// Long enough for the slowest allowed command on any host the intent may use, plus the
/// connection: the command's own limit should end it, not the attempt's.
fn default_attempt_timeout(config: &SshConfig, intent: &str) -> Duration {
    let worst = config
        .hosts
        .values()
        .filter(|h| h.allows(intent))
        .map(|h| h.connect_timeout + h.max_command_timeout)
        .max()
        .unwrap_or_default();
    worst + Duration::from_secs(10)
}

fn host_list(pools: &Pools) -> String {
    pools.names().collect::<Vec<_>>().join(", ")
}

fn inputs_schema(hosts: &str, exec: bool) -> Value {
    let mut properties = json!({
        "host": {"type": "string", "minLength": 1,
                 "description": format!("A configured host: {hosts}.")},
        "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_CHARS,
                    "description": if exec {
                        "The command line, run by the user's login shell on the host."
                    } else {
                        "One program and its arguments (quotes allowed; no pipes, `;`, \
                         redirections, `$`, globs or other shell syntax)."
                    }},
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS,
                       "description": "The command's time limit (default: the host's; at \
                                       most the host's max_command_timeout)."},
    });
    properties["stream"] = json!({
        "type": "boolean", "default": false,
        "description": "Report the output as it comes, as the job's progress events \
                        (streams of the job carry them)."
    });
    if exec {
        properties["confirm_dangerous"] = json!({
            "type": "boolean", "default": false,
            "description": "Run it even if it is flagged as destructive."
        });
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": ["host", "command"],
        "additionalProperties": false
    })
}

/// What both tools share: the host pools, the peek allowlist and path policies (by host), the
/// store for the history.
struct Shared {
    pools: Pools,
    allowlist: Allowlist,
    paths: BTreeMap<String, paths::Policy>,
    store: Store,
    max_output_bytes: usize,
}

pub struct SshTool {
    shared: Arc<Shared>,
    spec: ToolSpec,
    /// The intent's attempt timeout: the work must end before it.
    budget: Duration,
}

#[derive(Deserialize)]
struct Inputs {
    host: String,
    command: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    confirm_dangerous: bool,
    #[serde(default)]
    stream: bool,
}

/// Why a request is refused before any job exists (or, re-checked, before anything is sent).
struct Refusal {
    field: &'static str,
    /// A problem code of its own (`unknown_host`, …); none: plain `invalid_inputs`.
    code: Option<&'static str>,
    message: String,
}

impl Refusal {
    fn field_error(self) -> FieldError {
        let e = FieldError::new(self.field, self.message);
        match self.code {
            Some(code) => e.with_code(code),
            None => e,
        }
    }

    fn code(&self) -> &'static str {
        self.code.unwrap_or("invalid_inputs")
    }

    fn tool_error(&self) -> ToolError {
        ToolError::permanent(self.code(), self.message.clone())
    }
}

/// What will be sent, and why it may be.
struct Plan {
    command: String,
    argv: Option<Vec<String>>,
    /// `ssh.exec` commands flagged as destructive (run only when confirmed).
    dangers: Vec<String>,
}

impl SshTool {
    fn is_peek(&self) -> bool {
        self.spec.name == PEEK
    }

    fn host(&self, name: &str) -> Result<&Arc<HostPool>, Refusal> {
        let Some(pool) = self.shared.pools.get(name) else {
            return Err(Refusal {
                field: "inputs.host",
                code: Some("unknown_host"),
                message: format!(
                    "unknown host `{name}`; configured hosts: {}",
                    host_list(&self.shared.pools)
                ),
            });
        };
        if !pool.target.config.allows(&self.spec.name) {
            return Err(Refusal {
                field: "inputs.host",
                code: Some("host_not_allowed"),
                message: format!("host `{name}` may not be used by {}", self.spec.name),
            });
        }
        Ok(pool)
    }

    /// The checks that hold at intake and again when the job runs (another instance, or a
    /// changed configuration, may have accepted it).
    fn plan(&self, input: &Inputs) -> Result<(&Arc<HostPool>, Plan), Refusal> {
        let pool = self.host(&input.host)?;
        let max = pool.target.config.max_command_timeout;
        if input
            .timeout_ms
            .is_some_and(|t| Duration::from_millis(t) > max)
        {
            return Err(Refusal {
                field: "inputs.timeout_ms",
                code: None,
                message: format!(
                    "must be at most {} (the host's max_command_timeout)",
                    max.as_millis()
                ),
            });
        }
        if !self.is_peek() {
            return Ok((
                pool,
                Plan {
                    command: input.command.clone(),
                    argv: shell_words(&input.command),
                    dangers: dangers(&input.command),
                },
            ));
        }
        let argv = shell::plain_argv(&input.command).map_err(|e| Refusal {
            field: "inputs.command",
            code: Some(e.code()),
            message: e.to_string(),
        })?;
        self.shared.allowlist.check(&argv).map_err(|e| Refusal {
            field: "inputs.command",
            code: Some("command_not_allowed"),
            message: e.to_string(),
        })?;
        // A recursive grep comes back with exclusions added: what runs is what was checked.
        // Every configured host has a policy; were one missing, nothing would pass.
        let refused = |code, message| Refusal {
            field: "inputs.command",
            code: Some(code),
            message,
        };
        let argv = match self.shared.paths.get(&input.host) {
            Some(policy) => policy
                .check(&argv)
                .map_err(|e| refused(e.code, e.message))?,
            None => {
                return Err(refused(
                    paths::PATH_NOT_ALLOWED,
                    format!("no path policy for host `{}`", input.host),
                ));
            }
        };
        Ok((
            pool,
            Plan {
                command: shell::join(&argv),
                argv: Some(argv),
                dangers: Vec::new(),
            },
        ))
    }

    async fn record(
        &self,
        ctx: &ToolContext,
        kind: AuditKind,
        detail: Value,
    ) -> Result<(), ToolError> {
        self.shared
            .store
            .append_job_event(ctx.job_id, ctx.attempt, kind, &detail)
            .await
            .map_err(ToolError::from)
    }

    /// After the fact: a failure to write is logged, not returned (the command already ran,
    /// and failing the attempt could run it again).
    async fn record_outcome(&self, ctx: &ToolContext, detail: Value) {
        if let Err(e) = self.record(ctx, AuditKind::SshExit, detail).await {
            tracing::warn!(code = %e.code, "could not record the outcome of an ssh command");
        }
    }

    async fn run(&self, ctx: &ToolContext, input: Inputs) -> ToolResult {
        let started = tokio::time::Instant::now();
        let detail = |plan: Option<&Plan>| {
            json!({
                "host": input.host,
                "command": plan.map_or(&input.command, |p| &p.command),
                "argv": plan.and_then(|p| p.argv.as_ref()),
            })
        };
        let (pool, plan) = match self.plan(&input) {
            Ok(p) => p,
            Err(refusal) => {
                let mut d = detail(None);
                d["decision"] = json!(Outcome::Refused);
                d["reason"] = json!(refusal.message);
                d["code"] = json!(refusal.code());
                self.record(ctx, AuditKind::SshRefused, d).await?;
                return Err(refusal.tool_error());
            }
        };
        if !plan.dangers.is_empty() && !input.confirm_dangerous {
            let mut d = detail(Some(&plan));
            d["decision"] = json!(Outcome::DryRun);
            d["reasons"] = json!(plan.dangers);
            self.record(ctx, AuditKind::SshDryRun, d).await?;
            return Ok(json!({
                "dry_run": true,
                "command": plan.command,
                "reasons": plan.dangers,
                "note": "Set confirm_dangerous=true to run it",
            })
            .into());
        }

        let host = &pool.target.config;
        // Leave the attempt a moment to report before its own timeout stops it.
        let budget_end = started + self.budget - (self.budget / 10).min(Duration::from_secs(2));
        let lease = match tokio::time::timeout_at(budget_end, pool.open(budget_end)).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => return Err(self.not_connected(ctx, e, detail(Some(&plan))).await),
            Err(_) => {
                let e = OpenError::Busy {
                    host: input.host.clone(),
                    max: host.max_sessions,
                };
                return Err(self.not_connected(ctx, e, detail(Some(&plan))).await);
            }
        };

        let mut d = detail(Some(&plan));
        d["decision"] = json!(if plan.dangers.is_empty() {
            Outcome::Run
        } else {
            Outcome::RunConfirmed
        });
        if !plan.dangers.is_empty() {
            d["reasons"] = json!(plan.dangers);
        }
        d["reused_connection"] = json!(!lease.fresh);
        self.record(ctx, AuditKind::SshRun, d).await?;

        let limit = input
            .timeout_ms
            .map_or(host.command_timeout, Duration::from_millis);
        let deadline = (tokio::time::Instant::now() + limit).min(budget_end);
        let outcome = exec::run(
            lease,
            &plan.command,
            deadline,
            &ctx.cancel,
            self.shared.max_output_bytes,
            input.stream.then_some(&ctx.progress),
        )
        .await;
        let mut d = detail(Some(&plan));
        match outcome {
            Ok(out) => {
                d["decision"] = json!(Outcome::Ran);
                d["exit_code"] = json!(out.exit_code);
                d["signal"] = json!(out.signal);
                d["duration_ms"] = json!(out.duration_ms);
                self.record_outcome(ctx, d).await;
                let mut result = json!({
                    "host": input.host,
                    "command": plan.command,
                    "stdout": out.stdout.text(),
                    "stderr": out.stderr.text(),
                    "exit_code": out.exit_code,
                    "duration_ms": out.duration_ms,
                    "truncated": {"stdout": out.stdout.truncated, "stderr": out.stderr.truncated},
                });
                if let Some(signal) = out.signal {
                    result["signal"] = json!(signal);
                }
                Ok(result.into())
            }
            Err(e) => {
                d["decision"] = json!(match e {
                    RunError::TimedOut(_) => Outcome::TimedOut,
                    RunError::Cancelled => Outcome::Cancelled,
                    RunError::Refused => Outcome::RefusedByHost,
                    RunError::Lost(_) => Outcome::ConnectionLost,
                });
                d["reason"] = json!(e.to_string());
                self.record_outcome(ctx, d).await;
                Err(self.run_error(e))
            }
        }
    }

    fn run_error(&self, e: RunError) -> ToolError {
        let message = e.to_string();
        match e {
            // Not retried: the command ran for its whole time once, and may have changed
            // something; the job ends `timed_out`.
            RunError::TimedOut(_) => ToolError {
                retryable: false,
                ..ToolError::timed_out(message)
            },
            RunError::Cancelled => ToolError::permanent("cancelled", message),
            RunError::Refused => ToolError::permanent("ssh_exec_refused", message),
            // Read-only commands are safe to run again; others may have run already.
            RunError::Lost(_) if self.is_peek() => {
                ToolError::transient("ssh_connection_lost", message)
            }
            RunError::Lost(_) => ToolError::permanent("ssh_connection_lost", message),
        }
    }

    /// Nothing was sent: a host key mismatch and refused credentials are permanent (another
    /// attempt meets the same host), the rest is worth another attempt.
    async fn not_connected(&self, ctx: &ToolContext, e: OpenError, mut detail: Value) -> ToolError {
        let message = e.to_string();
        let (kind, error) = match &e {
            OpenError::Connect(ConnectError::HostKeyMismatch { .. }) => (
                AuditKind::SshHostKeyMismatch,
                ToolError::permanent("host_key_mismatch", message.clone()),
            ),
            OpenError::Connect(ConnectError::AuthFailed { .. }) => (
                AuditKind::SshConnectFailed,
                ToolError::permanent("ssh_auth_failed", message.clone()),
            ),
            OpenError::Connect(ConnectError::Timeout { .. })
            | OpenError::Connect(ConnectError::Network { .. }) => (
                AuditKind::SshConnectFailed,
                ToolError::transient("ssh_connect_failed", message.clone()),
            ),
            OpenError::Busy { .. } => (
                AuditKind::SshConnectFailed,
                ToolError::transient("ssh_busy", message.clone()),
            ),
            OpenError::Channel { .. } => (
                AuditKind::SshConnectFailed,
                ToolError::transient("ssh_channel_failed", message.clone()),
            ),
        };
        detail["decision"] = json!(Outcome::Refused);
        detail["reason"] = json!(message);
        detail["code"] = json!(error.code);
        if let Err(e) = self.record(ctx, kind, detail).await {
            return e;
        }
        error
    }
}

/// The words of a command line for the history (operators kept as they are written), or none
/// when it cannot be read.
fn shell_words(command: &str) -> Option<Vec<String>> {
    let tokens = shell::lex(command).ok()?;
    Some(
        tokens
            .into_iter()
            .map(|t| match t {
                shell::Token::Word(w) => w.text,
                shell::Token::Op(op) => op.as_str().to_owned(),
            })
            .collect(),
    )
}

fn parse(inputs: &Value) -> Result<Inputs, ToolError> {
    Inputs::deserialize(inputs).map_err(|e| ToolError::permanent("invalid_inputs", e.to_string()))
}

impl Tool for SshTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// One key per host, shared by every SSH intent, at its `max_sessions`: commands beyond
    /// it wait in the queue (on any instance) instead of failing `ssh_busy`.
    fn concurrency_of(&self, inputs: &Value) -> Option<crate::catalog::ConcurrencyKey> {
        let host = inputs.get("host")?.as_str()?;
        let pool = self.shared.pools.get(host)?;
        Some(crate::catalog::ConcurrencyKey {
            key: format!("ssh:{host}"),
            limit: pool.target.config.max_sessions.clamp(1, i32::MAX as usize) as i32,
        })
    }

    fn check_inputs(&self, inputs: &Value) -> Result<(), Vec<FieldError>> {
        let input = parse(inputs).map_err(|e| vec![FieldError::new("inputs", e.message)])?;
        self.plan(&input)
            .map(|_| ())
            .map_err(|r| vec![r.field_error()])
    }

    /// Refused at intake like at run time: `ssh.refused` with the host, command and reason.
    fn refusal_audit(&self, inputs: &Value, errors: &[FieldError]) -> Option<(AuditKind, Value)> {
        let error = errors.iter().find(|e| e.code.is_some())?;
        Some((
            AuditKind::SshRefused,
            json!({
                "host": inputs.get("host"),
                "command": inputs.get("command"),
                "decision": Outcome::Refused,
                "reason": error.message,
                "code": error.code,
                "stage": "intake",
            }),
        ))
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move { self.run(ctx, parse(inputs)?).await }.boxed()
    }
}
