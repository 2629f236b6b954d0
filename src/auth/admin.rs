//! Creating and revoking keys, for the CLI and the `/keys` API alike (both audited).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Scopes, generate_key};
use crate::model::ActorKind;
use crate::store::{ApiKeyRecord, NewApiKey, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("name: must be 1 to 100 characters")]
    BadName,
    #[error("scopes: {0}")]
    BadScopes(#[from] super::ScopeError),
    #[error("an active key named `{0}` exists already")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who manages keys, for the audit trail.
#[derive(Debug, Clone)]
pub struct KeyAdmin<'a> {
    /// `Operator` (the CLI) or `ApiKey`.
    pub actor_kind: ActorKind,
    pub actor_id: Option<String>,
    pub actor_name: &'a str,
    pub request_id: Option<&'a str>,
}

/// A new key: the secret is returned once and never stored.
pub struct CreatedKey {
    pub secret: String,
    pub record: ApiKeyRecord,
}

pub async fn create_key(
    store: &Store,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
    by: &KeyAdmin<'_>,
) -> Result<CreatedKey, KeyAdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyAdminError::BadName);
    }
    let scopes = Scopes::parse(scopes)?;
    let key = generate_key();
    let record = store
        .create_api_key(&NewApiKey {
            id: Uuid::now_v7(),
            name,
            prefix: &key.prefix,
            key_hash: &key.hash,
            scopes: scopes.as_slice(),
            expires_at,
            created_by: by.actor_name,
            actor_kind: by.actor_kind.as_str(),
            actor_id: by.actor_id.as_deref(),
            request_id: by.request_id,
        })
        .await?
        .ok_or_else(|| KeyAdminError::NameTaken(name.to_owned()))?;
    Ok(CreatedKey {
        secret: key.secret,
        record,
    })
}

pub async fn revoke_key(
    store: &Store,
    id_or_name: &str,
    by: &KeyAdmin<'_>,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    store
        .revoke_api_key(
            id_or_name,
            by.actor_kind.as_str(),
            by.actor_id.as_deref(),
            by.actor_name,
            by.request_id,
        )
        .await
}
