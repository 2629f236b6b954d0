//! Our own credentials coming back to us are cut out of what we store, answer and log: an n8n
//! workflow whose last node is its Webhook node answers with the request it got, headers and
//! all; an MCP server or a flow may echo what it was sent. The values are the configured
//! secrets (signing and ingest secrets, flow credentials, SSH passphrases, MCP header values),
//! found in one pass (Aho-Corasick) over every string of a result.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::{config::Config, tools::flow::FlowAuth};

pub const REDACTED: &str = "[redacted]";

/// Shorter values would cut ordinary words out of results; no credential we issue or
/// recommend is that short.
const MIN_SECRET_CHARS: usize = 8;

pub struct Redactor {
    finder: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(***)")
    }
}

impl Redactor {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let needles: Vec<Zeroizing<String>> = secrets
            .into_iter()
            .map(|s| Zeroizing::new(s.as_ref().to_owned()))
            .filter(|s| s.chars().count() >= MIN_SECRET_CHARS)
            .collect();
        let finder = (!needles.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(needles.iter().map(|s| s.as_str()))
                .expect("literal patterns build")
        });
        Self { finder }
    }

    /// Every secret the configuration names, read from the environment where it lives there,
    /// and `signing` (the signing secrets in use, which may have been generated).
    pub fn from_config<'a>(config: &Config, signing: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Zeroizing<String>> = Vec::new();
        let mut whsec = |s: &str| {
            secrets.push(Zeroizing::new(s.to_owned()));
            if let Some(key) = s.strip_prefix("whsec_") {
                secrets.push(Zeroizing::new(key.to_owned()));
            }
        };
        signing.into_iter().for_each(&mut whsec);
        config
            .callbacks
            .ingest_keys()
            .for_each(|s| whsec(s.expose()));
        let env = |name: &str| std::env::var(name).ok().map(Zeroizing::new);
        for auth in config.flows.values().filter_map(|f| f.auth.as_ref()) {
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
        for host in config.ssh.hosts.values() {
            secrets.extend(host.passphrase_env.as_deref().and_then(env));
        }
        for server in config.mcp.servers.values() {
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
        Self::new(secrets.iter().map(|s| s.as_str()))
    }

    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.finder {
            Some(finder) if finder.is_match(s) => {
                Cow::Owned(finder.replace_all(s, &vec![REDACTED; finder.patterns_len()]))
            }
            _ => Cow::Borrowed(s),
        }
    }

    /// Redacts every string (and key) of `v` in place.
    pub fn value(&self, v: &mut Value) {
        if self.finder.is_none() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.text(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.value(item)),
            Value::Object(map) => {
                if map.keys().any(|k| matches!(self.text(k), Cow::Owned(_))) {
                    let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                    for (k, val) in entries {
                        map.insert(self.text(&k).into_owned(), val);
                    }
                }
                map.values_mut().for_each(|item| self.value(item));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cuts_every_secret_out_of_text_and_json() {
        let r = Redactor::new(["s3cret-token-1", "short", "another-secret"]);
        assert_eq!(
            r.text("Bearer s3cret-token-1 and another-secret"),
            "Bearer [redacted] and [redacted]"
        );
        assert_eq!(r.text("short stays"), "short stays", "too short to be one");
        assert!(matches!(r.text("clean"), Cow::Borrowed(_)));
        let mut v = json!({"headers": {"authorization": "Bearer s3cret-token-1"},
                           "another-secret": [1, "x another-secret"]});
        r.value(&mut v);
        assert_eq!(
            v,
            json!({"headers": {"authorization": "Bearer [redacted]"},
                   "[redacted]": [1, "x [redacted]"]})
        );
    }

    #[test]
    fn without_secrets_nothing_changes() {
        let r = Redactor::new(Vec::<String>::new());
        let mut v = json!({"a": "b"});
        r.value(&mut v);
        assert_eq!(v, json!({"a": "b"}));
    }
}
