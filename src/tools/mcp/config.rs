//! `[mcp.servers.<name>]`: how to reach each MCP server and the policy its calls run under.

use crate::model::ConfigProblem;
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{glob::Glob, secret::Secret};

/// The protocol versions we offer in `initialize` (the ones tested against real servers).
pub const OFFERED_PROTOCOLS: [&str; 2] = ["2025-11-25", "2025-06-18"];

/// `[mcp]`: the MCP servers we are a client of (`servers`), and how we serve our own intents
/// as an MCP server at `/mcp` (the rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    pub servers: BTreeMap<String, McpServerConfig>,
    /// How long a `tools/call` waits for its job before answering with the job's handle:
    /// below the time ChatGPT and Claude give a call.
    #[serde(with = "crate::duration::human")]
    pub call_wait: Duration,
    /// The most characters a tool result may have; a larger one is cut, with a marker and
    /// the job's URL.
    pub max_result_chars: usize,
    /// `Host` values `/mcp` accepts besides `server.public_url`'s (DNS-rebinding defence):
    /// `host` (any port) or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts besides `server.public_url`'s (`scheme://host[:port]`);
    /// a request with any other `Origin` is refused. Server-side clients send none.
    pub allowed_origins: Vec<String>,
    /// Whether write flows that do not say (`[flows."<intent>"] destructive`) are announced
    /// as destructive: a webhook may do anything.
    pub flows_destructive: bool,
    /// An idle MCP session (protocol revisions before 2026-07-28) closes after this long; the
    /// client opens a new one.
    #[serde(with = "crate::duration::human")]
    pub session_idle: Duration,
    /// How often a waiting call reports progress to a client that asked for it (a
    /// `progressToken`); clients that reset their timeout on progress wait as long as needed.
    #[serde(with = "crate::duration::human")]
    pub progress_interval: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: BTreeMap::new(),
            call_wait: Duration::from_secs(25),
            max_result_chars: 100_000,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            flows_destructive: true,
            session_idle: Duration::from_secs(30 * 60),
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// When the session to a server is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPolicy {
    /// At boot; the instance waits (up to the start-up timeout) for its tools before working.
    #[default]
    Boot,
    /// On the first request that names one of its intents (`mcp.<server>.…` or an alias).
    Lazy,
}

/// Whether calling a server's tools changes anything (write intents get a derived
/// idempotency key, so the same inputs within the TTL replay the first answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EffectPolicy {
    /// `read` for tools annotated `readOnlyHint: true`, `write` for the rest.
    #[default]
    Auto,
    Read,
    Write,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// A stdio server: the program to run (in a process group of its own)…
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Added to the child's environment. Values are secrets (never printed, zeroed on drop).
    pub env: BTreeMap<String, Secret>,
    /// Pass this process's whole environment on (it may hold secrets such as DATABASE_URL);
    /// by default the child gets only PATH, HOME, USER, LANG, LC_ALL, TZ, TMPDIR and `env`.
    pub inherit_env: bool,
    pub cwd: Option<PathBuf>,
    /// … or a Streamable HTTP endpoint.
    pub url: Option<String>,
    /// Header name → value, sent with every HTTP request. Kept like a secret (never printed,
    /// zeroed on drop), though credentials belong in `header_env`.
    pub headers: BTreeMap<String, Secret>,
    /// Header name → the environment variable holding its value (for credentials: read at
    /// start, never logged).
    pub header_env: BTreeMap<String, String>,
    pub start: StartPolicy,
    /// The protocol version offered in `initialize`: `2025-11-25` or `2025-06-18`. A server
    /// may answer with an older version it speaks; the session then follows its answer.
    pub protocol_version: String,
    /// Every `tools/call` gets this long (waiting for a free call slot and for the session
    /// included); the intent's attempt timeout is a second longer.
    #[serde(with = "crate::duration::human")]
    pub call_timeout: Duration,
    /// Spawning (or connecting), the handshake and `tools/list`.
    #[serde(with = "crate::duration::human")]
    pub startup_timeout: Duration,
    /// Calls in flight to this server at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Attempts per job (transport failures and timeouts are retried; `isError` is not).
    pub max_attempts: i32,
    /// Tool-name globs ([`crate::glob`]) to publish (empty: all), then globs to leave out.
    pub allow_tools: Vec<String>,
    pub deny_tools: Vec<String>,
    /// Friendly intent name → tool name, published beside `mcp.<server>.<tool>`.
    pub aliases: BTreeMap<String, String>,
    pub effect: EffectPolicy,
    /// A `ping` this often checks an idle session (zero: only after a failed or timed-out call).
    #[serde(with = "crate::duration::human")]
    pub ping_interval: Duration,
    /// A ping not answered within this is a hung server: it is restarted.
    #[serde(with = "crate::duration::human")]
    pub ping_timeout: Duration,
    /// Restarts back off from this delay, doubling up to the max; the delay resets once a
    /// session has stayed up for the max.
    #[serde(with = "crate::duration::human")]
    pub restart_backoff: Duration,
    #[serde(with = "crate::duration::human")]
    pub restart_backoff_max: Duration,
    /// On restart and shutdown the process group gets SIGTERM, then SIGKILL after this.
    #[serde(with = "crate::duration::human")]
    pub kill_grace: Duration,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        Self {
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            inherit_env: false,
            cwd: None,
            url: None,
            headers: BTreeMap::new(),
            header_env: BTreeMap::new(),
            start: StartPolicy::Boot,
            protocol_version: "2025-11-25".into(),
            call_timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(30),
            max_concurrent_calls: 16,
            max_attempts: 3,
            allow_tools: Vec::new(),
            deny_tools: Vec::new(),
            aliases: BTreeMap::new(),
            effect: EffectPolicy::Auto,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(5),
            restart_backoff: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
            kill_grace: Duration::from_secs(2),
        }
    }
}

impl McpServerConfig {
    /// A stdio server running `command args…`.
    pub fn stdio(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            command: Some(command.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A Streamable HTTP server at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Whether a tool of this name is published.
    pub fn publishes(&self, tool: &str) -> bool {
        let matches = |globs: &[String]| globs.iter().any(|g| Glob::new(g).matches(tool));
        (self.allow_tools.is_empty() || matches(&self.allow_tools)) && !matches(&self.deny_tools)
    }

    fn problems(&self, name: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut fail = |key: &str, message: &str| {
            out.push(ConfigProblem::new(
                format!("mcp.servers.{name}.{key}"),
                message,
            ));
        };
        match (&self.command, &self.url) {
            (Some(_), Some(_)) | (None, None) => fail(
                "command",
                "set exactly one of `command` (stdio) or `url` (HTTP)",
            ),
            (Some(command), None) => {
                if command.trim().is_empty() {
                    fail("command", "must not be empty");
                }
                if !self.headers.is_empty() || !self.header_env.is_empty() {
                    fail("headers", "headers apply to `url` servers only");
                }
            }
            (None, Some(url)) => {
                if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    fail("url", "must be an http:// or https:// URL");
                }
                if !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    fail("args", "args, env and cwd apply to `command` servers only");
                }
            }
        }
        for header in self.headers.keys().chain(self.header_env.keys()) {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                fail("headers", &format!("`{header}` is not a valid header name"));
            }
        }
        for (header, var) in &self.header_env {
            match std::env::var(var) {
                Ok(v) if reqwest::header::HeaderValue::from_str(&v).is_ok() => {}
                Ok(_) => fail(
                    "header_env",
                    &format!("{header}: ${var} is not a valid header value"),
                ),
                Err(_) => fail("header_env", &format!("{header}: ${var} is not set")),
            }
        }
        if !OFFERED_PROTOCOLS.contains(&self.protocol_version.as_str()) {
            fail(
                "protocol_version",
                &format!("must be one of {}", OFFERED_PROTOCOLS.join(", ")),
            );
        }
        for (key, value) in [
            ("call_timeout_ms", self.call_timeout),
            ("startup_timeout_ms", self.startup_timeout),
            ("ping_timeout_ms", self.ping_timeout),
            ("restart_backoff_ms", self.restart_backoff),
        ] {
            if value.is_zero() {
                fail(key, "must be positive");
            }
        }
        if self.restart_backoff_max < self.restart_backoff {
            fail(
                "restart_backoff_max_ms",
                "must be at least restart_backoff_ms",
            );
        }
        if self.max_concurrent_calls == 0 {
            fail("max_concurrent_calls", "must be at least 1");
        }
        if self.max_attempts < 1 {
            fail("max_attempts", "must be at least 1");
        }
        for alias in self.aliases.keys() {
            if alias.is_empty() || alias.len() > 200 || alias.chars().any(char::is_whitespace) {
                fail("aliases", &format!("`{alias}` is not a valid intent name"));
            }
        }
        out
    }
}

impl McpConfig {
    /// Every problem.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (name, server) in &self.servers {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if valid_name {
                out.extend(server.problems(name));
            } else {
                out.push(ConfigProblem::new(
                    format!("mcp.servers.{name}"),
                    "server names are 1 to 64 letters, digits, `_` or `-` (they become part of \
                     intent names)",
                ));
            }
        }
        if self.call_wait.is_zero() || self.call_wait > Duration::from_secs(300) {
            out.push(ConfigProblem::new(
                "mcp.call_wait",
                "must be between 1ms and 5m (clients give a call about a minute)",
            ));
        }
        if self.max_result_chars < 1_000 {
            out.push(ConfigProblem::new(
                "mcp.max_result_chars",
                "must be at least 1000",
            ));
        }
        if self.progress_interval < Duration::from_millis(100) {
            out.push(ConfigProblem::new(
                "mcp.progress_interval",
                "must be at least 100ms",
            ));
        }
        if self.session_idle < Duration::from_secs(10) {
            out.push(ConfigProblem::new(
                "mcp.session_idle",
                "must be at least 10s",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "null" && !origin.contains("://") {
                out.push(ConfigProblem::new(
                    format!("mcp.allowed_origins[{i}]"),
                    "an origin is scheme://host[:port] (or \"null\")",
                ));
            }
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if host.trim().is_empty() || host.contains('/') {
                out.push(ConfigProblem::new(
                    format!("mcp.allowed_hosts[{i}]"),
                    "a host is `name` or `name:port`, without a scheme or path",
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(config: McpServerConfig) -> String {
        let mut mcp = McpConfig::default();
        mcp.servers.insert("s".into(), config);
        mcp.problems()[0].field.clone()
    }

    #[test]
    fn a_server_is_either_stdio_or_http() {
        let mut both = McpServerConfig::stdio("node", ["x"]);
        both.url = Some("http://127.0.0.1:1/mcp".into());
        assert_eq!(problem(both), "mcp.servers.s.command");
        assert_eq!(problem(McpServerConfig::default()), "mcp.servers.s.command");
        assert_eq!(
            problem(McpServerConfig::http("ftp://x")),
            "mcp.servers.s.url"
        );
        let mut http_with_args = McpServerConfig::http("http://127.0.0.1:1/mcp");
        http_with_args.args = vec!["x".into()];
        assert_eq!(problem(http_with_args), "mcp.servers.s.args");
    }

    #[test]
    fn header_values_come_from_set_variables() {
        let mut c = McpServerConfig::http("http://127.0.0.1:1/mcp");
        c.header_env
            .insert("Authorization".into(), "ORCH_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(problem(c), "mcp.servers.s.header_env");
    }

    #[test]
    fn server_names_fit_in_intent_names() {
        let mut mcp = McpConfig::default();
        mcp.servers
            .insert("a.b".into(), McpServerConfig::stdio("node", ["x"]));
        assert_eq!(mcp.problems()[0].field.clone(), "mcp.servers.a.b");
    }

    /// The server block documented in orchestrator.example.toml, uncommented.
    fn documented_server() -> String {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("orchestrator.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# [mcp.servers."))
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches("# "))
            .collect();
        assert!(!block.is_empty(), "the example documents an MCP server");
        block.join("\n")
    }

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        use figment::{
            Figment,
            providers::{Format, Toml},
        };
        let config: McpConfig = Figment::from(Toml::string(&documented_server()))
            .extract_inner("mcp")
            .expect("the documented server parses");
        let documented = &config.servers["everything"];
        let expected =
            McpServerConfig::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"]);
        assert_eq!(documented, &expected);
        assert!(config.problems().is_empty());
        let block = documented_server();
        let keys = serde_json::to_value(McpServerConfig::default()).unwrap();
        for key in keys.as_object().unwrap().keys() {
            assert!(
                block.contains(&format!("{key} = ")),
                "{key} is not documented"
            );
        }
    }

    #[test]
    fn allow_and_deny_lists_filter_tools() {
        let mut c = McpServerConfig::stdio("node", ["x"]);
        assert!(c.publishes("anything"));
        c.allow_tools = vec!["get-*".into(), "echo".into()];
        c.deny_tools = vec!["get-env".into()];
        assert!(c.publishes("echo"));
        assert!(c.publishes("get-sum"));
        assert!(!c.publishes("get-env"));
        assert!(!c.publishes("toggle-simulated-logging"));
    }
}
