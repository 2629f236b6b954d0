//! Upkeep behind the reporting views: hourly rollups of finished jobs, and payload retention.

use super::{Store, StoreResult};

/// Advisory lock id: one instance rolls up at a time.
const ROLLUP_LOCK: i64 = 0x0c4e_57a7_0001;

impl Store {
    /// Folds jobs finished since the watermark (up to a minute ago, so late commits are not
    /// skipped) into the hourly rollups, by the time of their final event. Returns how many jobs were folded, or None when
    /// another instance holds the rollup lock.
    pub async fn roll_up_finished_jobs(&self) -> StoreResult<Option<i64>> {
        let mut tx = super::begin(&self.pool).await?;
        if !super::try_lock_for_transaction(&mut tx, ROLLUP_LOCK).await? {
            return Ok(None);
        }
        let folded = sqlx::query_scalar!(
            r#"
            WITH bounds AS (
                SELECT upto AS lo, now() - interval '1 minute' AS hi
                FROM rollup_watermarks WHERE name = 'jobs'
            ), fin AS (
                -- Each job's one final event (the trail is append-only and BRIN-indexed by
                -- time, so a period's events are found without walking the jobs table).
                SELECT date_bin('1 hour', e.at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
                       e.intent, e.mode, e.to_status AS status, e.attempt AS attempts,
                       e.duration_ms
                FROM audit_events e, bounds b
                WHERE e.at >= b.lo AND e.at < b.hi
                  AND e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
                  AND e.job_id IS NOT NULL AND e.intent IS NOT NULL AND e.mode IS NOT NULL
            ), stats AS (
                INSERT INTO job_stats_hourly AS s (hour, intent, mode, status, jobs, attempts,
                                                   retried_jobs, duration_ms_sum,
                                                   duration_ms_max)
                SELECT hour, intent, mode, status, count(*), sum(attempts),
                       count(*) FILTER (WHERE attempts > 1), coalesce(sum(duration_ms), 0),
                       coalesce(max(duration_ms), 0)
                FROM fin GROUP BY hour, intent, mode, status
                ON CONFLICT (hour, intent, mode, status) DO UPDATE
                SET jobs = s.jobs + EXCLUDED.jobs,
                    attempts = s.attempts + EXCLUDED.attempts,
                    retried_jobs = s.retried_jobs + EXCLUDED.retried_jobs,
                    duration_ms_sum = s.duration_ms_sum + EXCLUDED.duration_ms_sum,
                    duration_ms_max = greatest(s.duration_ms_max, EXCLUDED.duration_ms_max)
            ), hist AS (
                INSERT INTO job_duration_hist AS h (day, intent, status, bucket, jobs)
                SELECT (hour AT TIME ZONE 'UTC')::date, intent, status,
                       duration_bucket(duration_ms), count(*)
                FROM fin GROUP BY 1, 2, 3, 4
                ON CONFLICT (day, intent, status, bucket) DO UPDATE
                SET jobs = h.jobs + EXCLUDED.jobs
            ), mark AS (
                UPDATE rollup_watermarks w SET upto = greatest(w.upto, b.hi)
                FROM bounds b WHERE w.name = 'jobs'
            )
            SELECT count(*) AS "n!" FROM fin
            "#
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(folded))
    }

    /// Drops inputs and results of up to `limit` jobs finished more than `days` ago.
    pub async fn purge_payloads(&self, days: u32, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query!(
            r#"
            UPDATE jobs SET inputs = '{}'::jsonb, result = NULL, payload_purged_at = now()
            WHERE id = ANY(ARRAY(
                SELECT id FROM jobs
                -- A job finished before the cut was created before it, so its id (the time
                -- of its request) is older too: the bound leaves newer partitions out. (An
                -- instance whose clock runs ahead delays such a job's purge by that much.) The
                -- hour is what the finished-at BRIN indexes.
                WHERE id < uuid_v7_floor(now() - make_interval(days => $1))
                  AND finished_hour(finished_at) <= finished_hour(now() - make_interval(days => $1))
                  AND finished_at < now() - make_interval(days => $1)
                  AND payload_purged_at IS NULL
                LIMIT $2
                FOR UPDATE SKIP LOCKED))
            "#,
            days as i32,
            limit,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
