//! Token buckets shared by every instance (see the `rate_limits` migration: GCRA, one row per
//! bucket, each call one statement), and putting a job back in the queue without counting the
//! attempt when its engine's bucket is empty.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Store, StoreError, StoreResult};
use crate::ids::JobId;

/// One bucket a request takes a token from.
#[derive(Debug, Clone)]
pub struct BucketTake<'a> {
    /// The bucket's name (`key:<id>`, `intent:<glob>`, …).
    pub bucket: &'a str,
    /// Time between tokens (1 / rate).
    pub interval: Duration,
    /// How far ahead of the rate a full bucket lets requests go ((burst - 1) × interval).
    pub tolerance: Duration,
}

/// Why a take was refused: which bucket (an index into the request's list), and how long until
/// it has a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    pub index: usize,
    pub wait: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn from_ms(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

impl Store {
    /// Takes a token from every bucket of `takes` or from none. `now` is the tests' clock; the
    /// server passes `None` and the database's clock decides, the same for every instance.
    pub async fn take_rate_tokens(
        &self,
        takes: &[BucketTake<'_>],
        now: Option<DateTime<Utc>>,
    ) -> StoreResult<Option<Refusal>> {
        // A request that lost the race to create a bucket is refused by the database as a
        // serialization failure, having taken nothing; run again, it finds the row and locks
        // it. Each retry means another request created the bucket, so a few are plenty.
        let mut runs = 0;
        loop {
            runs += 1;
            match self.take_rate_tokens_once(takes, now).await {
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if runs < 4 && e.code().as_deref() == Some("40001") =>
                {
                    continue;
                }
                result => return result,
            }
        }
    }

    async fn take_rate_tokens_once(
        &self,
        takes: &[BucketTake<'_>],
        now: Option<DateTime<Utc>>,
    ) -> StoreResult<Option<Refusal>> {
        let buckets: Vec<&str> = takes.iter().map(|t| t.bucket).collect();
        let intervals: Vec<f64> = takes.iter().map(|t| ms(t.interval)).collect();
        let tolerances: Vec<f64> = takes.iter().map(|t| ms(t.tolerance)).collect();
        // One statement, all or none: lock the buckets (in one order, so requests sharing
        // buckets cannot deadlock), find the one that is the longest to wait for, and move
        // every bucket on only if there is none. A bucket used for the first time is full: it
        // is created with its token taken; when two first requests create it at once, the
        // loser's conflict fails the statement (see the `rate_bucket_first_use` migration).
        // A plain statement costs about half of the same steps in a PL/pgSQL function.
        let row = sqlx::query!(
            r#"
            WITH w AS (
                SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[]) WITH ORDINALITY
                    AS w(bucket, interval_ms, tolerance_ms, i)
            ), held AS (
                SELECT r.bucket, r.tat
                FROM rate_buckets r JOIN w ON w.bucket = r.bucket
                ORDER BY r.bucket
                FOR UPDATE OF r
            ), t AS (
                -- The clock is read once every bucket is locked (the count needs them all):
                -- what they hold was written by requests that committed before, each with
                -- an earlier reading. `now()`, the statement's start, could be behind them
                -- by however long the locks took: on a loaded machine a request that waited
                -- a second behind the others was judged as if it had come a second early.
                SELECT COALESCE($4::timestamptz, clock_timestamp()) AS now
                FROM (SELECT count(*) FROM held) everything_locked
            ), locked AS (
                SELECT held.bucket, greatest(held.tat, t.now) AS base FROM held, t
            ), refused AS (
                SELECT w.i, extract(epoch FROM l.base - t.now) * 1000 - w.tolerance_ms AS wait_ms
                FROM w JOIN locked l ON l.bucket = w.bucket, t
                WHERE extract(epoch FROM l.base - t.now) * 1000 > w.tolerance_ms
                ORDER BY 2 DESC
                LIMIT 1
            ), moved AS (
                UPDATE rate_buckets r
                SET tat = greatest(r.tat, t.now) + make_interval(secs => w.interval_ms / 1000)
                FROM w, t
                WHERE r.bucket = w.bucket AND NOT EXISTS (SELECT 1 FROM refused)
            ), created AS (
                INSERT INTO rate_buckets (bucket, tat)
                SELECT w.bucket, t.now + make_interval(secs => w.interval_ms / 1000)
                FROM w, t
                WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.bucket = w.bucket)
                  AND NOT EXISTS (SELECT 1 FROM refused)
                ON CONFLICT (bucket) DO UPDATE
                    SET tat = rate_bucket_created_concurrently(EXCLUDED.bucket)
            )
            SELECT i AS "refused!", wait_ms AS "wait_ms!" FROM refused
            "#,
            &buckets as &[&str],
            &intervals,
            &tolerances,
            now,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Refusal {
            index: (r.refused as usize).saturating_sub(1),
            wait: from_ms(r.wait_ms),
        }))
    }

    /// A token (or the slot it reserved before) from `take.bucket` for `job`: zero when the job
    /// may go now, else how long until its reserved slot.
    pub async fn reserve_rate_slot(
        &self,
        take: &BucketTake<'_>,
        job: JobId,
        now: Option<DateTime<Utc>>,
    ) -> StoreResult<Duration> {
        let row = sqlx::query!(
            r#"SELECT reserve_rate_slot($1, $2, $3, $4, $5) AS "wait_ms!""#,
            take.bucket,
            ms(take.interval),
            ms(take.tolerance),
            job.uuid(),
            now,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(from_ms(row.wait_ms))
    }

    /// Puts a job `owner` runs back in the queue until `run_at` without counting the attempt
    /// (its engine did not run it), recorded as `deferred` with `detail`. False when the lease
    /// was no longer held (rescued or cancelled meanwhile).
    pub async fn defer_job(
        &self,
        owner: Uuid,
        job: JobId,
        attempt: i32,
        run_at: DateTime<Utc>,
        detail: &Value,
    ) -> StoreResult<bool> {
        let row = sqlx::query!(
            r#"
            WITH deferred AS (
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1, lease_owner = NULL,
                    lease_expires_at = NULL, run_at = $4,
                    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END
                WHERE id = $2 AND lease_owner = $1 AND status = 'running' AND attempts = $3
                RETURNING id, attempts, request_id, intent, mode
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind, request_id,
                                          detail)
                SELECT id, intent, mode, 'deferred', 'running', 'queued', attempts + 1, $1,
                       'instance', request_id,
                       $5::jsonb || jsonb_build_object('run_at', $4::timestamptz)
                FROM deferred
            )
            SELECT count(*) AS "n!" FROM deferred
            "#,
            owner,
            job.uuid(),
            attempt,
            run_at,
            detail,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.n > 0)
    }
}
