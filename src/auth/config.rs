//! `[auth]`: whether requests need an API key, and which paths never do.

use serde::{Deserialize, Serialize};

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
