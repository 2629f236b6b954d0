//! Idempotency keys: which live job answers a key, and the hash of the request that made it.

use super::{Store, StoreResult};
use crate::ids::JobId;

/// The key a new job claims in the intake statement.
#[derive(Debug, Clone, Copy)]
pub struct KeyClaim<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub derived: bool,
    pub ttl_secs: f64,
}

/// A key claim's statement parameters: (scope, key, request hash, derived, ttl), all NULL
/// when the job claims no key.
pub(super) type KeyParams<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a [u8]>,
    Option<bool>,
    Option<f64>,
);

impl<'a> KeyClaim<'a> {
    pub(super) fn params(claim: Option<&KeyClaim<'a>>) -> KeyParams<'a> {
        match claim {
            Some(k) => (
                Some(k.scope),
                Some(k.key),
                Some(k.request_hash),
                Some(k.derived),
                Some(k.ttl_secs),
            ),
            None => (None, None, None, None, None),
        }
    }
}

/// A live key that already answers for a job.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub job_id: JobId,
    pub request_hash: Vec<u8>,
}

impl Store {
    pub async fn find_key(&self, scope: &str, key: &str) -> StoreResult<Option<StoredKey>> {
        let row = sqlx::query!(
            r#"
            SELECT job_id, request_hash FROM idempotency_keys
            WHERE scope = $1 AND key = $2 AND expires_at > now()
            "#,
            scope,
            key,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredKey {
            job_id: r.job_id.into(),
            request_hash: r.request_hash,
        }))
    }

    /// The jobs a client-sent key was used for (the dashboard's search): the key of `owner`,
    /// or of any API key when `owner` is `None`. Keys are stored per API key, so the search
    /// probes the primary key once per key that exists (a few dozen) instead of scanning.
    pub async fn jobs_with_key(
        &self,
        key: &str,
        owner: Option<uuid::Uuid>,
    ) -> StoreResult<Vec<JobId>> {
        let rows = sqlx::query_scalar!(
            r#"
            SELECT job_id FROM idempotency_keys
            WHERE key = $1 AND NOT derived
              AND scope = ANY(CASE WHEN $2::uuid IS NULL
                                   THEN ARRAY(SELECT replace(id::text, '-', '') FROM api_keys)
                                        || ''::text
                                   ELSE ARRAY[replace($2::uuid::text, '-', '')] END)
            ORDER BY created_at DESC
            LIMIT 50
            "#,
            key,
            owner,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(JobId::from).collect())
    }

    /// Deletes up to `limit` expired keys; returns how many.
    pub async fn purge_expired_keys(&self, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query!(
            r#"
            DELETE FROM idempotency_keys
            WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM idempotency_keys WHERE expires_at <= now()
                LIMIT $1 FOR UPDATE SKIP LOCKED))
            "#,
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
