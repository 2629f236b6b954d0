//! Secrets from configuration.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

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

/// Configuration compares servers' settings to see what changed.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed_nor_serialised() {
        let s = Secret::from("hunter2-secret");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert!(
            serde_json::to_string(&s).is_err(),
            "a set secret refuses to serialise"
        );
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
        assert_eq!(s.expose(), "hunter2-secret");
        let read: Secret = serde_json::from_str("\"from-config\"").unwrap();
        assert_eq!(read.expose(), "from-config");
        assert_eq!(read, Secret::from("from-config"));
    }
}
