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
