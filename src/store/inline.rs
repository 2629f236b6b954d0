//! A request filed, run and finished in one transaction: the job row is written once, already
//! final, with its history and the tool's own rows, and the whole request costs one commit
//! (one WAL flush) instead of three (intake, the tool's statement, the completion). A call
//! that runs no statement of its own (`system.echo`, `memory.write`, whose item the filing
//! statement writes) goes further: its job joins the intake's batch, one commit for many.
//!
//! Only for tools whose whole effect is statements in this database (or nothing): if anything
//! fails before the commit, nothing of the request exists, so the client's retry (or the
//! claim/lease path the intake falls back to) starts from scratch — no lost job, no second
//! memory item.

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{KeyClaim, NewJob, Store, StoreResult, jobs::FinishedRow, memory};
use crate::{
    ids::MemoryId,
    model::{FinishedJob, JobStatus, Mode},
    store::{MemoryItem, NewMemoryItem},
};

/// How the tool's call ended, as the job row records it.
#[derive(Debug, Clone)]
pub enum InlineOutcome {
    Succeeded(Value),
    /// A failure another attempt would not fix (a missing item): the job ends `failed`.
    Failed {
        code: String,
        message: String,
    },
}

impl InlineOutcome {
    /// The job row's columns for it: status, result, error code, error message.
    pub fn columns(&self) -> (JobStatus, Option<&Value>, Option<&str>, Option<&str>) {
        match self {
            InlineOutcome::Succeeded(v) => (JobStatus::Succeeded, Some(v), None, None),
            InlineOutcome::Failed { code, message } => (
                JobStatus::Failed,
                None,
                Some(code.as_str()),
                Some(message.as_str()),
            ),
        }
    }
}

/// One request's transaction, begun by the tool's first statement (`memory.get`,
/// `memory.delete`); a call that runs none files its job through the intake's batch instead.
/// Dropped without [`InlineTx::commit`], it rolls back.
pub struct InlineTx {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    /// A memory item to be written with the job: in the intake's batch when the call ran no
    /// statement, else by [`InlineTx::file_finished`] before the job.
    memory_with_job: Option<MemoryItemWithJob>,
}

/// A memory item written by the statement that files its job (`memory.write` at once): no
/// statement of its own, so the request can join the intake's batch (group commit).
#[derive(Debug, Clone)]
pub struct MemoryItemWithJob {
    pub id: MemoryId,
    pub text: String,
    pub tags: Vec<String>,
    pub metadata: Value,
}

impl Store {
    pub fn begin_inline(&self) -> InlineTx {
        InlineTx {
            pool: self.pool.clone(),
            tx: None,
            memory_with_job: None,
        }
    }
}

impl InlineTx {
    async fn conn(&mut self) -> StoreResult<&mut PgConnection> {
        if self.tx.is_none() {
            self.tx = Some(super::begin(&self.pool).await?);
        }
        Ok(self.tx.as_mut().expect("begun above"))
    }

    /// Whether the call ran a statement. If not, the job (with what the call left to write
    /// with it, [`InlineTx::take_memory_with_job`]) can be filed with others' (group commit)
    /// instead of in a transaction of its own.
    pub fn ran_statements(&self) -> bool {
        self.tx.is_some()
    }

    /// The memory item the call left to write with its job, for a batch to write.
    pub fn take_memory_with_job(&mut self) -> Option<MemoryItemWithJob> {
        self.memory_with_job.take()
    }

    /// Writes `item` with the job (under it: `source_job_id`), by the statement that files
    /// the job.
    pub fn write_memory_with_job(&mut self, item: MemoryItemWithJob) {
        self.memory_with_job = Some(item);
    }

    pub async fn get_memory(&mut self, id: MemoryId) -> StoreResult<Option<MemoryItem>> {
        memory::get(self.conn().await?, id).await
    }

    pub async fn delete_memory(&mut self, id: MemoryId) -> StoreResult<bool> {
        memory::delete(self.conn().await?, id).await
    }

    /// Writes the job already finished by `instance` (attempt 1), its idempotency key, and the
    /// same history the claim/lease path records for a job run at once — `created` (into
    /// `running`) and the final event. `None`: the key already answers for another live job;
    /// the caller rolls back.
    ///
    /// No NOTIFY: PostgreSQL holds its notification-queue lock while a notifying transaction
    /// commits, so concurrent requests would commit one after another (measured at 64 clients:
    /// 2,000 commits/s with a NOTIFY, 4,670 without). Nobody can wait for the job before this
    /// commit (its id is in no answer yet; a replay finds it finished), and the live streams'
    /// NOTIFY is deferred: the caller sends one after the commit for a burst of such commits.
    pub async fn file_finished(
        &mut self,
        job: &NewJob<'_>,
        key: Option<&KeyClaim<'_>>,
        instance: Uuid,
        outcome: &InlineOutcome,
    ) -> StoreResult<Option<FinishedJob>> {
        if let Some(item) = self.memory_with_job.take() {
            let item = NewMemoryItem {
                id: item.id,
                text: &item.text,
                tags: &item.tags,
                metadata: &item.metadata,
                source_job: Some(job.id),
            };
            memory::insert(self.conn().await?, &item, false).await?;
        }
        let (scope, key_text, hash, derived, ttl) = KeyClaim::params(key);
        let (status, result, code, message) = outcome.columns();
        let statement = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH key AS (
                INSERT INTO idempotency_keys (scope, key, request_hash, job_id, derived, expires_at)
                SELECT $1, $2, $3, $4, $5, now() + make_interval(secs => $6)
                WHERE $2::text IS NOT NULL
                ON CONFLICT (scope, key) DO UPDATE
                    SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id,
                        derived = EXCLUDED.derived, created_at = now(),
                        expires_at = EXCLUDED.expires_at
                    WHERE idempotency_keys.expires_at <= now()
                RETURNING job_id
            ), job AS (
                -- created_at is the transaction's start (before the tool ran), finished_at the
                -- clock now: the duration is the request's, as on the claim/lease path.
                INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                                  attempt_timeout_ms, inputs, result, error_code, error_message,
                                  request_id, attempts, started_at, finished_at, duration_ms,
                                  api_key_id, principal, client_addr, run_at, schedule_id)
                SELECT $4, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 1, now(),
                       clock_timestamp(),
                       (extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint,
                       $19, $20, $21, now(), $22
                -- The history's NOTIFY is sent after the commit instead (see the migration
                -- deferred_event_notify): a NOTIFY in the transaction would serialize commits.
                FROM (SELECT set_config('orch.events_notify', 'deferred', true)) quiet
                WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM key)
                RETURNING id, intent, mode, status, result, error_code, error_message,
                          callback_url, duration_ms, finished_at, request_id, attempts
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, actor_id, actor_name,
                                          request_id, client_addr, duration_ms, detail)
                SELECT id, intent, mode, 'created', NULL::job_status, 'running'::job_status, 1, $23::uuid,
                       CASE WHEN $19::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       $19::uuid::text, $20, request_id, $21, NULL, NULL
                FROM job
                UNION ALL
                SELECT id, intent, mode, status::text, 'running'::job_status, status, 1, $23::uuid,
                       'instance',
                       $23::uuid::text, NULL, request_id, NULL, duration_ms,
                       CASE WHEN error_code IS NULL THEN NULL
                            ELSE jsonb_build_object('code', error_code, 'message', error_message,
                                                    'retry_at', NULL) END
                FROM job
            )
            SELECT job.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM job
            "#,
            scope,
            key_text,
            hash,
            job.id.uuid(),
            derived,
            ttl,
            job.intent,
            job.mode as Mode,
            job.requested_mode as Mode,
            status as JobStatus,
            job.priority,
            job.max_attempts,
            job.attempt_timeout_ms,
            job.inputs,
            result,
            code,
            message,
            job.request_id,
            job.principal.api_key_id,
            job.principal.name,
            job.principal.client_addr,
            job.schedule_id,
            instance,
        );
        let row = match self.tx.as_mut() {
            Some(tx) => statement.fetch_optional(&mut **tx).await?,
            None => statement.fetch_optional(&self.pool).await?,
        };
        Ok(row.map(Into::into))
    }

    /// Commits the tool's statements with the job (a job filed alone is committed already).
    pub async fn commit(self) -> StoreResult<()> {
        if let Some(tx) = self.tx {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for InlineTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineTx")
    }
}
