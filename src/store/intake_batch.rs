//! Group commit at intake: jobs filed by concurrent requests are inserted by one statement and
//! one commit, each answer sent only after its batch committed — as the completer already does
//! for completions. A batch holds jobs for the queue (`async: true`, or a waited-for job with
//! no free slot) and jobs already finished, run at once by a call that ran no statement of its
//! own (`system.echo`, a failure recorded on its own, `memory.write` with its item).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Channel, HeldConnection, InlineOutcome, MemoryItemWithJob, Store, StoreResult,
    inline::RunColumns,
};
use crate::model::{JobStatus, Mode, Principal};

/// A job filed by the intake (no lease taken, no concurrency key), with the key it claims.
#[derive(Debug, Clone)]
pub struct IntakeJob {
    pub id: Uuid,
    pub intent: String,
    pub mode: Mode,
    pub requested_mode: Mode,
    pub priority: i16,
    pub max_attempts: i32,
    pub attempt_timeout_ms: i32,
    pub inputs: Value,
    pub callback_url: Option<String>,
    pub principal: Principal,
    /// Not before this time; in the future, the job is filed as `scheduled`.
    pub run_at: Option<DateTime<Utc>>,
    pub schedule_id: Option<Uuid>,
    pub key: Option<OwnedKeyClaim>,
    /// Already run: the job is filed final, with the history of a job run at once.
    pub ran: Option<RanInline>,
}

/// How a job filed final was run: by `instance`, at once, its tool running no statement.
#[derive(Debug, Clone)]
pub struct RanInline {
    pub instance: Uuid,
    pub outcome: InlineOutcome,
    /// The call's duration; the job's times end when its batch is written.
    pub duration_ms: i64,
    /// Written with the job, under it (`memory.write`).
    pub memory: Option<MemoryItemWithJob>,
}

/// A job of a batch as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeFiled {
    pub status: JobStatus,
    pub finished_at: Option<DateTime<Utc>>,
}

/// [`super::KeyClaim`], owned (it waits in the batch).
#[derive(Debug, Clone)]
pub struct OwnedKeyClaim {
    pub scope: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub derived: bool,
    pub ttl_secs: f64,
}

impl Store {
    /// Inserts `jobs`, their keys and history events in one statement and commit; returns the
    /// ids filed with how they were written. A job missing from the answer lost its key to a
    /// live job. The caller leaves out two jobs claiming the same key (one statement cannot
    /// claim a key twice) and orders the rest by key, so that two batches meet on their keys in
    /// the same order. The live streams' NOTIFY is deferred: the caller sends one after the
    /// commit (see [`insert_intake_jobs`]).
    pub async fn insert_intake_jobs(
        &self,
        jobs: &[IntakeJob],
    ) -> StoreResult<Vec<(Uuid, IntakeFiled)>> {
        insert_intake_jobs(&self.pool, jobs).await
    }

    /// [`Store::insert_intake_jobs`] on a batch writer's held connection.
    pub async fn insert_intake_jobs_on(
        &self,
        held: &mut HeldConnection,
        jobs: &[IntakeJob],
    ) -> StoreResult<Vec<(Uuid, IntakeFiled)>> {
        held.run(async |conn| insert_intake_jobs(conn, jobs).await)
            .await
    }
}

/// The intake's statement, on the pool (a batch, its own commit) or in a request's transaction
/// (a job finished by a call that ran statements, [`super::InlineTx::file_finished`]): one
/// statement writes every job the intake files, queued or run at once, with its history.
///
/// Its history events do not NOTIFY the live streams: PostgreSQL holds its notification-queue
/// lock while a notifying transaction commits, so concurrent committers would commit one after
/// another (measured at 64 clients: 2,000 commits/s with the NOTIFY, 4,670 without). Nobody can
/// wait for these jobs before the commit (their ids are in no answer yet), and the caller sends
/// one NOTIFY after the commit for a burst of such commits (`store::DeferredNotify`).
pub(super) async fn insert_intake_jobs<'c>(
    db: impl sqlx::PgExecutor<'c>,
    jobs: &[IntakeJob],
) -> StoreResult<Vec<(Uuid, IntakeFiled)>> {
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let mut intents = Vec::with_capacity(n);
    let mut modes = Vec::with_capacity(n);
    let mut requested = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut timeouts = Vec::with_capacity(n);
    let mut inputs = Vec::with_capacity(n);
    let mut callbacks = Vec::with_capacity(n);
    let mut request_ids = Vec::with_capacity(n);
    let mut key_ids = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut actor_kinds = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut schedules = Vec::with_capacity(n);
    let mut scopes = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut derived = Vec::with_capacity(n);
    let mut ttls = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut instances = Vec::with_capacity(n);
    let mut run = RunColumns::default();
    for j in jobs {
        ids.push(j.id);
        intents.push(j.intent.as_str());
        modes.push(j.mode);
        requested.push(j.requested_mode);
        priorities.push(j.priority);
        max_attempts.push(j.max_attempts);
        timeouts.push(j.attempt_timeout_ms);
        inputs.push(&j.inputs);
        callbacks.push(j.callback_url.as_deref());
        request_ids.push(j.principal.request_id.as_deref());
        key_ids.push(j.principal.api_key_id);
        names.push(j.principal.name.as_str());
        actor_kinds.push(j.principal.actor_kind().as_str());
        addrs.push(j.principal.client_addr.as_deref());
        run_ats.push(j.run_at);
        schedules.push(j.schedule_id);
        scopes.push(j.key.as_ref().map(|k| k.scope.as_str()));
        keys.push(j.key.as_ref().map(|k| k.key.as_str()));
        hashes.push(j.key.as_ref().map(|k| k.request_hash.as_slice()));
        derived.push(j.key.as_ref().map(|k| k.derived));
        ttls.push(j.key.as_ref().map(|k| k.ttl_secs));
        durations.push(j.ran.as_ref().map(|r| r.duration_ms));
        instances.push(j.ran.as_ref().map(|r| r.instance));
        run.push(
            j.ran.as_ref().map(|r| &r.outcome),
            j.ran.as_ref().and_then(|r| r.memory.as_ref()),
        );
    }
    // Two forms of one statement: PostgreSQL opens and sets up every table a statement writes,
    // rows or not, so a batch without idempotency keys or memory items (every `system.echo`,
    // every keyless `async: true`) leaves out those two inserts. Measured on the statement for
    // one echo job (pgbench, `synchronous_commit = off`): 0.18-0.25 ms against 0.24-0.33 ms; the
    // server's echo at 64 connections 1.02x, async echo 1.01x (docs/scaling.md).
    macro_rules! intake {
        ($key:literal, $filter:literal, $memory:literal) => {
            sqlx::query!(
                r#"
        WITH input AS (
            SELECT t.* FROM unnest($1::uuid[], $2::text[], $3::job_mode[], $4::job_mode[],
                                 $5::int2[], $6::int4[], $7::int4[], $8::jsonb[], $9::text[],
                                 $10::text[], $11::uuid[], $12::text[], $13::text[],
                                 $14::timestamptz[], $15::uuid[], $16::text[], $17::text[],
                                 $18::bytea[], $19::bool[], $20::float8[], $22::job_status[],
                                 $23::jsonb[], $24::text[], $25::text[], $26::int8[],
                                 $27::uuid[], $28::uuid[], $29::text[], $30::jsonb[],
                                 $31::jsonb[], $32::text[])
                WITH ORDINALITY
                AS t(id, intent, mode, requested_mode, priority, max_attempts,
                     attempt_timeout_ms, inputs, callback_url, request_id, api_key_id,
                     principal, client_addr, run_at, schedule_id, key_scope, key,
                     request_hash, derived, ttl, ran_status, result, error_code,
                     error_message, duration_ms, instance_id, memory_id, memory_text,
                     memory_tags, memory_metadata, actor_kind, n)
            -- The history's NOTIFY is sent after the commit (migration deferred_event_notify).
            CROSS JOIN (SELECT set_config('orch.events_notify', 'deferred', true)) quiet
        "# + $key + r#"), job AS (
            -- A job run at once is written final, attempt 1, its times ending now and as
            -- long as its call (the claim/lease path's times, without the queue).
            INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                              attempt_timeout_ms, inputs, callback_url, request_id, attempts,
                              api_key_id, principal, client_addr, run_at, schedule_id,
                              result, error_code, error_message, created_at, started_at,
                              finished_at, duration_ms)
            SELECT id, intent, mode, requested_mode,
                   CASE WHEN ran_status IS NOT NULL THEN ran_status
                        WHEN run_at > now() THEN 'scheduled'::job_status
                        ELSE 'queued' END,
                   priority, max_attempts, attempt_timeout_ms, inputs, callback_url,
                   request_id, CASE WHEN ran_status IS NULL THEN 0 ELSE 1 END, api_key_id,
                   principal, client_addr, coalesce(run_at, now()), schedule_id,
                   result, error_code, error_message,
                   CASE WHEN ran_status IS NULL THEN now() ELSE ran.began END,
                   CASE WHEN ran_status IS NOT NULL THEN ran.began END,
                   CASE WHEN ran_status IS NOT NULL THEN c.now END,
                   duration_ms
            FROM input i
            CROSS JOIN (SELECT clock_timestamp() AS now) c
            CROSS JOIN LATERAL (
                SELECT c.now - make_interval(secs => i.duration_ms::float8 / 1000) AS began
            ) ran
            "# + $filter + r#"
            ORDER BY n
            RETURNING id, intent, mode, status, attempts, request_id, api_key_id, principal,
                      client_addr, finished_at, duration_ms, error_code, error_message
        ), event AS (
            INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                      attempt, instance_id, actor_kind, actor_id, actor_name,
                                      request_id, client_addr, duration_ms, detail)
            SELECT j.id, j.intent, j.mode, 'created', NULL::job_status,
                   CASE WHEN j.finished_at IS NULL THEN j.status ELSE 'running' END,
                   j.attempts, i.instance_id, i.actor_kind, j.api_key_id::text, j.principal,
                   j.request_id, j.client_addr, NULL, NULL
            FROM job j JOIN input i ON i.id = j.id
            UNION ALL
            SELECT j.id, j.intent, j.mode, j.status::text, 'running'::job_status, j.status,
                   1, i.instance_id, 'instance', NULL, NULL, j.request_id,
                   NULL, j.duration_ms,
                   CASE WHEN j.error_code IS NULL THEN NULL
                        ELSE jsonb_build_object('code', j.error_code,
                                                'message', j.error_message,
                                                'retry_at', NULL) END
            FROM job j JOIN input i ON i.id = j.id
            WHERE j.finished_at IS NOT NULL
        "# + $memory + r#"), wake AS (
            SELECT pg_notify($21, '') WHERE EXISTS (SELECT 1 FROM job WHERE status = 'queued')
        )
        SELECT job.id AS "id!", job.status AS "status!: JobStatus", job.finished_at
        FROM job LEFT JOIN wake ON true
        "#,
                &ids,
                &intents as &[&str],
                &modes as &[Mode],
                &requested as &[Mode],
                &priorities,
                &max_attempts,
                &timeouts,
                &inputs as &[&Value],
                &callbacks as &[Option<&str>],
                &request_ids as &[Option<&str>],
                &key_ids as &[Option<Uuid>],
                &names as &[&str],
                &addrs as &[Option<&str>],
                &run_ats as &[Option<DateTime<Utc>>],
                &schedules as &[Option<Uuid>],
                &scopes as &[Option<&str>],
                &keys as &[Option<&str>],
                &hashes as &[Option<&[u8]>],
                &derived as &[Option<bool>],
                &ttls as &[Option<f64>],
                Channel::NewWork.name(),
                &run.statuses as &[Option<JobStatus>],
                &run.results as &[Option<&Value>],
                &run.error_codes as &[Option<&str>],
                &run.error_messages as &[Option<&str>],
                &durations as &[Option<i64>],
                &instances as &[Option<Uuid>],
                &run.memory_ids as &[Option<Uuid>],
                &run.memory_texts as &[Option<&str>],
                &run.memory_tags as &[Option<Value>],
                &run.memory_metadata as &[Option<&Value>],
                &actor_kinds as &[&str],
            )
            .fetch_all(db)
            .await?
            .into_iter()
            .map(|r| {
                let filed = IntakeFiled {
                    status: r.status,
                    finished_at: r.finished_at,
                };
                (r.id, filed)
            })
            .collect()
        };
    }
    let plain = jobs
        .iter()
        .all(|j| j.key.is_none() && j.ran.as_ref().is_none_or(|r| r.memory.is_none()));
    Ok(if plain {
        // The key filter stays: were a keyed job ever to reach this form, it would be left
        // out (answered as a lost key) rather than filed without its key.
        intake!("", "WHERE i.key IS NULL", "")
    } else {
        intake!(
            r#"), key AS (
            INSERT INTO idempotency_keys (scope, key, request_hash, job_id, derived, expires_at)
            SELECT key_scope, key, request_hash, id, derived, now() + make_interval(secs => ttl)
            FROM input WHERE key IS NOT NULL
            ORDER BY n
            ON CONFLICT (scope, key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id,
                    derived = EXCLUDED.derived, created_at = now(),
                    expires_at = EXCLUDED.expires_at
                WHERE idempotency_keys.expires_at <= now()
            RETURNING job_id
        "#,
            "WHERE i.key IS NULL OR i.id IN (SELECT job_id FROM key)",
            r#"), memory AS (
            -- Only under a job filed here (one whose key was lost writes nothing).
            INSERT INTO memory_items (id, text, tags, metadata, source_job_id)
            SELECT i.memory_id, i.memory_text,
                   ARRAY(SELECT jsonb_array_elements_text(i.memory_tags)),
                   i.memory_metadata, j.id
            FROM job j JOIN input i ON i.id = j.id
            WHERE i.memory_id IS NOT NULL
        "#
        )
    })
}
