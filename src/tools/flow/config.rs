//! `[flows."<intent>"]`: one webhook-backed intent each.

use crate::{limits::Rate, model::ConfigProblem};
use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowEngine {
    N8n,
    Activepieces,
    Generic,
}

/// How the flow delivers its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Completion {
    /// The webhook's answer is the result.
    #[default]
    Sync,
    /// The webhook acknowledges; the flow calls `/callbacks/ingest` later.
    Async,
}

/// Credentials the flow's webhook expects. Values come from environment variables, so they
/// never sit in config files or logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum FlowAuth {
    Header {
        name: String,
        value_env: String,
    },
    Basic {
        username: String,
        password_env: String,
    },
    Bearer {
        token_env: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub engine: FlowEngine,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// One request's time limit (also the attempt timeout).
    #[serde(default = "default_timeout", with = "crate::duration::human")]
    pub timeout: Duration,
    #[serde(default)]
    pub completion: Completion,
    /// For `async` flows: how long to wait for the callback before the job ends `timed_out`.
    #[serde(default = "default_deadline", with = "crate::duration::human")]
    pub callback_deadline: Duration,
    #[serde(default)]
    pub auth: Option<FlowAuth>,
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of the inputs (shown by `GET /tools` and the OpenAPI document).
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// `write` (default): retried requests with the same inputs are answered from the first
    /// job for a day; `read`: every request runs.
    #[serde(default)]
    pub read_only: bool,
    /// What MCP clients are told (`destructiveHint`) about a write flow; unset: `[mcp]
    /// flows_destructive`.
    #[serde(default)]
    pub destructive: Option<bool>,
    #[serde(default = "default_attempts")]
    pub max_attempts: i32,
    /// Consecutive failures that open the circuit breaker for this URL…
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// …for this long, after which one probe may close it again.
    #[serde(default = "default_breaker_open", with = "crate::duration::human")]
    pub breaker_open: Duration,
    /// Requests per second to the URL (`{ rate = 5, burst = 10 }`), on every instance together.
    /// A job over it is not failed: it waits in the queue for its turn, its attempt not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
    /// At most this many requests to the URL at once, on every instance together: jobs beyond
    /// it wait in the queue (not failed, not polled) until one finishes. Async flows hold a
    /// place only while their request is open, not while the flow works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
}

fn default_method() -> String {
    "POST".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_deadline() -> Duration {
    Duration::from_secs(3600)
}
fn default_attempts() -> i32 {
    3
}
fn default_breaker_threshold() -> u32 {
    5
}
fn default_breaker_open() -> Duration {
    Duration::from_secs(30)
}

impl FlowConfig {
    /// Every problem of the flow behind `intent`.
    pub fn problems(&self, intent: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(ConfigProblem::new(
                format!("flows.\"{intent}\".{key}"),
                message,
            ));
        };
        match url::Url::parse(&self.url) {
            Err(e) => bad("url", e.to_string()),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                bad("url", "must be http or https".into())
            }
            Ok(_) => {}
        }
        if !matches!(
            self.method.to_ascii_uppercase().as_str(),
            "POST" | "PUT" | "PATCH"
        ) {
            bad(
                "method",
                "must be POST, PUT or PATCH (the request has a body)".into(),
            );
        }
        if self.timeout.is_zero() || self.callback_deadline.is_zero() {
            bad(
                "timeout_ms",
                "timeouts and deadlines must be positive".into(),
            );
        }
        if self.max_attempts < 1 {
            bad("max_attempts", "must be at least 1".into());
        }
        if self.breaker_threshold == 0 {
            bad("breaker_threshold", "must be at least 1".into());
        }
        if let Some(schema) = &self.input_schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            bad("input_schema", format!("is not a valid JSON Schema: {e}"));
        }
        for var in self.auth.iter().flat_map(FlowAuth::env_vars) {
            if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                bad("auth", format!("environment variable {var} is not set"));
            }
        }
        if let Some(rate) = &self.rate_limit {
            out.extend(rate.problems(&format!("flows.\"{intent}\".rate_limit")));
        }
        if let Some(problem) = self.concurrency.and_then(crate::catalog::limit_problem) {
            out.push(ConfigProblem::new(
                format!("flows.\"{intent}\".concurrency"),
                problem,
            ));
        }
        out
    }
}

/// Flows that share a URL share its bucket and its concurrency places (as they share its
/// circuit breaker), so they must agree on its rate and its concurrency.
pub fn shared_url_problems(flows: &BTreeMap<String, FlowConfig>) -> Vec<ConfigProblem> {
    let mut first: BTreeMap<&str, (&str, &FlowConfig)> = BTreeMap::new();
    let mut out = Vec::new();
    for (intent, flow) in flows {
        let Some((other, earlier)) = first.get(flow.url.as_str()) else {
            first.insert(&flow.url, (intent, flow));
            continue;
        };
        let mut differs = |key: &str| {
            out.push(ConfigProblem::new(
                format!("flows.\"{intent}\".{key}"),
                format!("must equal flows.\"{other}\".{key}: both call the same URL"),
            ))
        };
        if earlier.rate_limit != flow.rate_limit {
            differs("rate_limit");
        }
        if earlier.concurrency != flow.concurrency {
            differs("concurrency");
        }
    }
    out
}

impl FlowAuth {
    pub fn env_vars(&self) -> Vec<&str> {
        match self {
            FlowAuth::Header { value_env, .. } => vec![value_env],
            FlowAuth::Basic { password_env, .. } => vec![password_env],
            FlowAuth::Bearer { token_env } => vec![token_env],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(url: &str, concurrency: Option<i32>, rate: Option<Rate>) -> FlowConfig {
        serde_json::from_value(serde_json::json!({"engine": "generic", "url": url}))
            .map(|f: FlowConfig| FlowConfig {
                concurrency,
                rate_limit: rate,
                ..f
            })
            .unwrap()
    }

    #[test]
    fn flows_calling_one_url_must_agree_on_its_rate_and_concurrency() {
        let url = "https://flows.example/hook";
        let flows: BTreeMap<String, FlowConfig> = [
            ("a".to_owned(), flow(url, Some(4), None)),
            ("b".to_owned(), flow(url, Some(2), Some(Rate::new(5.0, 10)))),
            (
                "c".to_owned(),
                flow("https://other.example/", Some(1), None),
            ),
            ("d".to_owned(), flow(url, Some(4), None)),
        ]
        .into();
        let fields: Vec<String> = shared_url_problems(&flows)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            ["flows.\"b\".rate_limit", "flows.\"b\".concurrency"]
        );
    }

    #[test]
    fn a_concurrency_is_from_1_to_10000() {
        for (limit, ok) in [(0, false), (1, true), (10_000, true), (10_001, false)] {
            let problems = flow("https://flows.example/", Some(limit), None).problems("x");
            assert_eq!(problems.is_empty(), ok, "{limit}: {problems:?}");
        }
    }
}
