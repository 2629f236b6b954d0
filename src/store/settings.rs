//! Settings every instance shares and that are only ever set once (`server_settings`: triggers
//! refuse changing or deleting a row).

use chrono::{DateTime, Utc};

use super::{Store, StoreResult};
use crate::model::Principal;

/// The callback signing secret this database generated, and whether this call generated it.
pub struct StoredSecret {
    pub value: String,
    pub created: bool,
    pub set_at: DateTime<Utc>,
}

impl Store {
    /// When API keys became required for good (the first key was created), if they have.
    pub async fn keys_required_since(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar!(
            "SELECT set_at FROM server_settings WHERE name = 'auth.keys_required'"
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The generated signing secret: the stored one, or `candidate` stored now (audited) when
    /// there is none. Every instance ends up with the same secret, whoever stored it first.
    pub async fn signing_secret_or_store(&self, candidate: &str) -> StoreResult<StoredSecret> {
        loop {
            let row = sqlx::query!(
                r#"
                WITH stored AS (
                    INSERT INTO server_settings (name, value)
                    VALUES ('callbacks.signing_secret', $1)
                    ON CONFLICT (name) DO NOTHING
                    RETURNING value, set_at
                ), audit AS (
                    INSERT INTO audit_events (kind, outcome, actor_kind, detail)
                    SELECT 'callbacks.secret_generated', 'ok', 'instance',
                           jsonb_build_object('note', 'value not recorded')
                    FROM stored
                )
                SELECT value AS "value!", set_at AS "set_at!", true AS "created!" FROM stored
                UNION ALL
                SELECT value, set_at, false FROM server_settings
                WHERE name = 'callbacks.signing_secret'
                "#,
                candidate,
            )
            .fetch_optional(&self.pool)
            .await?;
            // None only when another instance stored it after this statement's snapshot was
            // taken: it is committed now, so the next round reads it.
            if let Some(r) = row {
                return Ok(StoredSecret {
                    value: r.value,
                    created: r.created,
                    set_at: r.set_at,
                });
            }
        }
    }

    /// Someone read the signing secret (the value is never recorded).
    pub async fn audit_secret_read(&self, by: &Principal, source: &str) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO audit_events (kind, outcome, actor_kind, actor_id, actor_name, request_id,
                                      client_addr, detail)
            VALUES ('callbacks.secret_read', 'ok', $1, $2, $3, $4, $5,
                    jsonb_build_object('source', $6::text))
            "#,
            by.actor_kind().as_str(),
            by.api_key_id.map(|id| id.to_string()),
            by.name,
            by.request_id,
            by.client_addr,
            source,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
