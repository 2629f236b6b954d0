//! Dashboard sessions: the SHA-256 of each cookie's token, the key it acts as, its form token.

use uuid::Uuid;

use super::{ApiKeyRecord, Store, StoreResult};
use crate::model::AuditKind;

/// A live session: the key it acts as (checked like a presented key) and its form token.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub key: ApiKeyRecord,
    pub csrf: String,
}

impl Store {
    /// Opens a session for `key` (audited as a sign-in).
    pub async fn create_ui_session(
        &self,
        token_hash: &[u8],
        key: (Uuid, &str),
        csrf: &str,
        ttl_secs: f64,
        client_addr: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = super::begin(&self.pool).await?;
        sqlx::query!(
            r#"
            INSERT INTO ui_sessions (token_hash, api_key_id, csrf, expires_at)
            VALUES ($1, $2, $3, now() + make_interval(secs => $4))
            "#,
            token_hash,
            key.0,
            csrf,
            ttl_secs,
        )
        .execute(&mut *tx)
        .await?;
        audit_session(&mut tx, AuditKind::UiSignedIn, key.0, key.1, client_addr).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session of a cookie, while it lasts.
    pub async fn ui_session(&self, token_hash: &[u8]) -> StoreResult<Option<UiSession>> {
        let row = sqlx::query!(
            r#"
            SELECT s.csrf, k.id, k.name, k.prefix, k.scopes, k.created_at, k.created_by,
                   k.last_used_at, k.expires_at, k.revoked_at
            FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id
            WHERE s.token_hash = $1 AND s.expires_at > now()
            "#,
            token_hash,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UiSession {
            csrf: r.csrf,
            key: ApiKeyRecord {
                id: r.id,
                name: r.name,
                prefix: r.prefix,
                scopes: r.scopes,
                created_at: r.created_at,
                created_by: r.created_by,
                last_used_at: r.last_used_at,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
            },
        }))
    }

    /// Ends a session (audited as a sign-out); nothing when it is already gone.
    pub async fn end_ui_session(
        &self,
        token_hash: &[u8],
        client_addr: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = super::begin(&self.pool).await?;
        let ended = sqlx::query!(
            r#"
            DELETE FROM ui_sessions s USING api_keys k
            WHERE s.token_hash = $1 AND k.id = s.api_key_id
            RETURNING k.id, k.name
            "#,
            token_hash,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(key) = ended {
            audit_session(
                &mut tx,
                AuditKind::UiSignedOut,
                key.id,
                &key.name,
                client_addr,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops sessions that ended, a bounded batch at a time (maintenance).
    pub async fn purge_ui_sessions(&self, limit: i64) -> StoreResult<u64> {
        Ok(sqlx::query!(
            r#"
            DELETE FROM ui_sessions WHERE token_hash IN (
                SELECT token_hash FROM ui_sessions WHERE expires_at < now() LIMIT $1)
            "#,
            limit,
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

async fn audit_session(
    tx: &mut sqlx::PgConnection,
    kind: AuditKind,
    key: Uuid,
    name: &str,
    client_addr: Option<&str>,
) -> StoreResult<()> {
    sqlx::query!(
        r#"
        INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name, client_addr,
                                  target)
        VALUES ($1, 'ok', 'api_key', $2::uuid::text, $3, $4, '/ui')
        "#,
        kind.as_str(),
        key,
        name,
        client_addr,
    )
    .execute(tx)
    .await?;
    Ok(())
}
