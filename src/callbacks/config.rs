//! `[callbacks]`: signing and verification secrets, where callbacks may go, and the delivery
//! schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SecretKey;
use crate::{model::ConfigProblem, secret::Secret};

/// `[callbacks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Signs outbound callbacks and flow requests (`whsec_` + base64). Empty: a secret is
    /// generated on first start and kept in the database (`orchestrator callbacks secret`).
    pub signing_secret: Secret,
    /// More signing secrets during a rotation: each signature is sent.
    pub signing_secrets: Vec<Secret>,
    /// Verifies inbound `/callbacks/ingest` signatures (`whsec_` + base64).
    pub ingest_secret: Secret,
    /// More accepted ingest secrets during a rotation.
    pub ingest_secrets: Vec<Secret>,
    /// Non-public networks (CIDRs) that callback and flow URLs may reach. Default: none.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// One delivery attempt's time limit.
    #[serde(with = "crate::duration::human")]
    pub timeout: Duration,
    /// Delays between attempts (±20 % jitter); after the last one the delivery is exhausted.
    #[serde(with = "crate::duration::human_list")]
    pub retry_schedule: Vec<Duration>,
    /// The most a receiver's `Retry-After` may postpone the next attempt.
    #[serde(with = "crate::duration::human")]
    pub max_retry_after: Duration,
    /// Inbound signatures older or newer than this are refused.
    #[serde(with = "crate::duration::human")]
    pub tolerance: Duration,
    /// Deliveries in flight at once on this instance (0: this instance delivers nothing).
    pub delivery_concurrency: usize,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            signing_secret: Secret::default(),
            signing_secrets: Vec::new(),
            ingest_secret: Secret::default(),
            ingest_secrets: Vec::new(),
            allow_networks: Vec::new(),
            timeout: Duration::from_secs(15),
            retry_schedule: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .map(Duration::from_secs)
                .to_vec(),
            max_retry_after: Duration::from_secs(36_000),
            tolerance: Duration::from_secs(300),
            delivery_concurrency: 16,
        }
    }
}

impl CallbacksConfig {
    pub fn signing_keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.signing_secret)
            .chain(&self.signing_secrets)
            .filter(|s| !s.is_empty())
    }

    pub fn ingest_keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.ingest_secret)
            .chain(&self.ingest_secrets)
            .filter(|s| !s.is_empty())
    }
}

impl CallbacksConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let secrets = self
            .signing_keys()
            .map(|s| ("callbacks.signing_secret", s))
            .chain(self.ingest_keys().map(|s| ("callbacks.ingest_secret", s)));
        for (field, secret) in secrets {
            if let Err(e) = SecretKey::parse(secret.expose()) {
                out.push(ConfigProblem::new(field, e.to_string()));
            }
        }
        if self.timeout.is_zero() {
            out.push(ConfigProblem::new(
                "callbacks.timeout_ms",
                "must be positive",
            ));
        }
        out
    }
}
