//! Presented key → principal. Lookups are cached for a few seconds (the hot path must not
//! pay a query per request); creating or revoking a key notifies every instance, which drops
//! its cache at once.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{AuthMode, Scopes, hash_key, key_prefix};
use crate::{
    model::Principal,
    store::{ApiKeyRecord, Store, StoreError},
};

const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// None in open mode (no key was ever created and none is required): everything is
    /// allowed.
    pub scopes: Option<Scopes>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required: send Authorization: Bearer <key> or X-API-Key")]
    Missing,
    #[error("the API key is not valid")]
    Unknown { prefix: String },
    #[error("the API key was revoked")]
    Revoked { record: Box<ApiKeyRecord> },
    #[error("the API key expired")]
    Expired { record: Box<ApiKeyRecord> },
    #[error("the dashboard session ended: sign in again")]
    NoSession,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Cached {
    key: Option<ApiKeyRecord>,
    at: Instant,
}

/// Whether the API needs keys, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// `auth.mode = "required"`.
    Required,
    /// The first API key was created: keys are required for good.
    Closed,
    /// `auth.mode = "auto"` and no key was ever created.
    Open,
}

pub struct Authenticator {
    store: Store,
    mode: AuthMode,
    by_hash: Mutex<HashMap<Vec<u8>, Cached>>,
    /// Set once the database says a key was ever created; never cleared (closing is for good).
    closed: AtomicBool,
    /// When the API was last seen open (rechecked after the cache TTL or a key change).
    open_checked: Mutex<Option<Instant>>,
}

impl Authenticator {
    pub fn new(store: Store, mode: AuthMode) -> Self {
        Self {
            store,
            mode,
            by_hash: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            open_checked: Mutex::new(None),
        }
    }

    /// Drops everything cached (a key was created or revoked somewhere).
    pub fn invalidate(&self) {
        self.by_hash.lock().expect("auth cache poisoned").clear();
        *self.open_checked.lock().expect("auth cache poisoned") = None;
    }

    pub async fn state(&self) -> Result<AuthState, StoreError> {
        if self.mode == AuthMode::Required {
            return Ok(AuthState::Required);
        }
        if self.closed.load(Ordering::Acquire) {
            return Ok(AuthState::Closed);
        }
        if let Some(at) = *self.open_checked.lock().expect("auth cache poisoned")
            && at.elapsed() < CACHE_TTL
        {
            return Ok(AuthState::Open);
        }
        if self.store.keys_required_since().await?.is_some() {
            self.closed.store(true, Ordering::Release);
            return Ok(AuthState::Closed);
        }
        *self.open_checked.lock().expect("auth cache poisoned") = Some(Instant::now());
        Ok(AuthState::Open)
    }

    /// Whether requests must carry a key.
    pub async fn enforced(&self) -> Result<bool, StoreError> {
        Ok(self.state().await? != AuthState::Open)
    }

    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Authenticated, AuthError> {
        let Some(secret) = presented else {
            if self.enforced().await? {
                return Err(AuthError::Missing);
            }
            return Ok(Authenticated {
                principal: Principal::anonymous(),
                scopes: None,
            });
        };
        // A key that is sent is always checked, even in open mode: a typo must not pass.
        let hash = hash_key(secret);
        let record = self.lookup(&hash).await?;
        let Some(record) = record else {
            return Err(AuthError::Unknown {
                prefix: key_prefix(secret),
            });
        };
        self.accept(record)
    }

    /// A dashboard session acts as its key: the same checks (revoked, expired), the same
    /// principal. Returns the session's form token too.
    pub async fn authenticate_session(
        &self,
        token: &str,
    ) -> Result<(Authenticated, String), AuthError> {
        let session = self
            .store
            .ui_session(&hash_key(token))
            .await?
            .ok_or(AuthError::NoSession)?;
        Ok((self.accept(session.key)?, session.csrf))
    }

    fn accept(&self, record: ApiKeyRecord) -> Result<Authenticated, AuthError> {
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked {
                record: Box::new(record),
            });
        }
        if record.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(AuthError::Expired {
                record: Box::new(record),
            });
        }
        let scopes = Scopes::parse(&record.scopes).unwrap_or_else(|e| {
            tracing::warn!(key = %record.name, "stored scopes are invalid ({e}); none granted");
            Scopes::parse(&["none.granted".to_owned()]).expect("a literal scope")
        });
        let store = self.store.clone();
        let id = record.id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(id).await {
                tracing::debug!(error = %e, "could not record key use");
            }
        });
        Ok(Authenticated {
            principal: Principal {
                api_key_id: Some(record.id),
                name: record.name,
                ..Principal::default()
            },
            scopes: Some(scopes),
        })
    }

    async fn lookup(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>, StoreError> {
        {
            let cache = self.by_hash.lock().expect("auth cache poisoned");
            if let Some(c) = cache.get(hash)
                && c.at.elapsed() < CACHE_TTL
            {
                return Ok(c.key.clone());
            }
        }
        // Looked up by SHA-256: timing can only tell about the hash, which reveals nothing
        // about a key one does not already hold.
        let key = self.store.api_key_by_hash(hash).await?;
        let mut cache = self.by_hash.lock().expect("auth cache poisoned");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            hash.to_vec(),
            Cached {
                key: key.clone(),
                at: Instant::now(),
            },
        );
        Ok(key)
    }
}
