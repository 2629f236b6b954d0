//! Outbound deliveries (claimed like jobs), inbound ingest, and the audit of every attempt.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Channel, Store, StoreResult, jobs::FinishedRow};
use crate::{
    ids::JobId,
    model::{Direction, FinishedJob, JobStatus, Mode, Outcome},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::Type)]
#[sqlx(type_name = "delivery_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Gone,
    Exhausted,
}

/// A delivery a worker now holds (until `next_attempt_at`, which doubles as its lease).
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub job_id: JobId,
    pub url: String,
    pub webhook_id: String,
    pub attempt: i32,
    pub manual_retries: i32,
}

/// The end of one delivery attempt.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt<'a> {
    pub delivery: &'a ClaimedDelivery,
    pub status: DeliveryStatus,
    /// For `pending`: when to try again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    pub status_code: Option<i32>,
    pub response_excerpt: Option<&'a str>,
    pub duration_ms: i32,
    pub error: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub url: String,
    pub webhook_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct CallbackAudit {
    pub id: i64,
    pub direction: Direction,
    pub url: Option<String>,
    pub attempt: Option<i32>,
    pub webhook_id: Option<String>,
    pub status_code: Option<i32>,
    pub response_excerpt: Option<String>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    pub auth_method: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One inbound `/callbacks/ingest` attempt, accepted or not.
#[derive(Debug, Clone)]
pub struct IngestAudit<'a> {
    pub job_id: Option<JobId>,
    pub webhook_id: Option<&'a str>,
    pub status_code: i32,
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    pub auth_method: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    pub duration_ms: i32,
}

/// What ingest needs to know about the job a callback names.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    pub status: JobStatus,
    pub mode: Mode,
    pub token_hashes: Vec<Vec<u8>>,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl Store {
    pub async fn claim_deliveries(
        &self,
        owner: Uuid,
        limit: i64,
        lease_secs: f64,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let rows = sqlx::query!(
            r#"
            WITH due AS (
                SELECT id FROM callback_deliveries
                WHERE status = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            UPDATE callback_deliveries d
            SET attempts = d.attempts + 1, lease_owner = $1,
                next_attempt_at = now() + make_interval(secs => $3)
            FROM due WHERE d.id = due.id
            RETURNING d.id, d.job_id, d.url, d.webhook_id, d.attempts, d.manual_retries
            "#,
            owner,
            limit,
            lease_secs,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ClaimedDelivery {
                id: r.id,
                job_id: r.job_id.into(),
                url: r.url,
                webhook_id: r.webhook_id,
                attempt: r.attempts,
                manual_retries: r.manual_retries,
            })
            .collect())
    }

    /// Audits the attempt (always: it happened) and moves the delivery on, if this worker
    /// still holds it.
    pub async fn record_delivery_attempt(
        &self,
        owner: Uuid,
        a: &DeliveryAttempt<'_>,
    ) -> StoreResult<bool> {
        let d = a.delivery;
        let row = sqlx::query!(
            r#"
            WITH audit AS (
                INSERT INTO audit_events (kind, job_id, delivery_id, target, target_host, attempt,
                                          webhook_id, http_status, excerpt, duration_ms, error,
                                          next_attempt_at, outcome, actor_kind, instance_id)
                VALUES ('callback.out', $3, $1, $4, $14, $5, $6, $7, $8, $9, $10, $11, $12,
                        'instance', $2::uuid)
            ), moved AS (
                UPDATE callback_deliveries
                SET status = $13, lease_owner = NULL,
                    next_attempt_at = COALESCE($11, next_attempt_at),
                    last_status_code = $7, last_error = $10,
                    finished_at = CASE WHEN $13 = 'pending'::delivery_status THEN NULL ELSE now() END
                WHERE id = $1 AND lease_owner = $2 AND attempts = $5
                RETURNING id
            )
            SELECT count(*) AS "moved!" FROM moved
            "#,
            d.id,
            owner,
            d.job_id.uuid(),
            d.url,
            d.attempt,
            d.webhook_id,
            a.status_code,
            a.response_excerpt,
            a.duration_ms,
            a.error,
            a.next_attempt_at,
            a.outcome.as_str(),
            a.status as DeliveryStatus,
            url::Url::parse(&d.url).ok().and_then(|u| u.host_str().map(str::to_owned)),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.moved > 0)
    }

    /// An exhausted delivery goes out once more, now. Returns the status it had (None: the
    /// job has no delivery).
    pub async fn retry_delivery(&self, job: JobId) -> StoreResult<Option<DeliveryStatus>> {
        let row = sqlx::query!(
            r#"
            WITH target AS (
                SELECT id, status FROM callback_deliveries WHERE job_id = $1 FOR UPDATE
            ), retried AS (
                UPDATE callback_deliveries d
                SET status = 'pending', next_attempt_at = now(),
                    manual_retries = d.manual_retries + 1, finished_at = NULL
                FROM target t WHERE d.id = t.id AND t.status = 'exhausted'
                RETURNING d.id
            ), wake AS (
                SELECT pg_notify($2, '') FROM retried
            )
            SELECT t.status AS "status!: DeliveryStatus" FROM target t LEFT JOIN wake ON true
            "#,
            job.uuid(),
            Channel::Deliveries.name(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.status))
    }

    pub async fn delivery_of(&self, job: JobId) -> StoreResult<Option<DeliveryRecord>> {
        Ok(sqlx::query_as!(
            DeliveryRecord,
            r#"
            SELECT url, webhook_id, status AS "status: DeliveryStatus", attempts,
                   next_attempt_at, last_status_code, last_error, created_at, finished_at
            FROM callback_deliveries WHERE job_id = $1
            "#,
            job.uuid(),
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn callback_audits(&self, job: JobId) -> StoreResult<Vec<CallbackAudit>> {
        Ok(sqlx::query_as!(
            CallbackAudit,
            r#"
            SELECT id, substring(kind FROM 10) AS "direction!: Direction", target AS url,
                   attempt, webhook_id, http_status AS status_code,
                   excerpt AS response_excerpt, duration_ms, error, next_attempt_at,
                   outcome AS "outcome: Outcome", auth_method, at AS created_at
            FROM audit_events
            WHERE job_id = $1 AND kind IN ('callback.out', 'callback.in')
            ORDER BY id
            "#,
            job.uuid(),
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn audit_ingest(&self, a: &IngestAudit<'_>) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO audit_events (kind, job_id, webhook_id, http_status, outcome, error,
                                      auth_method, client_addr, duration_ms, actor_kind)
            VALUES ('callback.in', $1, $2, $3, $4, $5, $6, $7, $8, 'flow')
            "#,
            a.job_id.map(JobId::uuid),
            a.webhook_id,
            a.status_code,
            a.outcome.as_str(),
            a.error,
            a.auth_method,
            a.remote_addr,
            a.duration_ms,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn ingest_target(&self, job: JobId) -> StoreResult<Option<IngestTarget>> {
        let row = sqlx::query!(
            r#"
            SELECT status AS "status: JobStatus", mode AS "mode: Mode", callback_token_hashes,
                   result, error_code, error_message
            FROM jobs WHERE id = $1
            "#,
            job.uuid(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| IngestTarget {
            status: r.status,
            mode: r.mode,
            token_hashes: r.callback_token_hashes.unwrap_or_default(),
            result: r.result,
            error_code: r.error_code,
            error_message: r.error_message,
        }))
    }

    pub async fn was_seen(&self, webhook_id: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM ingest_seen WHERE webhook_id = $1) AS "seen!""#,
            webhook_id,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records an inbound webhook-id; false when it was seen before.
    pub async fn first_sighting(&self, webhook_id: &str, job: JobId) -> StoreResult<bool> {
        let inserted = sqlx::query!(
            r#"
            INSERT INTO ingest_seen (webhook_id, job_id) VALUES ($1, $2)
            ON CONFLICT (webhook_id) DO NOTHING
            "#,
            webhook_id,
            job.uuid(),
        )
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Finishes a flow job with the outcome its flow reported (fenced: only while the job is
    /// unfinished: awaiting the callback, still running the attempt that handed the work over,
    /// or queued for a retry the report makes unnecessary).
    pub async fn complete_from_callback(
        &self,
        job: JobId,
        origin: Uuid,
        succeeded: bool,
        result: Option<&Value>,
        error_code: Option<&str>,
        error_message: Option<&str>,
    ) -> StoreResult<Option<FinishedJob>> {
        let status = if succeeded {
            JobStatus::Succeeded
        } else {
            JobStatus::Failed
        };
        let row = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH done AS (
                UPDATE jobs j
                SET status = $2, result = $3, error_code = $4, error_message = $5,
                    lease_owner = NULL, lease_expires_at = NULL, callback_deadline_at = NULL,
                    finished_at = now(),
                    duration_ms = (extract(epoch FROM now() - j.created_at) * 1000)::bigint
                FROM (SELECT status AS before FROM jobs WHERE id = $1 FOR UPDATE) b
                WHERE j.id = $1 AND j.mode = 'flow'
                  AND j.status IN ('awaiting_callback', 'running', 'queued')
                RETURNING j.id, j.intent, j.mode, j.status, j.result, j.error_code,
                          j.error_message, j.callback_url, j.duration_ms, j.finished_at,
                          j.attempts, j.request_id, b.before
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id,
                                          duration_ms)
                SELECT id, intent, mode, 'callback_received', before, status, attempts, $6, 'flow',
                       request_id, duration_ms
                FROM done
            ), wake AS (
                SELECT notify_jobs_done($6, array_agg(id)) FROM done
            )
            SELECT done.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM done LEFT JOIN wake ON true
            "#,
            job.uuid(),
            status as JobStatus,
            result,
            error_code,
            error_message,
            origin,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(FinishedJob::from))
    }

    /// Remembers one more attempt's callback token (only its hash).
    pub async fn add_callback_token(&self, job: JobId, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query!(
            r#"
            UPDATE jobs SET callback_token_hashes = array_append(callback_token_hashes, $2)
            WHERE id = $1
            "#,
            job.uuid(),
            token_hash,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Flows that never called back end `timed_out` at their deadline.
    pub async fn expire_callback_deadlines(&self, limit: i64) -> StoreResult<Vec<FinishedJob>> {
        let rows = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH expired AS (
                SELECT id FROM jobs
                WHERE status = 'awaiting_callback' AND callback_deadline_at < now()
                ORDER BY callback_deadline_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            ), done AS (
                UPDATE jobs j
                SET status = 'timed_out', error_code = 'callback_deadline',
                    error_message = 'the flow did not call back before its deadline',
                    callback_deadline_at = NULL, finished_at = now(),
                    duration_ms = (extract(epoch FROM now() - j.created_at) * 1000)::bigint
                FROM expired e WHERE j.id = e.id
                RETURNING j.id, j.intent, j.mode, j.status, j.result, j.callback_url,
                          j.duration_ms, j.finished_at, j.attempts, j.error_code, j.error_message,
                          j.request_id
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, actor_kind, request_id, duration_ms)
                SELECT id, intent, mode, 'timed_out', 'awaiting_callback', 'timed_out', attempts,
                       'maintenance', request_id, duration_ms
                FROM done
            ), wake AS (
                SELECT notify_jobs_done(NULL, array_agg(id)) FROM done
            )
            SELECT done.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM done LEFT JOIN wake ON true
            "#,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FinishedJob::from).collect())
    }

    pub async fn purge_ingest_seen(&self, older_than_secs: f64) -> StoreResult<u64> {
        let done = sqlx::query!(
            "DELETE FROM ingest_seen WHERE received_at < now() - make_interval(secs => $1)",
            older_than_secs,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
