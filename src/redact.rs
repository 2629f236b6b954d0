//! Our own credentials coming back to us are cut out of what we store, answer and log: an n8n
//! workflow whose last node is its Webhook node answers with the request it got, headers and
//! all; an MCP server or a flow may echo what it was sent. The values are the configured
//! secrets (`Config::secret_values`: signing and ingest secrets, flow credentials, SSH
//! passphrases, MCP header values), found in one pass (Aho-Corasick) over every string.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;
use zeroize::Zeroizing;

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
