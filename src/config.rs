//! Configuration: documented defaults, then an optional TOML file, then `ORCH__SECTION__KEY`
//! environment variables; `DATABASE_URL` always wins for the database. Validated once at start.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
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
    pub tools: crate::tools::ToolsConfig,
    /// `[flows."<intent>"]`: n8n, ActivePieces or generic webhooks, one intent each.
    pub flows: BTreeMap<String, crate::tools::flow::FlowConfig>,
    pub routing: crate::catalog::routing::RoutingConfig,
    pub mcp: crate::tools::mcp::McpConfig,
    pub ssh: crate::tools::ssh::SshConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base of `status_url`, callback URLs and the OpenAPI `servers` entry.
    pub public_url: String,
    /// How long `POST /orchestrate` waits for a job when the request does not say.
    pub sync_timeout_ms: u64,
    /// The most a request may ask to wait (`timeout_ms`, `Prefer: wait=N`).
    pub max_sync_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT: how long running jobs and requests may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            public_url: "http://127.0.0.1:8080".into(),
            sync_timeout_ms: 8_000,
            max_sync_timeout_ms: 60_000,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`; `DATABASE_URL` wins. Unset: the private cluster (if `embedded`).
    pub url: Option<String>,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// How long start-up keeps retrying a database that does not answer before giving up.
    pub connect_timeout_ms: u64,
    /// With no URL configured at all, run a private cluster (PostgreSQL's server binaries
    /// must be installed). Never used when a URL is configured.
    pub embedded: bool,
    /// The private cluster's data directory (absolute). Default: `/var/lib/orchestrator/pgdata`
    /// for root, else `$XDG_DATA_HOME/orchestrator/pgdata` (`~/.local/share/…`).
    pub embedded_data_dir: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 32,
            acquire_timeout_ms: 3_000,
            connect_timeout_ms: 30_000,
            embedded: true,
            embedded_data_dir: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Jobs this instance runs at once (0 = intake only, no workers).
    pub concurrency: usize,
    /// The most jobs one claim takes.
    pub claim_batch: i64,
    /// Fallback poll for new work when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// A claim's lease; the heartbeat extends it while the job runs.
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How often maintenance looks for expired leases and expired idempotency keys.
    pub maintenance_interval_ms: u64,
    /// Retry backoff: base * 2^(attempt-1), capped, with ±20 % jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// The most completions written in one statement.
    pub completion_batch: usize,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            claim_batch: 64,
            poll_interval_ms: 1_000,
            lease_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            maintenance_interval_ms: 5_000,
            retry_base_ms: 1_000,
            retry_max_ms: 600_000,
            completion_batch: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key (sent or derived) answers with the stored result.
    pub ttl_hours: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self { ttl_hours: 24 }
    }
}

/// Whether requests need an API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Open only while no API key has ever been created in the database; the first key closes
    /// the API for good (revoking or expiring keys does not reopen it).
    #[default]
    Auto,
    /// Keys are required from the start.
    Required,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The older spelling of `mode = "required"` (still honoured).
    pub required: bool,
    /// Paths served without a key (`/callbacks/ingest` has its own verification). A key sent
    /// to them is still checked, and `/readyz` and `/openapi.json` show more to a key.
    pub public_paths: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Auto,
            required: false,
            public_paths: ["/healthz", "/readyz", "/openapi.json", "/metrics"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl AuthConfig {
    pub fn effective_mode(&self) -> AuthMode {
        if self.required {
            AuthMode::Required
        } else {
            self.mode
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Drop finished jobs' inputs and results after this many days (0: keep them). Reporting
    /// columns and the audit trail stay.
    pub payload_days: u32,
}

/// A secret from configuration: `Debug` never shows it, it is never serialised, and its memory
/// is zeroed when dropped (`secrecy`). Read it with [`Secret::expose`] where it is used.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self(SecretString::from(""))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(SecretString::from(s))
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(SecretString::from(s))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Only the empty default is ever serialised (the layered loading starts from the defaults);
/// a set secret refuses, so no code path can write one out.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_empty() {
            serializer.serialize_str("")
        } else {
            Err(serde::ser::Error::custom("secrets are never serialised"))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Signs outbound callbacks and flow requests (`whsec_` + base64). Empty: a secret is
    /// generated on first start and kept in the database (`orchestrator callbacks secret`).
    pub signing_secret: Secret,
    /// More signing secrets during a rotation: each signature is sent.
    pub signing_secrets: Vec<Secret>,
    /// Verifies inbound `/callbacks/ingest` signatures (`whsec_` + base64).
    pub ingest_secret: Secret,
    /// More accepted ingest secrets during a rotation.
    pub ingest_secrets: Vec<Secret>,
    /// Non-public networks (CIDRs) that callback and flow URLs may reach. Default: none.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// One delivery attempt's time limit.
    pub timeout_ms: u64,
    /// Delays between attempts (±20 % jitter); after the last one the delivery is exhausted.
    pub retry_schedule_ms: Vec<u64>,
    /// The most a receiver's `Retry-After` may postpone the next attempt.
    pub max_retry_after_ms: u64,
    /// Inbound signatures older or newer than this are refused.
    pub tolerance_secs: u64,
    /// Deliveries in flight at once on this instance (0: this instance delivers nothing).
    pub delivery_concurrency: usize,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            signing_secret: Secret::default(),
            signing_secrets: Vec::new(),
            ingest_secret: Secret::default(),
            ingest_secrets: Vec::new(),
            allow_networks: Vec::new(),
            timeout_ms: 15_000,
            retry_schedule_ms: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .map(|s| s * 1000)
                .to_vec(),
            max_retry_after_ms: 36_000_000,
            tolerance_secs: 300,
            delivery_concurrency: 16,
        }
    }
}

impl CallbacksConfig {
    pub fn signing_keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.signing_secret)
            .chain(&self.signing_secrets)
            .filter(|s| !s.is_empty())
    }

    pub fn ingest_keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.ingest_secret)
            .chain(&self.ingest_secrets)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How often the queue, pool and breaker gauges are sampled (one query per sample, not per
    /// scrape).
    pub gauge_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            gauge_interval_ms: 15_000,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `ORCH__…` variables, then `DATABASE_URL`.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("ORCH__").split("__"));
        let mut config: Config = figment.extract().map_err(Box::new)?;
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        url::Url::parse(&s.public_url).map_err(|e| invalid("server.public_url", e.to_string()))?;
        if s.sync_timeout_ms > s.max_sync_timeout_ms {
            return Err(invalid(
                "server.sync_timeout_ms",
                "must not exceed server.max_sync_timeout_ms",
            ));
        }
        if s.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if let Some(url) = &self.database.url {
            crate::db::check_url(url).map_err(|e| invalid("database.url", format!("{e:#}")))?;
        }
        if let Some(dir) = &self.database.embedded_data_dir
            && !dir.is_absolute()
        {
            return Err(invalid(
                "database.embedded_data_dir",
                format!(
                    "must be an absolute path (so every command reaches the same cluster), not {}",
                    dir.display()
                ),
            ));
        }
        let w = &self.workers;
        if w.claim_batch < 1 {
            return Err(invalid("workers.claim_batch", "must be at least 1"));
        }
        if w.completion_batch < 1 {
            return Err(invalid("workers.completion_batch", "must be at least 1"));
        }
        if w.heartbeat_interval_ms == 0 || w.heartbeat_interval_ms * 2 > w.lease_ms {
            return Err(invalid(
                "workers.heartbeat_interval_ms",
                "must be positive and at most half of workers.lease_ms",
            ));
        }
        if w.poll_interval_ms == 0 || w.maintenance_interval_ms == 0 {
            return Err(invalid(
                "workers.poll_interval_ms",
                "poll and maintenance intervals must be positive",
            ));
        }
        if self.metrics.gauge_interval_ms == 0 {
            return Err(invalid("metrics.gauge_interval_ms", "must be positive"));
        }
        if self.idempotency.ttl_hours == 0 {
            return Err(invalid("idempotency.ttl_hours", "must be at least 1"));
        }
        for (field, secret) in self
            .callbacks
            .signing_keys()
            .map(|s| ("callbacks.signing_secret", s))
            .chain(
                self.callbacks
                    .ingest_keys()
                    .map(|s| ("callbacks.ingest_secret", s)),
            )
        {
            crate::webhook::SecretKey::parse(secret.expose()).map_err(|e| invalid(field, e))?;
        }
        if self.callbacks.timeout_ms == 0 {
            return Err(invalid("callbacks.timeout_ms", "must be positive"));
        }
        for (intent, flow) in &self.flows {
            flow.validate().map_err(|(field, message)| {
                invalid(&format!("flows.\"{intent}\".{field}"), message)
            })?;
        }
        self.routing
            .validate()
            .and_then(|()| self.mcp.validate())
            .map_err(|(field, message)| invalid(&field, message))?;
        if let Some((field, message)) = self.ssh.problems().into_iter().next() {
            return Err(invalid(&field, message));
        }
        for (intent, o) in &self.tools.overrides {
            if o.max_attempts.is_some_and(|n| n < 1) {
                return Err(invalid(
                    &format!("tools.overrides.\"{intent}\".max_attempts"),
                    "must be at least 1",
                ));
            }
            if o.timeout_ms == Some(0) {
                return Err(invalid(
                    &format!("tools.overrides.\"{intent}\".timeout_ms"),
                    "must be positive",
                ));
            }
        }
        Ok(())
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.server.sync_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("orchestrator.example.toml");
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(&path));
        let config: Config = figment.extract().expect("example config parses");
        config.validate().expect("example config is valid");
        assert_eq!(config.server.sync_timeout_ms, 8_000);
        assert_eq!(config.ssh, crate::tools::ssh::SshConfig::default());
    }

    #[test]
    fn rejects_heartbeat_slower_than_half_the_lease() {
        let mut c = Config::default();
        c.workers.heartbeat_interval_ms = c.workers.lease_ms;
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { field, .. }) if field == "workers.heartbeat_interval_ms")
        );
    }
}
