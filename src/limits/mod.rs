//! `[rate_limits]`: how many requests an API key, and an intent, may file per second — token
//! buckets shared by every instance through PostgreSQL (`store::take_rate_tokens`), so a limit
//! means the same with one instance or ten. This module decides which buckets a request takes
//! from; the HTTP layer takes them and answers 429.

mod rate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use rate::{Rate, retry_after_secs};

use crate::{glob::Glob, model::ConfigProblem, model::Principal};

/// `[rate_limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Every API key's own bucket (anonymous callers, while the API is open, share one).
    pub per_key: Rate,
    /// `[rate_limits.keys.<name>]`: a key's own rate instead of `per_key` (rate 0: none).
    pub keys: BTreeMap<String, Rate>,
    /// `[rate_limits.intents."<glob>"]`: one bucket per pattern, shared by every intent it
    /// matches and every caller; each matching pattern applies.
    pub intents: BTreeMap<String, Rate>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            // Far above what a person or an integration sends (the 2-core bench serves about
            // 2,000 requests/s in all), low enough that one runaway client cannot take the
            // whole queue from the others.
            per_key: Rate::new(100.0, 200),
            keys: BTreeMap::new(),
            intents: BTreeMap::new(),
        }
    }
}

/// Which kind of limit refused a request (the problem's `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    ApiKey,
    Intent,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::ApiKey => "api_key",
            LimitKind::Intent => "intent",
        }
    }
}

/// A limit that applies to a request, and its bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub kind: LimitKind,
    /// The key's name, or the intent pattern.
    pub name: String,
    pub rate: Rate,
    pub bucket: String,
}

impl RateLimitsConfig {
    /// The limits a request by `principal` for `intent` takes a token from (none: no limit).
    pub fn applying(&self, principal: &Principal, intent: &str) -> Vec<Limit> {
        let key_rate = self.keys.get(&principal.name).unwrap_or(&self.per_key);
        let key = (!key_rate.is_off()).then(|| Limit {
            kind: LimitKind::ApiKey,
            name: principal.name.clone(),
            rate: *key_rate,
            // By id: a name can be taken again once its key is revoked.
            bucket: format!(
                "key:{}",
                principal
                    .api_key_id
                    .map_or_else(|| "anonymous".to_owned(), |id| id.to_string())
            ),
        });
        let intents = self
            .intents
            .iter()
            .filter(|(pattern, rate)| !rate.is_off() && Glob::new(pattern).matches(intent))
            .map(|(pattern, rate)| Limit {
                kind: LimitKind::Intent,
                name: pattern.clone(),
                rate: *rate,
                bucket: format!("intent:{pattern}"),
            });
        key.into_iter().chain(intents).collect()
    }

    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.per_key.problems("rate_limits.per_key");
        for (name, rate) in &self.keys {
            out.extend(rate.problems(&format!("rate_limits.keys.\"{name}\"")));
        }
        for (pattern, rate) in &self.intents {
            out.extend(rate.problems(&format!("rate_limits.intents.\"{pattern}\"")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key(name: &str) -> Principal {
        Principal {
            api_key_id: Some(Uuid::nil()),
            name: name.into(),
            ..Principal::default()
        }
    }

    #[test]
    fn by_default_each_key_has_a_generous_limit_and_intents_none() {
        let config = RateLimitsConfig::default();
        let limits = config.applying(&key("ci"), "memory.write");
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].kind, LimitKind::ApiKey);
        assert_eq!(limits[0].bucket, format!("key:{}", Uuid::nil()));
        assert_eq!(limits[0].rate, Rate::new(100.0, 200));
        let anonymous = config.applying(&Principal::anonymous(), "memory.write");
        assert_eq!(anonymous[0].bucket, "key:anonymous");
    }

    #[test]
    fn overrides_by_key_name_and_every_matching_intent_pattern_apply() {
        let config = RateLimitsConfig {
            per_key: Rate::new(10.0, 10),
            keys: BTreeMap::from([
                ("batch".into(), Rate::new(500.0, 1000)),
                ("trusted".into(), Rate::OFF),
            ]),
            intents: BTreeMap::from([
                ("ssh.*".into(), Rate::new(2.0, 5)),
                ("ssh.exec".into(), Rate::new(1.0, 1)),
                ("memory.*".into(), Rate::OFF),
            ]),
        };
        let names = |p: &Principal, intent: &str| -> Vec<(LimitKind, String, String)> {
            config
                .applying(p, intent)
                .into_iter()
                .map(|l| (l.kind, l.name, l.bucket))
                .collect()
        };
        assert_eq!(config.applying(&key("batch"), "x")[0].rate.rate, 500.0);
        assert!(names(&key("trusted"), "memory.write").is_empty());
        let ssh = names(&key("trusted"), "ssh.exec");
        assert_eq!(
            ssh,
            [
                (LimitKind::Intent, "ssh.*".into(), "intent:ssh.*".into()),
                (
                    LimitKind::Intent,
                    "ssh.exec".into(),
                    "intent:ssh.exec".into()
                ),
            ]
        );
        assert_eq!(names(&key("other"), "ssh.exec.peek").len(), 2);
    }

    #[test]
    fn the_commented_examples_in_the_example_file_parse() {
        use figment::providers::{Format, Toml};
        let uncommented = crate::config::uncommented_example("rate_limits");
        #[derive(Deserialize)]
        struct File {
            rate_limits: RateLimitsConfig,
        }
        let file: File = figment::Figment::from(Toml::string(&uncommented))
            .extract()
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let limits = file.rate_limits;
        assert!(limits.problems().is_empty());
        assert_eq!(limits.per_key, RateLimitsConfig::default().per_key);
        assert!(limits.keys.contains_key("batch-importer"));
        assert!(limits.intents.contains_key("ssh.exec"));
        assert!(limits.intents.contains_key("mcp.github.*"));
    }
}
