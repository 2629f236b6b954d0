//! Per-intent concurrency keys: jobs that share a key run at most `limit` at a time across
//! every instance (`tools.overrides."<intent>".concurrency`, SSH hosts' `max_sessions`). The
//! claim enforces it with one slot row per key and place (store); this is what a job's key is.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `concurrency = { key = "inputs.host", limit = 1 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Where in the inputs the key is: a JSON pointer (`/host`) or a dotted path
    /// (`inputs.host`, `host`). Absent: one key for the whole intent.
    #[serde(default)]
    pub key: Option<String>,
    /// At most this many of the key's jobs run at once.
    pub limit: i32,
}

/// A job's key and limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyKey {
    pub key: String,
    pub limit: i32,
}

impl Concurrency {
    fn pointer(&self) -> Option<String> {
        let key = self.key.as_deref()?;
        Some(if key.starts_with('/') {
            key.to_owned()
        } else {
            format!(
                "/{}",
                key.strip_prefix("inputs.").unwrap_or(key).replace('.', "/")
            )
        })
    }

    /// `<intent>:<value at the key>` (a missing value is `null`: such jobs share one key).
    pub fn key_for(&self, intent: &str, inputs: &Value) -> ConcurrencyKey {
        let value = match self.pointer() {
            None => String::new(),
            Some(pointer) => match inputs.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "null".into(),
            },
        };
        ConcurrencyKey {
            key: format!("{intent}:{value}"),
            limit: self.limit,
        }
    }

    pub fn problem(&self) -> Option<String> {
        limit_problem(self.limit).map(|p| format!("limit {p}"))
    }
}

/// What is wrong with a concurrency limit (here and a flow's `concurrency`), if anything.
pub fn limit_problem(limit: i32) -> Option<&'static str> {
    (!(1..=10_000).contains(&limit)).then_some("must be from 1 to 10000")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_come_from_a_pointer_or_a_dotted_path() {
        let inputs = json!({"host": "web-1", "port": 22, "nested": {"a": "x"}});
        let by = |key: Option<&str>| {
            Concurrency {
                key: key.map(str::to_owned),
                limit: 2,
            }
            .key_for("ssh.exec", &inputs)
            .key
        };
        assert_eq!(by(Some("/host")), "ssh.exec:web-1");
        assert_eq!(by(Some("inputs.host")), "ssh.exec:web-1");
        assert_eq!(by(Some("host")), "ssh.exec:web-1");
        assert_eq!(by(Some("nested.a")), "ssh.exec:x");
        assert_eq!(by(Some("port")), "ssh.exec:22");
        assert_eq!(by(Some("missing")), "ssh.exec:null");
        assert_eq!(by(None), "ssh.exec:");
        assert!(
            Concurrency {
                key: None,
                limit: 0
            }
            .problem()
            .is_some()
        );
        assert!(
            Concurrency {
                key: None,
                limit: 4
            }
            .problem()
            .is_none()
        );
    }
}
