//! Group commit at intake: jobs filed for the queue (`async: true`, or a waited-for job with no
//! free slot) by concurrent requests are inserted by one statement and one commit, each answer
//! sent only after its batch committed — as the completer already does for completions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Channel, Store, StoreResult};
use crate::model::{JobStatus, Mode, Principal};

/// A job for the queue (no lease taken, no concurrency key), with the key it claims.
#[derive(Debug, Clone)]
pub struct QueuedJob {
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
    /// Inserts `jobs`, their keys and first history events in one statement; returns the ids
    /// filed with their status. A job missing from the answer lost its key to a live job. The
    /// caller leaves out two jobs claiming the same key (one statement cannot claim a key twice)
    /// and orders the rest by key, so that two batches meet on their keys in the same order.
    pub async fn insert_queued_jobs(
        &self,
        jobs: &[QueuedJob],
    ) -> StoreResult<Vec<(Uuid, JobStatus)>> {
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
        let mut addrs = Vec::with_capacity(n);
        let mut run_ats = Vec::with_capacity(n);
        let mut schedules = Vec::with_capacity(n);
        let mut scopes = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut derived = Vec::with_capacity(n);
        let mut ttls = Vec::with_capacity(n);
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
            addrs.push(j.principal.client_addr.as_deref());
            run_ats.push(j.run_at);
            schedules.push(j.schedule_id);
            scopes.push(j.key.as_ref().map(|k| k.scope.as_str()));
            keys.push(j.key.as_ref().map(|k| k.key.as_str()));
            hashes.push(j.key.as_ref().map(|k| k.request_hash.as_slice()));
            derived.push(j.key.as_ref().map(|k| k.derived));
            ttls.push(j.key.as_ref().map(|k| k.ttl_secs));
        }
        let rows = sqlx::query!(
            r#"
            WITH input AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::job_mode[], $4::job_mode[],
                                     $5::int2[], $6::int4[], $7::int4[], $8::jsonb[], $9::text[],
                                     $10::text[], $11::uuid[], $12::text[], $13::text[],
                                     $14::timestamptz[], $15::uuid[], $16::text[], $17::text[],
                                     $18::bytea[], $19::bool[], $20::float8[])
                    WITH ORDINALITY
                    AS t(id, intent, mode, requested_mode, priority, max_attempts,
                         attempt_timeout_ms, inputs, callback_url, request_id, api_key_id,
                         principal, client_addr, run_at, schedule_id, key_scope, key,
                         request_hash, derived, ttl, n)
            ), key AS (
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
            ), job AS (
                INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                                  attempt_timeout_ms, inputs, callback_url, request_id, attempts,
                                  api_key_id, principal, client_addr, run_at, schedule_id)
                SELECT id, intent, mode, requested_mode,
                       CASE WHEN run_at > now() THEN 'scheduled'::job_status
                            ELSE 'queued' END,
                       priority, max_attempts, attempt_timeout_ms, inputs, callback_url,
                       request_id, 0, api_key_id, principal, client_addr,
                       coalesce(run_at, now()), schedule_id
                FROM input i
                WHERE i.key IS NULL OR i.id IN (SELECT job_id FROM key)
                ORDER BY n
                RETURNING id, intent, mode, status, attempts, request_id, api_key_id, principal,
                          client_addr
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, to_status, attempt,
                                          actor_kind, actor_id, actor_name, request_id,
                                          client_addr)
                SELECT id, intent, mode, 'created', status, attempts,
                       CASE WHEN api_key_id IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       api_key_id::text, principal, request_id, client_addr
                FROM job
            ), wake AS (
                SELECT pg_notify($21, '') WHERE EXISTS (SELECT 1 FROM job WHERE status = 'queued')
            )
            SELECT job.id AS "id!", job.status AS "status!: JobStatus"
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
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.status)).collect())
    }
}
