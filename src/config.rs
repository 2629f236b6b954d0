//! Configuration: documented defaults, then an optional TOML file, then `ORCH__SECTION__KEY`
//! environment variables; `DATABASE_URL` always wins for the database. Validated once at start.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use zeroize::Zeroizing;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;
use crate::{
    auth::AuthConfig,
    callbacks::CallbacksConfig,
    db::DatabaseConfig,
    telemetry::{LogConfig, MetricsConfig},
    tools::flow::FlowAuth,
    worker::{MaintenanceSettings, RetentionConfig, WorkersConfig},
};

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
pub struct IdempotencyConfig {
    /// How long a key (sent or derived) answers with the stored result.
    pub ttl_hours: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self { ttl_hours: 24 }
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
            every: Duration::from_millis(self.workers.maintenance_interval_ms),
            remember_ingest_ids: Duration::from_secs(self.callbacks.tolerance_secs * 2),
            payload_days: self.retention.payload_days,
        }
    }

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
            crate::callbacks::SecretKey::parse(secret.expose())
                .map_err(|e| invalid(field, e.to_string()))?;
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
