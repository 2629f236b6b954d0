//! Configuration: documented defaults, then an optional TOML file, then `ORCH__SECTION__KEY`
//! environment variables; `DATABASE_URL` always wins for the database. Validated once at start.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use zeroize::Zeroizing;

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Data, Env, Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;
use crate::{
    auth::AuthConfig,
    callbacks::CallbacksConfig,
    db::DatabaseConfig,
    duration::{self, Unit},
    model::ConfigProblem,
    telemetry::{LogConfig, MetricsConfig},
    tools::flow::FlowAuth,
    worker::{HistorySettings, MaintenanceSettings, RetentionConfig, WorkersConfig},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {}", list(problems))]
    Invalid { problems: Vec<ConfigProblem> },
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ConfigProblem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        problems: vec![ConfigProblem::new(field, message)],
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub workers: WorkersConfig,
    pub idempotency: IdempotencyConfig,
    pub callbacks: CallbacksConfig,
    pub auth: AuthConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// `[events]`: live event streams (SSE).
    pub events: crate::live::EventsConfig,
    pub tools: crate::tools::ToolsConfig,
    /// `[flows."<intent>"]`: n8n, ActivePieces or generic webhooks, one intent each.
    pub flows: BTreeMap<String, crate::tools::flow::FlowConfig>,
    pub routing: crate::catalog::routing::RoutingConfig,
    pub mcp: crate::tools::mcp::McpConfig,
    /// `[oauth]`: the access tokens `/mcp` accepts besides API keys.
    pub oauth: crate::oauth::OauthConfig,
    pub ssh: crate::tools::ssh::SshConfig,
    /// `[rate_limits]`: requests per API key and per intent.
    pub rate_limits: crate::limits::RateLimitsConfig,
    /// `[[schedules]]`: intents filed on a cron timetable.
    pub schedules: Vec<crate::schedules::ScheduleConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base of `status_url`, callback URLs and the OpenAPI `servers` entry.
    pub public_url: String,
    /// How long `POST /orchestrate` waits for a job when the request does not say.
    #[serde(with = "duration::human")]
    pub sync_timeout: Duration,
    /// The most a request may ask to wait (`timeout_ms`, `Prefer: wait=N`).
    #[serde(with = "duration::human")]
    pub max_sync_timeout: Duration,
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT: how long running jobs and requests may take to finish.
    #[serde(with = "duration::human")]
    pub shutdown_grace: Duration,
    /// Serve everything under this path (`/orchestrator`) behind a reverse proxy that passes
    /// the prefix on; the dashboard's links carry it. Empty: at the root.
    pub base_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            public_url: "http://127.0.0.1:8080".into(),
            sync_timeout: Duration::from_secs(8),
            max_sync_timeout: Duration::from_secs(60),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            base_path: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key (sent or derived) answers with the stored result.
    #[serde(with = "duration::human")]
    pub ttl: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl ServerConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Err(e) = url::Url::parse(&self.public_url) {
            out.push(ConfigProblem::new("server.public_url", e.to_string()));
        }
        if self.sync_timeout > self.max_sync_timeout {
            out.push(ConfigProblem::new(
                "server.sync_timeout_ms",
                "must not exceed server.max_sync_timeout_ms",
            ));
        }
        if !self.base_path.is_empty()
            && (!self.base_path.starts_with('/')
                || self.base_path.ends_with('/')
                || self.base_path.contains("//")
                || !self
                    .base_path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~')))
        {
            out.push(ConfigProblem::new(
                "server.base_path",
                "must be empty or a path like /orchestrator: a leading /, no trailing /, \
                 letters, digits and -_.~",
            ));
        }
        if self.max_body_bytes < 1024 {
            out.push(ConfigProblem::new(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        out
    }
}

impl IdempotencyConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        if self.ttl.is_zero() {
            vec![ConfigProblem::new(
                "idempotency.ttl_hours",
                "must be positive",
            )]
        } else {
            Vec::new()
        }
    }
}

impl Config {
    /// Every secret value this configuration names — the callback secrets (and their keys), and
    /// what the flows', SSH hosts' and MCP servers' `*_env` variables hold — plus `signing`
    /// (the signing secrets in use, which may have been generated): what a `Redactor` cuts out.
    pub fn secret_values<'a>(
        &self,
        signing: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Zeroizing<String>> {
        let mut secrets: Vec<Zeroizing<String>> = Vec::new();
        let mut whsec = |s: &str| {
            secrets.push(Zeroizing::new(s.to_owned()));
            if let Some(key) = s.strip_prefix("whsec_") {
                secrets.push(Zeroizing::new(key.to_owned()));
            }
        };
        signing.into_iter().for_each(&mut whsec);
        self.callbacks.ingest_keys().for_each(|s| whsec(s.expose()));
        let env = |name: &str| std::env::var(name).ok().map(Zeroizing::new);
        for auth in self.flows.values().filter_map(|f| f.auth.as_ref()) {
            secrets.extend(auth.env_vars().into_iter().filter_map(env));
            if let FlowAuth::Basic {
                username,
                password_env,
            } = auth
                && let Some(password) = env(password_env)
            {
                secrets.push(Zeroizing::new(
                    STANDARD.encode(format!("{username}:{}", password.as_str())),
                ));
            }
        }
        for host in self.ssh.hosts.values() {
            secrets.extend(host.passphrase_env.as_deref().and_then(env));
        }
        for server in self.mcp.servers.values() {
            for var in server.header_env.values() {
                if let Some(value) = env(var) {
                    // `Bearer <token>`: the token alone may come back too.
                    if let Some((_, token)) = value.split_once(' ') {
                        secrets.push(Zeroizing::new(token.to_owned()));
                    }
                    secrets.push(value);
                }
            }
        }
        secrets
    }

    /// What maintenance needs of the configuration.
    pub fn maintenance(&self) -> MaintenanceSettings {
        MaintenanceSettings {
            every: self.workers.maintenance_interval,
            remember_ingest_ids: self.callbacks.tolerance * 2,
            payload_days: self.retention.payload_days,
            history: HistorySettings {
                partition_days: self.retention.partition_days,
                jobs_days: self.retention.jobs_days,
                audit_days: self.retention.audit_days,
            },
            // A session lives on its instance until idle; the stored copy, which only a
            // restore on another instance touches, is kept a day past that at least.
            mcp_session_retention: self.mcp.session_idle.max(Duration::from_secs(24 * 3600)),
        }
    }

    /// Defaults, then the TOML file (if any), then `ORCH__…` variables, then `DATABASE_URL`.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        if let Some(path) = file
            && !path.exists()
        {
            return Err(invalid(
                "--config",
                format!("{} does not exist", path.display()),
            ));
        }
        let sources = layered(file.map(Toml::file), Env::prefixed("ORCH__").split("__"));
        let mut config: Config = sources.extract().map_err(Box::new)?;
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            config.database.url = Some(url);
        }
        // `url = ""` (or an empty ORCH__DATABASE__URL) means not configured.
        if config.database.url.as_deref() == Some("") {
            config.database.url = None;
        }
        config.validate()?;
        Ok(config)
    }

    /// Every problem of every section, so an operator fixes them in one go.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.server.problems();
        out.extend(self.database.problems());
        out.extend(self.workers.problems());
        out.extend(self.retention.problems());
        out.extend(self.retention_outlives_idempotency());
        out.extend(self.metrics.problems());
        out.extend(self.events.problems());
        out.extend(self.idempotency.problems());
        out.extend(self.callbacks.problems());
        for (intent, flow) in &self.flows {
            out.extend(flow.problems(intent));
        }
        out.extend(self.routing.problems());
        out.extend(self.mcp.problems());
        out.extend(self.oauth.problems());
        out.extend(self.ssh.problems());
        out.extend(self.tools.problems());
        out.extend(self.rate_limits.problems());
        out.extend(crate::tools::flow::config::shared_url_problems(&self.flows));
        out.extend(crate::schedules::ScheduleConfig::problems(&self.schedules));
        out
    }

    /// A replayed idempotency key answers with its job, so no job may leave before its key.
    fn retention_outlives_idempotency(&self) -> Option<ConfigProblem> {
        let days = self.retention.jobs_days;
        (days > 0 && Duration::from_secs(u64::from(days) * 86_400) < self.idempotency.ttl).then(
            || {
                ConfigProblem::new(
                    "retention.jobs_days",
                    "must keep jobs at least as long as idempotency.ttl (a replayed key answers with its job)",
                )
            },
        )
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Defaults, then the file, then the environment, each source read with [`RENAMED`] keys under
/// their new names.
fn layered(file: Option<Data<Toml>>, env: Env) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        figment = figment.merge(RenamedKeys(file));
    }
    figment.merge(RenamedKeys(env))
}

/// The keys durations had before they took human values, by the table they sit in (`*`: each
/// entry of a map). They still work, a bare integer in the unit the key's name ends in
/// (`lease_ms = 30000`, `ttl_hours = 24`, `retry_schedule_ms = [5000, …]`).
const RENAMED: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "sync_timeout_ms",
            "max_sync_timeout_ms",
            "shutdown_grace_ms",
        ],
    ),
    ("database", &["acquire_timeout_ms", "connect_timeout_ms"]),
    (
        "workers",
        &[
            "poll_interval_ms",
            "lease_ms",
            "heartbeat_interval_ms",
            "maintenance_interval_ms",
            "retry_base_ms",
            "retry_max_ms",
        ],
    ),
    ("idempotency", &["ttl_hours"]),
    (
        "callbacks",
        &[
            "timeout_ms",
            "retry_schedule_ms",
            "max_retry_after_ms",
            "tolerance_secs",
        ],
    ),
    ("metrics", &["gauge_interval_ms"]),
    ("mcp", &["call_wait_ms"]),
    ("tools.overrides.*", &["timeout_ms"]),
    (
        "flows.*",
        &["timeout_ms", "callback_deadline_ms", "breaker_open_ms"],
    ),
    (
        "mcp.servers.*",
        &[
            "call_timeout_ms",
            "startup_timeout_ms",
            "ping_interval_ms",
            "ping_timeout_ms",
            "restart_backoff_ms",
            "restart_backoff_max_ms",
            "kill_grace_ms",
        ],
    ),
    ("ssh", &["idle_timeout_ms"]),
    (
        "ssh.hosts.*",
        &[
            "connect_timeout_ms",
            "command_timeout_ms",
            "max_command_timeout_ms",
        ],
    ),
];

/// A source read with each [`RENAMED`] key under its new name and its integers as durations
/// (`lease_ms = 2000` is read as `lease = "2s"`). Done per source, before sources merge, so a
/// later source overrides an earlier one whichever spelling each uses (an alias would leave
/// both keys in the merged data: a duplicate field).
struct RenamedKeys<P>(P);

impl<P: Provider> Provider for RenamedKeys<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            for (table, keys) in RENAMED {
                let place: Vec<&str> = table.split('.').collect();
                for_each_table(dict, &place, "", &mut |path, table| {
                    keys.iter().try_for_each(|key| rename(table, path, key))
                })
                .map_err(figment::Error::from)?;
            }
        }
        Ok(data)
    }
}

/// Calls `f` with each table at `place` under `dict` and its path for messages.
fn for_each_table(
    dict: &mut Dict,
    place: &[&str],
    path: &str,
    f: &mut dyn FnMut(&str, &mut Dict) -> Result<(), String>,
) -> Result<(), String> {
    let Some((step, rest)) = place.split_first() else {
        return f(path, dict);
    };
    for (name, value) in dict.iter_mut() {
        let Value::Dict(_, table) = value else {
            continue;
        };
        if *step != "*" && step != name {
            continue;
        }
        let path = match (path, *step) {
            ("", _) => name.clone(),
            (_, "*") => format!("{path}.\"{name}\""),
            _ => format!("{path}.{name}"),
        };
        for_each_table(table, rest, &path, f)?;
    }
    Ok(())
}

/// Moves `old` (say `lease_ms`) to its new name (`lease`), a duration.
fn rename(table: &mut Dict, path: &str, old: &str) -> Result<(), String> {
    let Some(value) = table.remove(old) else {
        return Ok(());
    };
    let (new, unit) = Unit::of_key(old).expect("a renamed key names its unit");
    if table.contains_key(new) {
        return Err(format!("{path}: set {new} or {old}, not both"));
    }
    let value = in_unit(value, unit).map_err(|e| format!("{path}.{old}: {e}"))?;
    table.insert(new.to_owned(), value);
    Ok(())
}

/// An integer (or a list of them) of `unit`, as durations; anything else as it is.
fn in_unit(value: Value, unit: Unit) -> Result<Value, String> {
    let count: u128 = match value {
        Value::Num(_, n) => n.to_u128_lossy().ok_or_else(|| {
            format!(
                "must be a whole number of {} (or a duration such as \"8s\"), not {}",
                unit.name(),
                n.to_actual()
            )
        })?,
        Value::String(_, ref text) => match text.trim().parse() {
            Ok(count) => count,
            Err(_) => return Ok(value),
        },
        Value::Array(_, items) => {
            return items
                .into_iter()
                .map(|item| in_unit(item, unit))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::from);
        }
        other => return Ok(other),
    };
    u64::try_from(count)
        .ok()
        .and_then(|count| unit.times(count))
        .map(|d| Value::from(duration::format(d)))
        .ok_or_else(|| format!("{count} {} is too long", unit.name()))
}

/// The tables of orchestrator.example.toml from `[table]` to the next table outside it, with
/// their commented examples (`# [table…` headers and `# key = value` lines) uncommented: what
/// an operator gets by uncommenting them. For the tests that hold those examples to the code.
#[cfg(test)]
pub(crate) fn uncommented_example(table: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("orchestrator.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let header = format!("[{table}]");
    let prefix = format!("[{table}");
    let mut lines = text.lines().skip_while(|l| *l != header);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {header} in the example"));
    let rest = lines
        .take_while(|l| !l.starts_with('[') || l.starts_with(&prefix))
        .filter_map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with(&prefix) || rest.contains(" = ") => Some(rest),
            Some(_) => None,
            None => Some(l),
        });
    std::iter::once(first)
        .chain(rest)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(config: &Config) -> serde_json::Value {
        serde_json::to_value(config).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_base_path_is_a_clean_absolute_path() {
        for good in ["", "/ops", "/a/b-c_d.e~f"] {
            let server = ServerConfig {
                base_path: good.into(),
                ..Default::default()
            };
            assert!(server.problems().is_empty(), "{good}");
        }
        for bad in ["ops", "/ops/", "/", "//ops", "/ops?x", "/a b", "/ops#"] {
            let server = ServerConfig {
                base_path: bad.into(),
                ..Default::default()
            };
            let problems = server.problems();
            assert_eq!(problems.len(), 1, "{bad}");
            assert!(
                problems[0].to_string().contains("server.base_path"),
                "{bad}"
            );
        }
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("orchestrator.example.toml");
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(&path));
        let config: Config = figment.extract().expect("example config parses");
        config.validate().expect("example config is valid");
        assert_eq!(config.server.sync_timeout, Duration::from_secs(8));
        assert_eq!(config.ssh, crate::tools::ssh::SshConfig::default());
        let mut without_flows = config;
        without_flows.flows.clear();
        assert_eq!(json(&without_flows), json(&Config::default()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = Config::default();
        c.server.max_body_bytes = 10;
        c.workers.claim_batch = 0;
        c.retention.partition_days = 0;
        c.routing.prefer = vec![crate::model::Mode::Auto];
        c.callbacks.signing_secret = "not-a-secret".into();
        let Err(ConfigError::Invalid { problems }) = c.validate() else {
            panic!("invalid");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "server.max_body_bytes",
                "workers.claim_batch",
                "retention.partition_days",
                "callbacks.signing_secret",
                "routing.prefer"
            ]
        );
        let text = ConfigError::Invalid { problems }.to_string();
        assert!(
            text.contains("workers.claim_batch: must be at least 1; "),
            "{text}"
        );
    }

    #[test]
    fn jobs_are_kept_at_least_as_long_as_their_idempotency_keys() {
        let mut c = Config::default();
        c.idempotency.ttl = Duration::from_secs(3 * 86_400);
        c.retention.jobs_days = 2;
        let Err(ConfigError::Invalid { problems }) = c.validate() else {
            panic!("a job would leave before its key");
        };
        assert_eq!(problems[0].field, "retention.jobs_days");
        c.retention.jobs_days = 3;
        assert!(c.validate().is_ok());
        c.retention.jobs_days = 0;
        assert!(c.validate().is_ok(), "0 keeps jobs");
        c.retention.audit_days = u32::MAX;
        let Err(ConfigError::Invalid { problems }) = c.validate() else {
            panic!("past a century");
        };
        assert_eq!(problems[0].field, "retention.audit_days");
    }

    #[test]
    fn rejects_slots_and_prefetch_past_their_bound() {
        let mut c = Config::default();
        c.workers.concurrency = 100_001;
        c.workers.prefetch = usize::MAX;
        let Err(ConfigError::Invalid { problems }) = c.validate() else {
            panic!("invalid");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["workers.concurrency", "workers.prefetch"]);
        c.workers.concurrency = 100_000;
        c.workers.prefetch = 100_000;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_heartbeat_slower_than_half_the_lease() {
        let mut c = Config::default();
        c.workers.heartbeat_interval = c.workers.lease;
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { problems }) if problems.iter().any(|p| p.field == "workers.heartbeat_interval_ms"))
        );
    }

    mod renamed_keys {
        //! The old spellings of durations (`lease_ms = 2000`) and the new ones (`lease = "2s"`),
        //! from a file and from the environment, give the same configuration.

        use super::*;

        /// The configuration from `toml` and the variables `vars` under `prefix` (unique per test:
        /// tests run at once in one process).
        fn load(toml: &str, prefix: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
            for (key, value) in vars {
                // SAFETY: test-only variables no other code reads, set before they are read.
                unsafe { std::env::set_var(format!("{prefix}{key}"), value) };
            }
            layered(Some(Toml::string(toml)), Env::prefixed(prefix).split("__"))
                .extract()
                .map_err(|e| e.to_string())
        }

        /// Every renamed key, each set away from its default.
        const OLD_TOML: &str = r#"
            [server]
            sync_timeout_ms = 2000
            max_sync_timeout_ms = 90000
            shutdown_grace_ms = 1500
            [database]
            acquire_timeout_ms = 250
            connect_timeout_ms = 600
            [workers]
            poll_interval_ms = 200
            lease_ms = 2000
            heartbeat_interval_ms = 500
            maintenance_interval_ms = 200
            retry_base_ms = 50
            retry_max_ms = 400
            [idempotency]
            ttl_hours = 2
            [callbacks]
            timeout_ms = 2000
            retry_schedule_ms = [100, 60000, 5400000]
            max_retry_after_ms = 7200000
            tolerance_secs = 60
            [metrics]
            gauge_interval_ms = 100
            [mcp]
            call_wait_ms = 20000
            [tools.overrides."system.echo"]
            timeout_ms = 1500
            [flows."f.x"]
            engine = "generic"
            url = "http://127.0.0.1:1/hook"
            timeout_ms = 2000
            callback_deadline_ms = 60000
            breaker_open_ms = 90000
            [mcp.servers.s]
            command = "node"
            call_timeout_ms = 1500
            startup_timeout_ms = 20000
            ping_interval_ms = 0
            ping_timeout_ms = 500
            restart_backoff_ms = 100
            restart_backoff_max_ms = 1000
            kill_grace_ms = 1000
            [ssh]
            idle_timeout_ms = 2000
            [ssh.hosts.h]
            address = "10.0.0.5"
            user = "ops"
            connect_timeout_ms = 2500
            command_timeout_ms = 45000
            max_command_timeout_ms = 3600000
        "#;

        const NEW_TOML: &str = r#"
            [server]
            sync_timeout = "2s"
            max_sync_timeout = "1m 30s"
            shutdown_grace = "1.5s"
            [database]
            acquire_timeout = "250ms"
            connect_timeout = "600ms"
            [workers]
            poll_interval = "200ms"
            lease = "2s"
            heartbeat_interval = "500ms"
            maintenance_interval = "200ms"
            retry_base = "50ms"
            retry_max = "400ms"
            [idempotency]
            ttl = "2h"
            [callbacks]
            timeout = "2s"
            retry_schedule = ["100ms", "1m", "1h 30m"]
            max_retry_after = "2h"
            tolerance = "1m"
            [metrics]
            gauge_interval = "100ms"
            [mcp]
            call_wait = "20s"
            [tools.overrides."system.echo"]
            timeout = "1500ms"
            [flows."f.x"]
            engine = "generic"
            url = "http://127.0.0.1:1/hook"
            timeout = "2s"
            callback_deadline = "1m"
            breaker_open = "90s"
            [mcp.servers.s]
            command = "node"
            call_timeout = "1.5s"
            startup_timeout = "20s"
            ping_interval = "0s"
            ping_timeout = "500ms"
            restart_backoff = "100ms"
            restart_backoff_max = "1s"
            kill_grace = "1s"
            [ssh]
            idle_timeout = "2s"
            [ssh.hosts.h]
            address = "10.0.0.5"
            user = "ops"
            connect_timeout = "2.5s"
            command_timeout = "45s"
            max_command_timeout = "1h"
        "#;

        #[test]
        fn every_renamed_key_is_in_the_old_file() {
            for (table, keys) in RENAMED {
                for key in *keys {
                    assert!(OLD_TOML.contains(&format!("{key} = ")), "{table}.{key}");
                    assert!(Unit::of_key(key).is_some(), "{key} names no unit");
                }
            }
        }

        #[test]
        fn old_and_new_spellings_in_a_file_agree() {
            let old = load(OLD_TOML, "ORCH_T_FILE_OLD__", &[]).unwrap();
            let new = load(NEW_TOML, "ORCH_T_FILE_NEW__", &[]).unwrap();
            assert_eq!(json(&old), json(&new));
            assert_eq!(old.workers.lease, Duration::from_secs(2));
            assert_eq!(old.idempotency.ttl, Duration::from_secs(7200));
            assert_eq!(old.callbacks.tolerance, Duration::from_secs(60));
            assert_eq!(
                old.callbacks.retry_schedule,
                [100, 60_000, 5_400_000].map(Duration::from_millis)
            );
            assert_eq!(old.mcp.servers["s"].ping_interval, Duration::ZERO);
            assert_eq!(
                old.tools.overrides["system.echo"].timeout,
                Some(Duration::from_millis(1500))
            );
            assert_eq!(
                old.ssh.hosts["h"].max_command_timeout,
                Duration::from_secs(3600)
            );
        }

        #[test]
        fn old_and_new_spellings_in_the_environment_agree() {
            let old = load(
                "",
                "ORCH_T_ENV_OLD__",
                &[
                    ("WORKERS__LEASE_MS", "2000"),
                    ("IDEMPOTENCY__TTL_HOURS", "2"),
                    ("CALLBACKS__TOLERANCE_SECS", "60"),
                    ("CALLBACKS__RETRY_SCHEDULE_MS", "[100, 60000]"),
                    ("MCP__SERVERS__S__COMMAND", "node"),
                    ("MCP__SERVERS__S__CALL_TIMEOUT_MS", "1500"),
                ],
            )
            .unwrap();
            let new = load(
                "",
                "ORCH_T_ENV_NEW__",
                &[
                    ("WORKERS__LEASE", "2s"),
                    ("IDEMPOTENCY__TTL", "\"2h\""),
                    ("CALLBACKS__TOLERANCE", "1m"),
                    ("CALLBACKS__RETRY_SCHEDULE", "[\"100ms\", \"1m\"]"),
                    ("MCP__SERVERS__S__COMMAND", "node"),
                    ("MCP__SERVERS__S__CALL_TIMEOUT", "1.5s"),
                ],
            )
            .unwrap();
            assert_eq!(json(&old), json(&new));
            assert_eq!(new.workers.lease, Duration::from_secs(2));
            assert_eq!(new.idempotency.ttl, Duration::from_secs(7200));
            assert_eq!(
                new.mcp.servers["s"].call_timeout,
                Duration::from_millis(1500)
            );
            assert_ne!(json(&new), json(&Config::default()));
        }

        #[test]
        fn a_later_source_wins_whichever_spelling_each_uses() {
            for (file, prefix, var, want) in [
                (
                    "lease = \"3s\"",
                    "ORCH_T_MIX_A__",
                    Some(("WORKERS__LEASE_MS", "2000")),
                    2,
                ),
                (
                    "lease_ms = 3000",
                    "ORCH_T_MIX_B__",
                    Some(("WORKERS__LEASE", "2s")),
                    2,
                ),
                ("lease_ms = 3000", "ORCH_T_MIX_C__", None, 3),
            ] {
                let config = load(&format!("[workers]\n{file}"), prefix, var.as_slice()).unwrap();
                assert_eq!(
                    config.workers.lease,
                    Duration::from_secs(want),
                    "{file} {var:?}"
                );
            }
        }

        #[test]
        fn refusals_name_the_key_and_the_value() {
            let error = |toml: &str| load(toml, "ORCH_T_ERR__", &[]).unwrap_err();
            let both = error("[workers]\nlease = \"3s\"\nlease_ms = 3000");
            assert!(
                both.contains("workers: set lease or lease_ms, not both"),
                "{both}"
            );
            let negative = error("[workers]\nlease_ms = -5");
            assert!(
                negative.contains("workers.lease_ms: must be a whole number of milliseconds")
                    && negative.contains("-5"),
                "{negative}"
            );
            let nested =
                error("[ssh.hosts.h]\naddress = \"a\"\nuser = \"u\"\nconnect_timeout_ms = 1.5");
            assert!(
                nested.contains("ssh.hosts.\"h\".connect_timeout_ms: must be a whole number"),
                "{nested}"
            );
            let huge = error("[idempotency]\nttl_hours = 9223372036854775807");
            assert!(huge.contains("is too long"), "{huge}");
            let unparsable = error("[server]\nsync_timeout = \"8 secs and a bit\"");
            assert!(
                unparsable.contains("`8 secs and a bit` is not a duration"),
                "{unparsable}"
            );
            let bare = error("[server]\nsync_timeout = 8000");
            assert!(bare.contains("expected a duration with its unit"), "{bare}");
        }

        #[test]
        fn validation_still_names_the_fields() {
            let field = |toml: &str| match load(toml, "ORCH_T_VALID__", &[]).unwrap().validate() {
                Err(ConfigError::Invalid { problems }) => problems[0].field.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                field("[callbacks]\ntimeout = \"0s\""),
                "callbacks.timeout_ms"
            );
            assert_eq!(
                field("[idempotency]\nttl_hours = 0"),
                "idempotency.ttl_hours"
            );
            assert_eq!(
                field("[server]\nsync_timeout = \"2m\""),
                "server.sync_timeout_ms"
            );
        }
    }
}
