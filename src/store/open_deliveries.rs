//! Callback deliveries still open (pending, or exhausted and waiting for a person), across
//! jobs, for the dashboard's callbacks page.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Channel, DeliveryStatus, Store, StoreResult};

/// One open delivery.
#[derive(Debug, Clone)]
pub struct OpenDelivery {
    pub job_id: Uuid,
    pub url: String,
    pub host: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub manual_retries: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

impl Store {
    /// Open deliveries of the jobs of `owner` (all jobs when none), of `host` (all when none),
    /// exhausted first, then by when they go out.
    pub async fn open_deliveries(
        &self,
        owner: Option<Uuid>,
        host: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OpenDelivery>> {
        // The host as the audit trail's `target_host` spells it.
        Ok(sqlx::query_as!(
            OpenDelivery,
            r#"
            SELECT d.job_id, d.url,
                   coalesce(substring(d.url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)'), '')
                       AS "host!",
                   d.status AS "status: DeliveryStatus", d.attempts, d.manual_retries,
                   d.next_attempt_at, d.last_status_code, d.last_error
            FROM callback_deliveries d JOIN jobs j ON j.id = d.job_id
            WHERE d.status IN ('pending', 'exhausted')
              AND ($1::uuid IS NULL OR j.api_key_id = $1)
              AND ($2::text IS NULL
                   OR substring(d.url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)') = $2)
            ORDER BY d.status DESC, d.next_attempt_at
            LIMIT $3
            "#,
            owner,
            host,
            limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sends every exhausted delivery to `host` (of `owner`'s jobs, or all) once more, now.
    pub async fn retry_exhausted_to(&self, owner: Option<Uuid>, host: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH retried AS (
                UPDATE callback_deliveries d
                SET status = 'pending', next_attempt_at = now(),
                    manual_retries = d.manual_retries + 1, finished_at = NULL
                FROM jobs j
                WHERE j.id = d.job_id AND d.status = 'exhausted'
                  AND ($1::uuid IS NULL OR j.api_key_id = $1)
                  AND substring(d.url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)') = $2
                RETURNING d.id
            ), wake AS (
                SELECT pg_notify($3, '') FROM (SELECT 1 FROM retried LIMIT 1) any_retried
            )
            SELECT count(*) AS "retried!" FROM retried LEFT JOIN wake ON true
            "#,
            owner,
            host,
            Channel::Deliveries.name(),
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
