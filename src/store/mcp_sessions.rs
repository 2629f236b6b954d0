//! MCP sessions shared by every instance: what a session's `initialize` said, so any instance
//! can restore it.

use serde_json::Value;

use super::{Store, StoreResult};

impl Store {
    /// Remembers (or replaces) a session's `initialize` parameters.
    pub async fn save_mcp_session(&self, id: &str, initialize_params: &Value) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO mcp_sessions (id, initialize_params) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE
             SET initialize_params = EXCLUDED.initialize_params, last_used_at = now()",
            id,
            initialize_params,
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A session's `initialize` parameters, marking it used.
    pub async fn load_mcp_session(&self, id: &str) -> StoreResult<Option<Value>> {
        Ok(sqlx::query_scalar!(
            "UPDATE mcp_sessions SET last_used_at = now() WHERE id = $1
             RETURNING initialize_params",
            id,
        )
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn delete_mcp_session(&self, id: &str) -> StoreResult<()> {
        sqlx::query!("DELETE FROM mcp_sessions WHERE id = $1", id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets sessions unused for `idle_secs` (their instance died, or the client left).
    pub async fn purge_idle_mcp_sessions(&self, idle_secs: f64, limit: i64) -> StoreResult<u64> {
        Ok(sqlx::query!(
            "DELETE FROM mcp_sessions WHERE id IN (
                 SELECT id FROM mcp_sessions
                 WHERE last_used_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            idle_secs,
            limit,
        )
        .execute(self.pool())
        .await?
        .rows_affected())
    }
}
