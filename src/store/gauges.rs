//! The queue's state for the gauges an operator alerts on: one statement, each part answered
//! from a partial index (so it stays cheap however many finished jobs there are).

use super::{Store, StoreResult};
use crate::model::JobStatus;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueGauges {
    pub queued: i64,
    /// Of the queued, those waiting for a concurrency place (see migration parked_jobs).
    pub parked: i64,
    pub running: i64,
    pub awaiting_callback: i64,
    /// How long the oldest job that is due and not parked has waited (0 when none waits).
    pub oldest_queued_seconds: f64,
    pub deliveries_pending: i64,
    pub deliveries_exhausted: i64,
}

impl Store {
    pub async fn queue_gauges(&self) -> StoreResult<QueueGauges> {
        Ok(sqlx::query_as!(
            QueueGauges,
            r#"
            SELECT
                (SELECT count(*) FROM jobs WHERE status = 'queued') AS "queued!",
                (SELECT count(*) FROM jobs WHERE status = 'queued' AND parked) AS "parked!",
                (SELECT count(*) FROM jobs WHERE status = 'running') AS "running!",
                (SELECT count(*) FROM jobs WHERE status = 'awaiting_callback')
                    AS "awaiting_callback!",
                -- Parked jobs wait for a concurrency place by design; the lag is about the
                -- jobs a worker could take.
                coalesce((SELECT extract(epoch FROM now() - min(run_at))::float8
                          FROM jobs WHERE status = 'queued' AND NOT parked AND run_at <= now()), 0)
                    AS "oldest_queued_seconds!",
                (SELECT count(*) FROM callback_deliveries WHERE status = 'pending')
                    AS "deliveries_pending!",
                (SELECT count(*) FROM callback_deliveries WHERE status = 'exhausted')
                    AS "deliveries_exhausted!"
            "#
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Jobs that ended in the last `hours`, by final status: each job's final event, counted
    /// from the hourly rollups for the whole hours they have folded and from the audit trail
    /// for the rest (the part of an hour at the window's start, and everything since the
    /// rollups' last whole hour). The trail is append-only, so its BRIN on `at` stays exact
    /// however long the database runs, and the events read are at most about two hours' worth
    /// whatever the window (fewer while the rollups keep up).
    pub async fn finished_since(&self, hours: f64) -> StoreResult<Vec<(JobStatus, i64)>> {
        Ok(sqlx::query!(
            r#"
            WITH bounds AS (
                SELECT w.since,
                       -- The first whole hour at or after the window's start.
                       CASE WHEN finished_hour(w.since) = w.since THEN w.since
                            ELSE finished_hour(w.since) + interval '1 hour' END AS whole_from,
                       -- Hours before this one are folded whole (their rollups are complete).
                       finished_hour(r.upto) AS whole_until
                FROM (SELECT now() - make_interval(secs => $1::float8 * 3600) AS since) w,
                     rollup_watermarks r
                WHERE r.name = 'jobs'
            ), counted AS (
                SELECT s.status, s.jobs AS n
                FROM job_stats_hourly s, bounds b
                WHERE s.hour >= b.whole_from AND s.hour < b.whole_until
                UNION ALL
                -- The same events the rollups fold (reporting.rs), outside those hours: before
                -- the first whole hour, and from the first hour not folded whole on (from the
                -- window's first whole hour when the rollups are further behind than that).
                SELECT e.to_status, 1
                FROM audit_events e, bounds b
                WHERE e.at >= b.since AND e.at < b.whole_from
                  AND e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                  AND e.job_id IS NOT NULL AND e.intent IS NOT NULL AND e.mode IS NOT NULL
                UNION ALL
                SELECT e.to_status, 1
                FROM audit_events e, bounds b
                WHERE e.at >= greatest(b.whole_from, b.whole_until)
                  AND e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                  AND e.job_id IS NOT NULL AND e.intent IS NOT NULL AND e.mode IS NOT NULL
            )
            SELECT status AS "status!: JobStatus", sum(n)::bigint AS "n!"
            FROM counted
            GROUP BY status
            "#,
            hours,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.status, r.n))
        .collect())
    }

    /// Finished jobs per hour over the last `hours` (oldest first, every hour present), from
    /// the hourly rollups: (hour, succeeded, failed or timed out).
    pub async fn hourly_outcomes(
        &self,
        hours: i32,
    ) -> StoreResult<Vec<(chrono::DateTime<chrono::Utc>, i64, i64)>> {
        Ok(sqlx::query!(
            r#"
            SELECT h.hour AS "hour!",
                   coalesce(sum(s.jobs) FILTER (WHERE s.status = 'succeeded'), 0)::bigint
                       AS "succeeded!",
                   coalesce(sum(s.jobs) FILTER (WHERE s.status IN ('failed', 'timed_out')), 0)::bigint
                       AS "failed!"
            FROM generate_series(
                     date_bin('1 hour', now() - make_interval(hours => $1 - 1),
                              TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                     date_bin('1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                     interval '1 hour') AS h(hour)
            LEFT JOIN job_stats_hourly s ON s.hour = h.hour
            GROUP BY h.hour
            ORDER BY h.hour
            "#,
            hours,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.hour, r.succeeded, r.failed))
        .collect())
    }
}
