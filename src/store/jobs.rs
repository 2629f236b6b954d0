//! The job queue: intake, batched claims and completions fenced on the lease, rescue, cancel,
//! release, and reads for the jobs API.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use sqlx::{Postgres, Transaction};

use super::{
    Channel, HeldConnection, InlineOutcome, MemoryItemWithJob, Store, StoreResult,
    inline::RunColumns,
};
use crate::{
    ids::JobId,
    model::{FinishedJob, JobStatus, Mode, Principal, job_error},
};

/// A job to insert. With `start_now` the job is inserted already claimed by this instance
/// (attempt 1, lease held), so a request that waits for it needs no claim round trip.
#[derive(Debug)]
pub struct NewJob<'a> {
    pub id: JobId,
    pub intent: &'a str,
    pub mode: Mode,
    pub requested_mode: Mode,
    pub priority: i16,
    pub max_attempts: i32,
    pub attempt_timeout_ms: i32,
    pub inputs: &'a Value,
    pub callback_url: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub start_now: Option<Uuid>,
    pub lease_secs: f64,
    pub principal: &'a Principal,
    /// Not before this time; in the future, the job is filed as `scheduled`.
    pub run_at: Option<DateTime<Utc>>,
    pub schedule_id: Option<Uuid>,
    /// Jobs sharing the key run at most `concurrency_limit` at a time (then `start_now` is
    /// None: the claim takes the place).
    pub concurrency_key: Option<&'a str>,
    pub concurrency_limit: Option<i32>,
}

/// A job a worker now holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    pub intent: String,
    pub mode: Mode,
    pub inputs: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub attempt_timeout_ms: i32,
    pub cancel_requested: bool,
}

/// What one claim did: the jobs it took, and how many it parked (jobs of keys with no free
/// place). A claim that parked some but took none has not found the queue empty.
#[derive(Debug, Default)]
pub struct Claim {
    pub jobs: Vec<ClaimedJob>,
    pub parked: i64,
}

/// What a finished attempt turns the job into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Back to the queue for another attempt at `retry_at`.
    Retry,
    /// A flow took the work and will call back before `callback_deadline`.
    AwaitCallback,
}

impl CompletionStatus {
    fn job_status(self) -> JobStatus {
        match self {
            CompletionStatus::Succeeded => JobStatus::Succeeded,
            CompletionStatus::Failed => JobStatus::Failed,
            CompletionStatus::TimedOut => JobStatus::TimedOut,
            CompletionStatus::Cancelled => JobStatus::Cancelled,
            CompletionStatus::Retry => JobStatus::Queued,
            CompletionStatus::AwaitCallback => JobStatus::AwaitingCallback,
        }
    }
}

/// The end of one attempt, applied only if the attempt still holds the lease.
#[derive(Debug, Clone)]
pub struct Completion {
    pub job_id: JobId,
    pub attempt: i32,
    pub status: CompletionStatus,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub callback_deadline: Option<DateTime<Utc>>,
}

/// A job as the jobs API shows it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub intent: String,
    pub mode: Mode,
    pub requested_mode: Mode,
    pub status: JobStatus,
    pub priority: i16,
    pub inputs: Value,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub callback_url: Option<String>,
    pub request_id: Option<String>,
    pub run_at: DateTime<Utc>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub api_key_id: Option<Uuid>,
    pub principal: Option<String>,
    pub client_addr: Option<String>,
    pub payload_purged_at: Option<DateTime<Utc>>,
    /// The schedule that filed it.
    pub schedule_id: Option<Uuid>,
}

/// Keyset position in the newest-first job listing: the last id of the previous page (every
/// listing is in id order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub id: Uuid,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs created with this API key.
    pub owner: Option<Uuid>,
    pub intent: Option<String>,
    pub statuses: Option<Vec<JobStatus>>,
    /// The engine that ran it.
    pub mode: Option<Mode>,
    /// Filed by this schedule.
    pub schedule: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<ListCursor>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    NotFound,
    AlreadyFinished(JobStatus),
    /// It was not running: it is `cancelled` now.
    Cancelled,
    /// It is running under `lease_owner`'s lease: that worker has to stop it.
    Requested {
        lease_owner: Uuid,
    },
}

/// What asking to retry a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    NotFound,
    /// Only failed, timed-out and cancelled jobs go back to the queue.
    NotRetryable(JobStatus),
    /// Retention blanked its inputs: there is nothing left to run.
    PayloadPurged,
    /// It is `queued` again.
    Retried,
}

/// Rows of the lease heartbeat: which held jobs are still ours and which were asked to stop.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub id: JobId,
    pub cancel_requested: bool,
}

/// `SELECT <every JobRow column> FROM jobs WHERE <filter>`, checked at compile time.
macro_rules! select_jobs {
    ($filter:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            JobRow,
            r#"SELECT id, intent, mode AS "mode: Mode", requested_mode AS "requested_mode: Mode",
                      status AS "status: JobStatus", priority, inputs, result, error_code,
                      error_message, attempts, max_attempts, callback_url, request_id, run_at,
                      cancel_requested_at, created_at, started_at, finished_at, duration_ms,
                      api_key_id, principal, client_addr, payload_purged_at, schedule_id
               FROM jobs WHERE "# + $filter
            $(, $arg)*
        )
    };
}

/// Why an instance handed jobs it held back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Graceful shutdown: they had not finished within the grace period, or not started.
    Shutdown,
    /// Claimed ahead, they found no slot while every slot held a long call.
    NotStarted,
}

impl ReleaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Shutdown => "shutdown",
            ReleaseReason::NotStarted => "not_started",
        }
    }
}

impl Store {
    /// Inserts the job, its first history event and (when given) its idempotency key in one
    /// statement. Returns `None` when the key already belongs to another live job.
    pub async fn insert_job(
        &self,
        job: &NewJob<'_>,
        key: Option<&super::KeyClaim<'_>>,
    ) -> StoreResult<Option<JobStatus>> {
        let (scope, key_text, hash, derived, ttl) = super::KeyClaim::params(key);
        let row = sqlx::query!(
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
                INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                                  attempt_timeout_ms, inputs, callback_url, request_id, attempts,
                                  lease_owner, lease_expires_at, started_at, api_key_id, principal,
                                  client_addr, run_at, schedule_id, concurrency_key,
                                  concurrency_limit, parked)
                SELECT $4, $7, $8, $9,
                       CASE WHEN $10::uuid IS NOT NULL THEN 'running'::job_status
                            WHEN $22::timestamptz > now() THEN 'scheduled'
                            ELSE 'queued' END,
                       $11, $12, $13, $14, $15, $16,
                       CASE WHEN $10::uuid IS NULL THEN 0 ELSE 1 END,
                       $10,
                       CASE WHEN $10::uuid IS NULL THEN NULL
                            ELSE now() + make_interval(secs => $17) END,
                       CASE WHEN $10::uuid IS NULL THEN NULL ELSE now() END,
                       $18, $19, $20, coalesce($22::timestamptz, now()), $23, $24, $25,
                       -- Every place of its key taken: it waits outside the claim's index
                       -- until one is freed (see migration parked_jobs).
                       $24::text IS NOT NULL AND $10::uuid IS NULL
                       AND ($22::timestamptz > now()) IS NOT TRUE
                       AND EXISTS (SELECT 1 FROM concurrency_slots WHERE key = $24)
                       AND NOT EXISTS (SELECT 1 FROM concurrency_slots
                                       WHERE key = $24 AND job_id IS NULL AND slot <= $25)
                WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM key)
                RETURNING id, status, attempts
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, to_status, attempt,
                                          instance_id, actor_kind, actor_id, actor_name,
                                          request_id, client_addr)
                SELECT id, $7, $8, 'created', status, attempts, $10, $26,
                       $18::uuid::text, $19, $16, $20
                FROM job
            ), places AS (
                -- The key's places exist before its first job can be claimed.
                INSERT INTO concurrency_slots (key, slot)
                SELECT $24, g FROM job, generate_series(1, $25::integer) g
                WHERE $24::text IS NOT NULL
                ON CONFLICT DO NOTHING
            ), wake AS (
                SELECT pg_notify($21, '') FROM job WHERE status = 'queued'
            )
            SELECT job.status AS "status!: JobStatus" FROM job LEFT JOIN wake ON true
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
            job.start_now,
            job.priority,
            job.max_attempts,
            job.attempt_timeout_ms,
            job.inputs,
            job.callback_url,
            job.request_id,
            job.lease_secs,
            job.principal.api_key_id,
            job.principal.name,
            job.principal.client_addr,
            Channel::NewWork.name(),
            job.run_at,
            job.schedule_id,
            job.concurrency_key,
            job.concurrency_limit,
            job.principal.actor_kind().as_str(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.status))
    }

    /// Claims up to `limit` due jobs for `owner`: the first statement locks them with SKIP
    /// LOCKED, the second takes their leases, and the transaction commits at once.
    pub async fn claim_jobs(&self, owner: Uuid, limit: i64, lease_secs: f64) -> StoreResult<Claim> {
        let (claiming, _) = self.lock_due_jobs(limit, &[]).await?;
        claiming.lease(owner, lease_secs, usize::MAX).await
    }

    /// Begins a claim: locks up to `limit` due jobs (SKIP LOCKED) in a transaction that
    /// [`Claiming::lease`] ends. Returns with it the locked jobs that may be run and finished
    /// in that very transaction ([`Claiming::finish_at_once`]): those of the intents in
    /// `at_once` (tools whose call runs no statement and reaches nothing outside the
    /// database), without a callback to deliver, a concurrency key or a cancel request.
    pub async fn lock_due_jobs(
        &self,
        limit: i64,
        at_once: &[(&str, Mode)],
    ) -> StoreResult<(Claiming, Vec<AtOnceCandidate>)> {
        let (at_once_intents, at_once_modes): (Vec<&str>, Vec<Mode>) =
            at_once.iter().copied().unzip();
        // Sorts are forbidden for the selection only: the rest of the claim sorts the few
        // claimed rows, which has no alternative (forbidding sorts for the whole statement
        // made claims take a second).
        let mut tx = super::begin_ordered_scans(&self.pool).await?;
        let rows = sqlx::query!(
            r#"
            -- Parked jobs (waiting for a concurrency place) are outside this index.
            SELECT id, intent, mode AS "mode: Mode",
                   CASE WHEN callback_url IS NULL AND concurrency_key IS NULL
                             AND cancel_requested_at IS NULL
                             AND (intent, mode) IN (SELECT * FROM unnest($2::text[],
                                                                          $3::job_mode[]))
                        THEN inputs END AS at_once_inputs
            FROM jobs
            WHERE status = 'queued' AND NOT parked AND run_at <= now()
            ORDER BY priority, run_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
            "#,
            limit,
            &at_once_intents as &[&str],
            &at_once_modes as &[Mode],
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut candidates = Vec::new();
        let mut locked = Vec::with_capacity(rows.len());
        for r in rows {
            locked.push(r.id);
            if let Some(inputs) = r.at_once_inputs {
                candidates.push(AtOnceCandidate {
                    id: r.id.into(),
                    intent: r.intent,
                    mode: r.mode,
                    inputs,
                });
            }
        }
        Ok((Claiming { tx, locked }, candidates))
    }
}

/// A claim under way: due jobs locked by its transaction, not leased yet.
pub struct Claiming {
    tx: Transaction<'static, Postgres>,
    locked: Vec<Uuid>,
}

/// A locked job whose tool may run during the claim (see [`Store::lock_due_jobs`]).
#[derive(Debug, Clone)]
pub struct AtOnceCandidate {
    pub id: JobId,
    pub intent: String,
    pub mode: Mode,
    pub inputs: Value,
}

/// How a job run during its claim ended, and what it writes with it.
#[derive(Debug, Clone)]
pub struct FinishedAtOnce {
    pub id: JobId,
    pub outcome: InlineOutcome,
    pub memory: Option<MemoryItemWithJob>,
}

impl Claiming {
    /// Writes jobs run during the claim final, in the claim's transaction: queued until now,
    /// with the history a claimed job has (`claimed`, then its final event) and what they
    /// write with them. If the transaction does not commit, they stay queued and nothing of
    /// their run exists: the next claim runs them afresh. No lease, so nothing to fence.
    pub async fn finish_at_once(
        &mut self,
        owner: Uuid,
        jobs: &[FinishedAtOnce],
    ) -> StoreResult<Vec<FinishedJob>> {
        let n = jobs.len();
        let mut ids = Vec::with_capacity(n);
        let mut run = RunColumns::default();
        for j in jobs {
            ids.push(j.id.uuid());
            run.push(Some(&j.outcome), j.memory.as_ref());
        }
        let rows = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH input AS (
                SELECT * FROM unnest($2::uuid[], $3::job_status[], $4::jsonb[], $5::text[],
                                     $6::text[], $7::uuid[], $8::text[], $9::jsonb[],
                                     $10::jsonb[])
                    AS t(id, status, result, error_code, error_message, memory_id, memory_text,
                         memory_tags, memory_metadata)
            ), done AS (
                -- Locked by this transaction's first statement, so still queued: no status
                -- condition here, which would let the planner read every queued row through
                -- the status index (it did, with statistics of a near-empty queue: a 100k
                -- backlog on a 3M-job table drained at 17k jobs/s instead of 23k+).
                UPDATE jobs j
                SET status = i.status, result = i.result, error_code = i.error_code,
                    error_message = i.error_message, attempts = j.attempts + 1,
                    started_at = COALESCE(j.started_at, now()), finished_at = clock_timestamp(),
                    duration_ms = (extract(epoch FROM clock_timestamp() - j.created_at)
                                   * 1000)::bigint
                FROM input i
                WHERE j.id = i.id
                RETURNING j.id, j.intent, j.mode, j.status, j.result, j.error_code,
                          j.error_message, j.callback_url, j.duration_ms, j.finished_at,
                          j.attempts, j.request_id
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id, duration_ms,
                                          detail)
                SELECT id, intent, mode, 'claimed', 'queued'::job_status, 'running'::job_status,
                       attempts, $1::uuid, 'instance', request_id, NULL::bigint,
                       NULL::jsonb
                FROM done
                UNION ALL
                SELECT id, intent, mode, status::text, 'running'::job_status, status, attempts,
                       $1::uuid, 'instance', request_id, duration_ms,
                       CASE WHEN error_code IS NULL THEN NULL
                            ELSE jsonb_build_object('code', error_code, 'message', error_message,
                                                    'retry_at', NULL) END
                FROM done
            ), memory AS (
                INSERT INTO memory_items (id, text, tags, metadata, source_job_id)
                SELECT i.memory_id, i.memory_text,
                       ARRAY(SELECT jsonb_array_elements_text(i.memory_tags)),
                       i.memory_metadata, d.id
                FROM done d JOIN input i ON i.id = d.id
                WHERE i.memory_id IS NOT NULL
            ), wake AS (
                SELECT notify_jobs_done($1::uuid, array_agg(id)) FROM done
            )
            SELECT done.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM done LEFT JOIN wake ON true
            "#,
            owner,
            &ids,
            &run.statuses as &[Option<JobStatus>],
            &run.results as &[Option<&Value>],
            &run.error_codes as &[Option<&str>],
            &run.error_messages as &[Option<&str>],
            &run.memory_ids as &[Option<Uuid>],
            &run.memory_texts as &[Option<&str>],
            &run.memory_tags as &[Option<Value>],
            &run.memory_metadata as &[Option<&Value>],
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let finished: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
        self.locked.retain(|id| !finished.contains(id));
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Takes the leases of at most `max` of the locked jobs not finished during the claim, in
    /// claim order, and commits; the others stay queued.
    pub async fn lease(self, owner: Uuid, lease_secs: f64, max: usize) -> StoreResult<Claim> {
        let Claiming { mut tx, mut locked } = self;
        locked.truncate(max);
        if locked.is_empty() {
            // Nothing due (an idle poll) or everything finished: no leases to take.
            tx.commit().await?;
            return Ok(Claim {
                jobs: Vec::new(),
                parked: 0,
            });
        }
        super::set_local(&mut tx, "enable_sort", "on").await?;
        let rows = sqlx::query!(
            r#"
            WITH candidate AS (
                -- Locked by this transaction's first statement.
                SELECT id, priority, run_at, concurrency_key, concurrency_limit FROM jobs
                WHERE id = ANY($2::uuid[])
            ), keyed AS (
                SELECT id, concurrency_key AS key, concurrency_limit AS lim,
                       row_number() OVER (PARTITION BY concurrency_key
                                          ORDER BY priority, run_at, id) AS n
                FROM candidate WHERE concurrency_key IS NOT NULL
            ), wanted AS (
                SELECT key, max(lim) AS lim, count(*) AS n FROM keyed GROUP BY key
            ), free AS (
                -- Only as many free places as there are jobs for them are locked; places
                -- another claim holds this moment are skipped, never shared.
                SELECT f.key, f.slot, row_number() OVER (PARTITION BY f.key ORDER BY f.slot) AS n
                FROM wanted w CROSS JOIN LATERAL (
                    SELECT s.key, s.slot FROM concurrency_slots s
                    WHERE s.key = w.key AND s.job_id IS NULL AND s.slot <= w.lim
                    ORDER BY s.slot
                    LIMIT w.n
                    FOR UPDATE SKIP LOCKED
                ) f
            ), placed AS (
                UPDATE concurrency_slots s SET job_id = k.id
                FROM keyed k JOIN free f ON f.key = k.key AND f.n = k.n
                WHERE s.key = f.key AND s.slot = f.slot AND f.slot <= k.lim
                RETURNING s.job_id
            ), parked AS (
                -- Jobs that found no place wait outside the claim's index until one is freed,
                -- so later claims do not pass over them again.
                UPDATE jobs j SET parked = true
                FROM keyed k
                WHERE j.id = k.id AND k.id NOT IN (SELECT job_id FROM placed)
                RETURNING j.id
            ), next AS (
                SELECT id FROM candidate WHERE concurrency_key IS NULL
                UNION ALL
                SELECT job_id FROM placed
            ), claimed AS (
                UPDATE jobs j
                SET status = 'running', attempts = j.attempts + 1, lease_owner = $1,
                    lease_expires_at = now() + make_interval(secs => $3),
                    started_at = COALESCE(j.started_at, now())
                FROM next WHERE j.id = next.id
                RETURNING j.id, j.intent, j.mode, j.inputs, j.attempts, j.max_attempts,
                          j.attempt_timeout_ms, j.cancel_requested_at, j.priority, j.run_at,
                          j.request_id
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id)
                SELECT id, intent, mode, 'claimed', 'queued', 'running', attempts, $1, 'instance',
                       request_id
                FROM claimed
            )
            -- One row even when nothing was claimed, to carry the parked count.
            SELECT c.id AS "id?", c.intent AS "intent?", c.mode AS "mode?: Mode",
                   c.inputs AS "inputs?", c.attempts AS "attempts?",
                   c.max_attempts AS "max_attempts?", c.attempt_timeout_ms AS "timeout_ms?",
                   c.cancel_requested_at IS NOT NULL AS "cancel_requested?",
                   p.n AS "parked!"
            FROM (SELECT count(*) AS n FROM parked) p
            LEFT JOIN claimed c ON true
            ORDER BY c.priority, c.run_at, c.id
            "#,
            owner,
            &locked,
            lease_secs,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let parked = rows.first().map_or(0, |r| r.parked);
        let jobs = rows
            .into_iter()
            .filter_map(|r| {
                Some(ClaimedJob {
                    id: r.id?.into(),
                    intent: r.intent?,
                    mode: r.mode?,
                    inputs: r.inputs?,
                    attempt: r.attempts?,
                    max_attempts: r.max_attempts?,
                    attempt_timeout_ms: r.timeout_ms?,
                    cancel_requested: r.cancel_requested?,
                })
            })
            .collect();
        Ok(Claim { jobs, parked })
    }
}

impl Store {
    /// Unparks jobs whose key has free places that no trigger handed out: a place freed while
    /// the statement parking a job of its key had not committed yet (the trigger then saw no
    /// parked job), or a key whose limit was raised. Walks only keys with parked jobs (a loose
    /// index scan over `jobs_parked_idx`, at most `max_keys`), unparks at most one job per
    /// free place, and wakes the workers when it did; returns how many.
    pub async fn unpark_jobs(&self, max_keys: i32) -> StoreResult<i64> {
        // A hot key's parked jobs are taken from its index in order, never all sorted.
        let mut tx = super::begin_ordered_scans(&self.pool).await?;
        let unparked = sqlx::query_scalar!(
            r#"
            WITH RECURSIVE parked_keys (key, n) AS (
                (SELECT concurrency_key, 1 FROM jobs
                 WHERE status = 'queued' AND parked
                 ORDER BY concurrency_key LIMIT 1)
                UNION ALL
                SELECT (SELECT j.concurrency_key FROM jobs j
                        WHERE j.status = 'queued' AND j.parked AND j.concurrency_key > p.key
                        ORDER BY j.concurrency_key LIMIT 1),
                       p.n + 1
                FROM parked_keys p WHERE p.key IS NOT NULL AND p.n < $1
            ), free AS (
                -- Driven from the keys with parked jobs (one primary-key range each), however
                -- many idle keys have free places.
                SELECT k.key, f.places FROM parked_keys k CROSS JOIN LATERAL (
                    SELECT count(*) AS places FROM concurrency_slots s
                    WHERE s.key = k.key AND s.job_id IS NULL
                ) f
                WHERE k.key IS NOT NULL AND f.places > 0
            ), picked AS (
                SELECT j.id FROM free f CROSS JOIN LATERAL (
                    SELECT id FROM jobs
                    WHERE concurrency_key = f.key AND status = 'queued' AND parked
                    ORDER BY priority, run_at, id
                    LIMIT f.places
                    FOR UPDATE SKIP LOCKED
                ) j
            ), unparked AS (
                UPDATE jobs j SET parked = false FROM picked WHERE j.id = picked.id
                RETURNING j.id
            ), wake AS (
                SELECT pg_notify($2, '') WHERE EXISTS (SELECT 1 FROM unparked)
            )
            SELECT count(*) AS "n!" FROM unparked LEFT JOIN wake ON true
            "#,
            max_keys,
            Channel::NewWork.name(),
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(unparked)
    }

    /// Applies many completions in one statement. Each is fenced: it changes the job only if
    /// `owner` still holds the lease of that very attempt, so a late finish after a rescue is a
    /// no-op. Returns the jobs that reached a final state (for waiters) and notifies other
    /// instances' waiters in the same transaction (payload `<owner>;<id>,<id>…`: the owner
    /// already told its own waiters).
    pub async fn complete_jobs(
        &self,
        owner: Uuid,
        batch: &[Completion],
    ) -> StoreResult<CompletedBatch> {
        Self::complete_jobs_with(&self.pool, owner, batch).await
    }

    /// [`Store::complete_jobs`] on a batch writer's held connection.
    pub async fn complete_jobs_on(
        &self,
        held: &mut HeldConnection,
        owner: Uuid,
        batch: &[Completion],
    ) -> StoreResult<CompletedBatch> {
        held.run(async |conn| Self::complete_jobs_with(conn, owner, batch).await)
            .await
    }

    async fn complete_jobs_with<'c>(
        db: impl sqlx::PgExecutor<'c>,
        owner: Uuid,
        batch: &[Completion],
    ) -> StoreResult<CompletedBatch> {
        let n = batch.len();
        let mut ids = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut results = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut messages = Vec::with_capacity(n);
        let mut retry_ats = Vec::with_capacity(n);
        let mut deadlines = Vec::with_capacity(n);
        // Rows are locked in id order, as the heartbeat's `id = ANY(…)` index scan locks them:
        // two statements that lock many of the same rows in different orders deadlock (a bench
        // run under overload saw it, and PostgreSQL broke it by failing the completion batch).
        let mut in_order: Vec<&Completion> = batch.iter().collect();
        in_order.sort_unstable_by_key(|c| c.job_id.uuid());
        for c in in_order {
            ids.push(c.job_id.uuid());
            attempts.push(c.attempt);
            statuses.push(c.status.job_status());
            results.push(c.result.clone());
            codes.push(c.error_code.clone());
            messages.push(c.error_message.clone());
            retry_ats.push(c.retry_at);
            deadlines.push(c.callback_deadline);
        }
        let rows = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH input AS (
                SELECT * FROM unnest($2::uuid[], $3::int4[], $4::job_status[], $5::jsonb[],
                                     $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
                    AS t(id, attempt, status, result, error_code, error_message, retry_at,
                         callback_deadline)
            ), done AS (
                UPDATE jobs j
                SET status = i.status,
                    result = i.result,
                    error_code = i.error_code,
                    error_message = i.error_message,
                    run_at = COALESCE(i.retry_at, j.run_at),
                    lease_owner = NULL,
                    lease_expires_at = NULL,
                    callback_deadline_at = i.callback_deadline,
                    finished_at = CASE WHEN i.status IN ('queued', 'awaiting_callback') THEN NULL
                                       ELSE now() END,
                    duration_ms = CASE WHEN i.status IN ('queued', 'awaiting_callback') THEN NULL
                        ELSE (extract(epoch FROM now() - j.created_at) * 1000)::bigint END
                FROM input i
                WHERE j.id = i.id AND j.status = 'running' AND j.lease_owner = $1
                  AND j.attempts = i.attempt
                RETURNING j.id, j.intent, j.mode, j.status, j.result, j.error_code,
                          j.error_message, j.callback_url, j.duration_ms, j.finished_at,
                          j.attempts, j.run_at, j.request_id
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id, duration_ms,
                                          detail)
                SELECT id, intent, mode,
                       CASE WHEN status = 'queued' THEN 'retry_scheduled' ELSE status::text END,
                       'running', status, attempts, $1, 'instance', request_id,
                       duration_ms,
                       CASE WHEN error_code IS NULL THEN NULL
                            ELSE jsonb_build_object('code', error_code, 'message', error_message,
                                                    'retry_at', CASE WHEN status = 'queued'
                                                                     THEN run_at END) END
                FROM done
            ), wake AS (
                SELECT notify_jobs_done($1, array_agg(id)) FROM done
                WHERE status NOT IN ('queued', 'awaiting_callback')
            ), requeue AS (
                SELECT pg_notify($10, '') FROM done WHERE status = 'queued'
                HAVING count(*) > 0
            )
            SELECT done.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM done LEFT JOIN wake ON true LEFT JOIN requeue ON true
            "#,
            owner,
            &ids,
            &attempts,
            &statuses as &[JobStatus],
            &results as &[Option<Value>],
            &codes as &[Option<String>],
            &messages as &[Option<String>],
            &retry_ats as &[Option<DateTime<Utc>>],
            &deadlines as &[Option<DateTime<Utc>>],
            Channel::NewWork.name(),
        )
        .fetch_all(db)
        .await?;
        let mut out = CompletedBatch::default();
        for r in rows {
            out.applied.push(r.id.into());
            if r.status.is_final() {
                out.finished.push(r.into());
            }
        }
        Ok(out)
    }

    /// Extends the leases `owner` holds on `ids`. Jobs missing from the answer are no longer
    /// ours (rescued, or finished elsewhere).
    pub async fn heartbeat(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        lease_secs: f64,
    ) -> StoreResult<Vec<HeldLease>> {
        let rows = sqlx::query!(
            r#"
            -- Locked in id order, as the completion batch locks them: a plan that walked them
            -- in heap order could deadlock with a completion (each holding rows the other
            -- wants). A row completed meanwhile is no longer running and drops out here.
            WITH held AS (
                SELECT id FROM jobs
                WHERE id = ANY($2) AND lease_owner = $1 AND status = 'running'
                ORDER BY id
                FOR UPDATE
            )
            UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3)
            FROM held WHERE j.id = held.id
            RETURNING j.id, j.cancel_requested_at IS NOT NULL AS "cancel_requested!"
            "#,
            owner,
            ids,
            lease_secs,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| HeldLease {
                id: r.id.into(),
                cancel_requested: r.cancel_requested,
            })
            .collect())
    }

    /// Returns up to `limit` jobs whose lease expired to the queue (the attempt stays counted),
    /// or fails them when their attempts are spent. Returns the jobs that failed.
    pub async fn rescue_expired(&self, limit: i64) -> StoreResult<(usize, Vec<FinishedJob>)> {
        let rows = sqlx::query_as!(
            FinishedRow,
            r#"
            WITH expired AS (
                SELECT id, lease_owner FROM jobs
                WHERE status = 'running' AND lease_expires_at < now()
                ORDER BY lease_expires_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            ), rescued AS (
                UPDATE jobs j
                SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed'::job_status
                                  ELSE 'queued' END,
                    error_code = 'lease_expired',
                    error_message = 'the worker running this attempt stopped renewing its lease',
                    lease_owner = NULL, lease_expires_at = NULL, run_at = now(),
                    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
                    duration_ms = CASE WHEN j.attempts >= j.max_attempts
                        THEN (extract(epoch FROM now() - j.created_at) * 1000)::bigint END
                FROM expired e WHERE j.id = e.id
                RETURNING j.id, e.lease_owner AS previous_owner, j.intent, j.mode, j.status,
                          j.result, j.callback_url, j.duration_ms, j.finished_at, j.attempts,
                          j.error_code, j.error_message, j.request_id
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, actor_kind, request_id, duration_ms, detail)
                SELECT id, intent, mode, 'rescued', 'running', status, attempts, 'maintenance',
                       request_id, duration_ms,
                       jsonb_build_object('previous_owner', previous_owner)
                FROM rescued
            ), wake AS (
                SELECT notify_jobs_done(NULL, array_agg(id)) FROM rescued WHERE status <> 'queued'
            ), requeue AS (
                SELECT pg_notify($2, '') FROM rescued WHERE status = 'queued'
                HAVING count(*) > 0
            )
            SELECT rescued.id AS "id!", intent AS "intent!", mode AS "mode!: Mode",
                   status AS "status!: JobStatus", result, error_code, error_message,
                   callback_url, duration_ms, finished_at
            FROM rescued LEFT JOIN wake ON true LEFT JOIN requeue ON true
            "#,
            limit,
            Channel::NewWork.name(),
        )
        .fetch_all(&self.pool)
        .await?;
        let count = rows.len();
        let failed = rows
            .into_iter()
            .filter(|r| r.status.is_final())
            .map(FinishedJob::from)
            .collect();
        Ok((count, failed))
    }

    /// Puts jobs this instance holds back in the queue without counting the interrupted
    /// attempt; `reason` goes in their `released` events.
    pub async fn release_jobs(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        reason: ReleaseReason,
    ) -> StoreResult<u64> {
        let done = sqlx::query!(
            r#"
            WITH released AS (
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1, lease_owner = NULL,
                    lease_expires_at = NULL, run_at = now()
                WHERE id = ANY($2) AND lease_owner = $1 AND status = 'running'
                RETURNING id, attempts, request_id, intent, mode
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id, detail)
                SELECT id, intent, mode, 'released', 'running', 'queued', attempts + 1, $1,
                       'instance', request_id, jsonb_build_object('reason', $4::text)
                FROM released
            )
            SELECT count(*) AS "n!" FROM released, (SELECT pg_notify($3, '')) AS wake
            "#,
            owner,
            ids,
            Channel::NewWork.name(),
            reason.as_str(),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(done.n as u64)
    }

    /// Cancels a job that has not finished: at once when nobody runs it, otherwise by asking
    /// the lease holder (who sees `cancel_requested_at`) to stop.
    /// `origin` (the calling instance) tags the notification so that instance can ignore it.
    pub async fn cancel_job(
        &self,
        id: JobId,
        origin: Uuid,
        by: &Principal,
    ) -> StoreResult<(CancelOutcome, Option<FinishedJob>)> {
        let row = sqlx::query!(
            r#"
            WITH target AS (
                SELECT id, status, lease_owner FROM jobs WHERE id = $1 FOR UPDATE
            ), changed AS (
                UPDATE jobs j
                SET status = CASE WHEN t.status = 'running' THEN j.status
                                  ELSE 'cancelled'::job_status END,
                    cancel_requested_at = COALESCE(j.cancel_requested_at, now()),
                    error_code = CASE WHEN t.status = 'running' THEN j.error_code
                                      ELSE 'cancelled' END,
                    error_message = CASE WHEN t.status = 'running' THEN j.error_message
                                         ELSE 'cancelled by request' END,
                    finished_at = CASE WHEN t.status = 'running' THEN NULL ELSE now() END,
                    duration_ms = CASE WHEN t.status = 'running' THEN NULL
                        ELSE (extract(epoch FROM now() - j.created_at) * 1000)::bigint END
                FROM target t
                WHERE j.id = t.id
                  AND t.status IN ('scheduled', 'queued', 'running', 'awaiting_callback')
                RETURNING j.id, j.status, j.intent, j.mode, j.callback_url, j.duration_ms,
                          j.finished_at, j.attempts
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, duration_ms, actor_kind, actor_id, actor_name,
                                          request_id, client_addr)
                SELECT c.id, c.intent, c.mode,
                       CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
                       t.status, c.status, c.attempts, c.duration_ms,
                       CASE WHEN $3::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       $3::uuid::text, $4, $5, $6
                FROM changed c, target t
            ), wake AS (
                SELECT pg_notify(CASE WHEN status = 'cancelled' THEN $7
                                      ELSE $8 END,
                                 replace($2::uuid::text, '-', '') || ';' || replace(id::text, '-', ''))
                FROM changed
            ), given_back AS (
                -- A job cancelled while it waited for its flow's rate slot frees the slot.
                SELECT give_back_rate_slot(id) FROM changed WHERE status = 'cancelled'
            )
            SELECT t.status AS "before!: JobStatus", t.lease_owner,
                   c.status AS "after?: JobStatus", c.intent AS "intent?",
                   c.mode AS "mode?: Mode", c.callback_url, c.duration_ms, c.finished_at
            FROM target t LEFT JOIN changed c ON true LEFT JOIN wake ON true
                 LEFT JOIN given_back ON true
            "#,
            id.uuid(),
            origin,
            by.api_key_id,
            by.name,
            by.request_id,
            by.client_addr,
            Channel::JobDone.name(),
            Channel::Cancel.name(),
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok((CancelOutcome::NotFound, None));
        };
        Ok(match (r.before, r.after) {
            (before, None) => (CancelOutcome::AlreadyFinished(before), None),
            (JobStatus::Running, Some(_)) => (
                CancelOutcome::Requested {
                    lease_owner: r.lease_owner.unwrap_or_default(),
                },
                None,
            ),
            (_, Some(status)) => (
                CancelOutcome::Cancelled,
                Some(FinishedJob {
                    id,
                    intent: r.intent.unwrap_or_default(),
                    mode: r.mode.unwrap_or(Mode::Agent),
                    status,
                    result: None,
                    error: job_error(
                        Some("cancelled".into()),
                        Some("cancelled by request".into()),
                    ),
                    callback_url: r.callback_url,
                    duration_ms: r.duration_ms,
                    finished_at: r.finished_at,
                }),
            ),
        })
    }

    /// Sends a failed, timed-out or cancelled job back to the queue, as River and Oban do: the
    /// same row and id (clients that poll it see it run again), its outcome cleared, one more
    /// attempt granted when its budget is spent. Audited as `retried` by `by`; when it finishes
    /// again, its callback goes out again as a new message (see the delivery trigger).
    pub async fn retry_job(&self, id: JobId, by: &Principal) -> StoreResult<RetryOutcome> {
        let row = sqlx::query!(
            r#"
            WITH target AS (
                SELECT id, status, payload_purged_at FROM jobs WHERE id = $1 FOR UPDATE
            ), changed AS (
                UPDATE jobs j
                SET status = 'queued', run_at = now(),
                    max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
                    result = NULL, error_code = NULL, error_message = NULL, finished_at = NULL,
                    duration_ms = NULL, cancel_requested_at = NULL, callback_deadline_at = NULL,
                    -- A job cancelled while parked comes back claimable (the claim parks it
                    -- again if its key is still full).
                    parked = false
                FROM target t
                -- Checked on the row being updated too: under READ COMMITTED it is re-read at
                -- its latest version, so a job a worker took meanwhile is not sent back.
                WHERE j.id = t.id AND t.status IN ('failed', 'cancelled', 'timed_out')
                  AND j.status IN ('failed', 'cancelled', 'timed_out')
                  AND t.payload_purged_at IS NULL
                RETURNING j.id, j.intent, j.mode, j.attempts, j.concurrency_key,
                          j.concurrency_limit
            ), places AS (
                -- Maintenance purges the places of a key no job uses: a finished job coming
                -- back needs them again, as a new one does at intake (and its insert, like
                -- intake's, holds the purge off until this commits).
                INSERT INTO concurrency_slots (key, slot)
                SELECT c.concurrency_key, g
                FROM changed c, generate_series(1, c.concurrency_limit) g
                WHERE c.concurrency_key IS NOT NULL
                ON CONFLICT DO NOTHING
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, actor_kind, actor_id, actor_name, request_id,
                                          client_addr)
                SELECT c.id, c.intent, c.mode, 'retried', t.status, 'queued', c.attempts,
                       CASE WHEN $2::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       $2::uuid::text, $3, $4, $5
                FROM changed c, target t
            ), wake AS (
                SELECT pg_notify($6, '') FROM changed
            )
            SELECT t.status AS "before!: JobStatus", t.payload_purged_at,
                   (c.id IS NOT NULL) AS "retried!"
            FROM target t LEFT JOIN changed c ON true LEFT JOIN wake ON true
            "#,
            id.uuid(),
            by.api_key_id,
            by.name,
            by.request_id,
            by.client_addr,
            Channel::NewWork.name(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => RetryOutcome::NotFound,
            Some(r) if r.retried => RetryOutcome::Retried,
            Some(r) if r.payload_purged_at.is_some() && r.before.is_retryable() => {
                RetryOutcome::PayloadPurged
            }
            Some(r) => RetryOutcome::NotRetryable(r.before),
        })
    }

    pub async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
        let row = select_jobs!("id = $1", id.uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(JobRecord::from))
    }

    /// Final snapshots of the given jobs that have finished (unfinished ones are left out).
    pub async fn finished_jobs(&self, ids: &[Uuid]) -> StoreResult<Vec<FinishedJob>> {
        let rows = sqlx::query_as!(
            FinishedRow,
            r#"
            SELECT id, intent, mode AS "mode: Mode", status AS "status: JobStatus", result,
                   error_code, error_message, callback_url, duration_ms, finished_at
            FROM jobs
            WHERE id = ANY($1)
              AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            "#,
            ids,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FinishedJob::from).collect())
    }

    /// Newest first, keyset-paginated. One static statement per filter shape, so each is
    /// planned against the index that serves it. Several statuses are read one status at a
    /// time and merged: `status = ANY(...)` cannot walk `(status, id)` in order,
    /// so PostgreSQL would sort every job of those statuses for one page.
    pub async fn list_jobs(&self, f: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let Some(statuses) = f.statuses.as_deref().filter(|s| s.len() > 1) else {
            let status = f.statuses.as_ref().and_then(|s| s.first().copied());
            if f.statuses.as_ref().is_some_and(Vec::is_empty) {
                return Ok(Vec::new());
            }
            return self.list_page(f, status).await;
        };
        let mut merged = Vec::new();
        for status in statuses {
            merged.extend(self.list_page(f, Some(*status)).await?);
        }
        merged.sort_by_key(|r| std::cmp::Reverse(r.id.uuid()));
        merged.truncate(f.limit.max(0) as usize);
        Ok(merged)
    }

    /// One page of `f` with at most one status, newest first by id.
    async fn list_page(
        &self,
        f: &JobFilter,
        status: Option<JobStatus>,
    ) -> StoreResult<Vec<JobRecord>> {
        // Postgres timestamps span 4713 BC to 294276 AD; chrono's extremes do not fit.
        let far_past = DateTime::<Utc>::UNIX_EPOCH;
        let far_future = far_past + chrono::Duration::days(365 * 8000);
        // Every listing is in id order (UUIDv7: creation order), whichever index serves it,
        // so the pages of one status join those of another exactly and a cursor is an id.
        // `since`/`until` bound the ids' time, to the millisecond.
        let since = uuid_v7_floor(f.since.unwrap_or(far_past));
        let until = uuid_v7_floor(f.until.unwrap_or(far_future));
        let before = f.cursor.map(|c| c.id).unwrap_or(Uuid::max());
        let limit = f.limit;
        let mode = f.mode;
        // `mode` is never selective enough to lead a plan: it filters whatever index serves
        // the rest, so it is one optional parameter rather than another set of statements.
        macro_rules! page {
            ($filter:literal $(, $arg:expr)*) => {
                select_jobs!(
                    "id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5) "
                        + $filter
                        + " ORDER BY id DESC LIMIT $4",
                    since, until, before, limit, mode as Option<Mode> $(, $arg)*
                )
                .fetch_all(&self.pool)
                .await?
            };
        }
        if let Some(schedule) = f.schedule {
            // A schedule's jobs are few: its partial index, the rest as filters.
            let rows = page!(
                "AND schedule_id = $6 AND ($7::text IS NULL OR intent = $7) \
                 AND ($8::job_status IS NULL OR status = $8) \
                 AND ($9::uuid IS NULL OR api_key_id = $9)",
                schedule,
                f.intent.as_deref(),
                status as Option<JobStatus>,
                f.owner
            );
            return Ok(rows.into_iter().map(JobRecord::from).collect());
        }
        let rows = match (&f.intent, status, f.owner) {
            (None, None, None) => page!(""),
            // Succeeded jobs are most of the table and not in the status index: walking the
            // primary key finds a page of them at once.
            (None, Some(JobStatus::Succeeded), None) => page!("AND status = 'succeeded'"),
            (Some(i), None, None) => page!("AND intent = $6", i),
            // The status index holds every status but `succeeded`; the literal condition lets
            // the planner use it for a parameter it cannot otherwise see is not `succeeded`.
            (None, Some(st), None) => {
                page!("AND status = $6 AND status <> 'succeeded'", st as JobStatus)
            }
            (Some(i), Some(JobStatus::Succeeded), None) => {
                page!("AND intent = $6 AND status = 'succeeded'", i)
            }
            // Jobs that ended without success have indexes by intent and by key of their own
            // (few rows, none on the hot path); the literal list lets a generic plan use them.
            // The page's ids come from that index alone (a subquery the planner keeps whole),
            // then its rows by primary key: as one query, a custom plan estimated a key's failed
            // jobs from each column's statistics, walked the status index in id order and
            // filtered by key, which for a key without failed jobs read every failed job (300
            // ms at 5M jobs, bench/dashboard); this shape takes under a millisecond either way.
            (Some(i), Some(st), None) if st.is_retryable() => page!(
                "AND id IN (SELECT id FROM jobs WHERE intent = $6 AND status = $7 \
                   AND status IN ('failed', 'cancelled', 'timed_out') \
                   AND ($5::job_mode IS NULL OR mode = $5) \
                   AND id >= $1 AND id < $2 AND id < $3 ORDER BY id DESC LIMIT $4)",
                i,
                st as JobStatus
            ),
            (Some(i), Some(st), None) => page!(
                "AND intent = $6 AND status = $7 AND status <> 'succeeded'",
                i,
                st as JobStatus
            ),
            (None, None, Some(o)) => page!("AND api_key_id = $6", o),
            (Some(i), None, Some(o)) => page!("AND api_key_id = $6 AND intent = $7", o, i),
            (None, Some(JobStatus::Succeeded), Some(o)) => {
                page!("AND api_key_id = $6 AND status = 'succeeded'", o)
            }
            (None, Some(st), Some(o)) if st.is_retryable() => page!(
                "AND id IN (SELECT id FROM jobs WHERE api_key_id = $6 AND status = $7 \
                   AND status IN ('failed', 'cancelled', 'timed_out') \
                   AND ($5::job_mode IS NULL OR mode = $5) \
                   AND id >= $1 AND id < $2 AND id < $3 ORDER BY id DESC LIMIT $4)",
                o,
                st as JobStatus
            ),
            (None, Some(st), Some(o)) => page!(
                "AND api_key_id = $6 AND status = $7 AND status <> 'succeeded'",
                o,
                st as JobStatus
            ),
            (Some(i), Some(JobStatus::Succeeded), Some(o)) => page!(
                "AND api_key_id = $6 AND intent = $7 AND status = 'succeeded'",
                o,
                i
            ),
            (Some(i), Some(st), Some(o)) if st.is_retryable() => page!(
                "AND id IN (SELECT id FROM jobs WHERE api_key_id = $6 AND intent = $7 \
                   AND status = $8 AND status IN ('failed', 'cancelled', 'timed_out') \
                   AND ($5::job_mode IS NULL OR mode = $5) \
                   AND id >= $1 AND id < $2 AND id < $3 ORDER BY id DESC LIMIT $4)",
                o,
                i,
                st as JobStatus
            ),
            (Some(i), Some(st), Some(o)) => page!(
                "AND api_key_id = $6 AND intent = $7 AND status = $8 AND status <> 'succeeded'",
                o,
                i,
                st as JobStatus
            ),
        };
        Ok(rows.into_iter().map(JobRecord::from).collect())
    }
}

/// The smallest UUIDv7 of the given millisecond: ids below it were created before.
fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    Uuid::from_bytes(bytes)
}

/// The outcome of a completion batch.
#[derive(Debug, Default)]
pub struct CompletedBatch {
    /// Every completion that still held its lease.
    pub applied: Vec<JobId>,
    /// Those of them that reached a final state.
    pub finished: Vec<FinishedJob>,
}

/// The columns of a finished job's snapshot, as every statement that finishes jobs returns.
pub(super) struct FinishedRow {
    pub id: Uuid,
    pub intent: String,
    pub mode: Mode,
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub callback_url: Option<String>,
    pub duration_ms: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<FinishedRow> for FinishedJob {
    fn from(r: FinishedRow) -> Self {
        FinishedJob {
            id: r.id.into(),
            intent: r.intent,
            mode: r.mode,
            status: r.status,
            result: r.result,
            error: job_error(r.error_code, r.error_message),
            callback_url: r.callback_url,
            duration_ms: r.duration_ms,
            finished_at: r.finished_at,
        }
    }
}

struct JobRow {
    id: Uuid,
    intent: String,
    mode: Mode,
    requested_mode: Mode,
    status: JobStatus,
    priority: i16,
    inputs: Value,
    result: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
    attempts: i32,
    max_attempts: i32,
    callback_url: Option<String>,
    request_id: Option<String>,
    run_at: DateTime<Utc>,
    cancel_requested_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    api_key_id: Option<Uuid>,
    principal: Option<String>,
    client_addr: Option<String>,
    payload_purged_at: Option<DateTime<Utc>>,
    schedule_id: Option<Uuid>,
}

impl From<JobRow> for JobRecord {
    fn from(r: JobRow) -> Self {
        JobRecord {
            id: r.id.into(),
            intent: r.intent,
            mode: r.mode,
            requested_mode: r.requested_mode,
            status: r.status,
            priority: r.priority,
            inputs: r.inputs,
            result: r.result,
            error_code: r.error_code,
            error_message: r.error_message,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            callback_url: r.callback_url,
            request_id: r.request_id,
            run_at: r.run_at,
            cancel_requested_at: r.cancel_requested_at,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            api_key_id: r.api_key_id,
            principal: r.principal,
            client_addr: r.client_addr,
            payload_purged_at: r.payload_purged_at,
            schedule_id: r.schedule_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_floor_orders_like_creation_time() {
        let t = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        let floor = uuid_v7_floor(t);
        assert_eq!(floor.get_version_num(), 7);
        let before = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_000_000,
            122_000_000,
        ));
        let same_ms = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_000_000,
            123_500_000,
        ));
        assert!(before < floor && floor <= same_ms);
        assert_eq!(
            uuid_v7_floor(DateTime::<Utc>::UNIX_EPOCH),
            Uuid::from_bytes([0, 0, 0, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
    }
}
