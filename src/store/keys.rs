//! API keys (only their SHA-256 is stored) and the audit entries about keys and logins.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Channel, Store, StoreResult};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// `active`, `revoked` or `expired`.
    pub fn state(&self) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= Utc::now()) {
            "expired"
        } else {
            "active"
        }
    }
}

pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a [u8],
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
    /// Who did it, for the audit trail: `operator` (CLI) or `api_key`.
    pub actor_kind: &'a str,
    pub actor_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// A failed authentication, for the audit trail (never the key itself).
pub struct AuthFailure<'a> {
    pub reason: &'a str,
    pub status: i32,
    pub key_prefix: Option<&'a str>,
    pub api_key_id: Option<Uuid>,
    pub api_key_name: Option<&'a str>,
    pub path: &'a str,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

impl Store {
    /// Creates a key; None when an active key already has that name.
    pub async fn create_api_key(&self, k: &NewApiKey<'_>) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query_as!(
            ApiKeyRecord,
            r#"
            WITH created AS (
                INSERT INTO api_keys (id, name, prefix, key_hash, scopes, expires_at, created_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING
                RETURNING *
            ), audit AS (
                INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name,
                                          request_id, detail)
                SELECT 'key.created', 'ok', $8, $9, $7, $10,
                       jsonb_build_object('key_id', id, 'name', name, 'prefix', prefix,
                                          'scopes', scopes, 'expires_at', expires_at)
                FROM created
            ), wake AS (
                SELECT pg_notify($11, '') FROM created
            )
            SELECT id AS "id!", name AS "name!", prefix AS "prefix!", scopes AS "scopes!",
                   created_at AS "created_at!", created_by, last_used_at, expires_at, revoked_at
            FROM created LEFT JOIN wake ON true
            "#,
            k.id,
            k.name,
            k.prefix,
            k.key_hash,
            k.scopes,
            k.expires_at,
            k.created_by,
            k.actor_kind,
            k.actor_id,
            k.request_id,
            Channel::Keys.name(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    pub async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(sqlx::query_as!(
            ApiKeyRecord,
            r#"
            SELECT id, name, prefix, scopes, created_at, created_by, last_used_at, expires_at,
                   revoked_at
            FROM api_keys ORDER BY created_at
            "#
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes the active key with this id or name; returns it (None: no such active key).
    pub async fn revoke_api_key(
        &self,
        id_or_name: &str,
        actor_kind: &str,
        actor_id: Option<&str>,
        actor_name: &str,
        request_id: Option<&str>,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(sqlx::query_as!(
            ApiKeyRecord,
            r#"
            WITH revoked AS (
                UPDATE api_keys SET revoked_at = now()
                WHERE revoked_at IS NULL AND (id::text = $1 OR name = $1)
                RETURNING *
            ), audit AS (
                INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name,
                                          request_id, detail)
                SELECT 'key.revoked', 'ok', $2, $3, $4, $5,
                       jsonb_build_object('key_id', id, 'name', name, 'prefix', prefix)
                FROM revoked
            ), wake AS (
                SELECT pg_notify($6, '') FROM revoked
            )
            SELECT id AS "id!", name AS "name!", prefix AS "prefix!", scopes AS "scopes!",
                   created_at AS "created_at!", created_by, last_used_at, expires_at, revoked_at
            FROM revoked LEFT JOIN wake ON true
            "#,
            id_or_name,
            actor_kind,
            actor_id,
            actor_name,
            request_id,
            Channel::Keys.name(),
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn api_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(sqlx::query_as!(
            ApiKeyRecord,
            r#"
            SELECT id, name, prefix, scopes, created_at, created_by, last_used_at, expires_at,
                   revoked_at
            FROM api_keys WHERE key_hash = $1
            "#,
            hash,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records use, at most once a minute per key (a write per request would be waste).
    pub async fn touch_api_key(&self, id: Uuid) -> StoreResult<()> {
        sqlx::query!(
            r#"
            UPDATE api_keys SET last_used_at = now()
            WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
            "#,
            id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_auth_failure(&self, f: &AuthFailure<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO audit_events (kind, outcome, http_status, error, actor_kind, actor_id,
                                      actor_name, request_id, client_addr, target, detail)
            VALUES ('auth.failed', 'rejected', $1, $2,
                    CASE WHEN $3::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                    $3::uuid::text, $4, $5, $6, $7, jsonb_build_object('key_prefix', $8::text))
            "#,
            f.status,
            f.reason,
            f.api_key_id,
            f.api_key_name,
            f.request_id,
            f.client_addr,
            f.path,
            f.key_prefix,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
