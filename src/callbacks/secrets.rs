//! Where the outbound signing secrets come from: the configuration when it has any (during a
//! rotation each of them signs), else one secret generated once and kept in the database, so
//! every instance signs with the same one. Nothing is ever sent unsigned.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::CallbacksConfig;
use super::{NoSigningKey, SecretKey, SecretKeyError, Signer};
use crate::{
    secret::Secret,
    store::{Store, StoreError},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// `callbacks.signing_secret` / `signing_secrets`.
    Configured,
    /// Generated on first start and stored in the database.
    Generated,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("reading the generated signing secret: {0}")]
    Store(#[from] StoreError),
    #[error("a signing secret is not valid: {0}")]
    Invalid(#[from] SecretKeyError),
    #[error(transparent)]
    NoKey(#[from] NoSigningKey),
}

#[derive(Clone)]
pub struct SigningSecrets {
    source: SecretSource,
    secrets: Vec<Secret>,
    generated_at: Option<DateTime<Utc>>,
}

impl SigningSecrets {
    /// The configured secrets, or the database's generated one (generated now if there is
    /// none yet). Logs which, never the value.
    pub async fn resolve(config: &CallbacksConfig, store: &Store) -> Result<Self, SecretsError> {
        let configured: Vec<Secret> = config.signing_keys().cloned().collect();
        if !configured.is_empty() {
            return Ok(Self {
                source: SecretSource::Configured,
                secrets: configured,
                generated_at: None,
            });
        }
        let candidate = SecretKey::generate();
        let stored = store.signing_secret_or_store(&candidate).await?;
        if stored.created {
            tracing::warn!(
                "callbacks: no signing secret is configured, so one was generated and stored in \
                 the database; give it to callback receivers and flows that verify signatures \
                 (`orchestrator callbacks secret`, or GET /callbacks/secret with keys:admin)"
            );
        } else {
            tracing::info!(
                generated_at = %stored.set_at,
                "callbacks: signing with the secret stored in the database"
            );
        }
        let secret = Secret::from(stored.value);
        SecretKey::parse(secret.expose())?;
        Ok(Self {
            source: SecretSource::Generated,
            secrets: vec![secret],
            generated_at: Some(stored.set_at),
        })
    }

    pub fn signer(&self) -> Result<Signer, SecretsError> {
        let keys = self
            .secrets
            .iter()
            .map(|s| SecretKey::parse(s.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer::new(keys)?)
    }

    pub fn source(&self) -> SecretSource {
        self.source
    }

    /// Every secret that signs, the primary first.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    pub fn generated_at(&self) -> Option<DateTime<Utc>> {
        self.generated_at
    }
}
