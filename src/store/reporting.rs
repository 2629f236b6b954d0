//! Upkeep behind the reporting views: hourly rollups of finished jobs, and payload retention.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult};

/// What one step of payload retention's walk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStep {
    /// Jobs with payloads the walk passed.
    pub walked: i64,
    /// Of those, the ones purged (the rest were set aside until due).
    pub purged: i64,
}

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

    /// Summarizes the audit trail's BRIN ranges (on `at` and on `xact`) written since the last
    /// summary. A BRIN scan reads an unsummarized range whole, whatever its values, and only
    /// VACUUM summarizes ranges otherwise, so under sustained load the readers of the trail's
    /// tail read every page written since autovacuum last came by: the rollup (each
    /// `maintenance_interval`) 2.2 s for a 5-s window behind 98,682 unsummarized pages against
    /// 56 ms summarized, and the live streams' reader (up to every 10 ms while anyone follows)
    /// 2.4 s a page of events against 43 ms — on a 2-core machine, seconds taken from the
    /// requests being served. Summarizing reads each new page once per index. It needs the
    /// lock VACUUM takes on the partition: while autovacuum holds it, this pass goes without
    /// (waiting would have autovacuum cancelled in our favour after `deadlock_timeout`). Under
    /// the rollup's lock, so that instances take turns rather than wait for each other.
    /// Returns the ranges summarized, or None when another instance is rolling up.
    pub async fn summarize_new_trail_ranges(&self) -> StoreResult<Option<i64>> {
        let mut tx = super::begin(&self.pool).await?;
        if !super::try_lock_for_transaction(&mut tx, ROLLUP_LOCK).await? {
            return Ok(None);
        }
        super::set_local(&mut tx, "lock_timeout", "50ms").await?;
        let summarized = sqlx::query_scalar!(
            r#"
            SELECT coalesce(sum(brin_summarize_new_values(p.inhrelid::regclass)), 0)::bigint
                AS "ranges!"
            FROM pg_inherits p
            WHERE p.inhparent IN ('audit_events_at_brin'::regclass,
                                  'audit_events_xact_brin'::regclass)
            "#
        )
        .fetch_one(&mut *tx)
        .await;
        match summarized {
            Ok(n) => {
                tx.commit().await?;
                Ok(Some(n))
            }
            // Autovacuum holds the partition (lock_timeout ran out).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(Some(0)),
            Err(e) => Err(e.into()),
        }
    }

    /// One step of payload retention's walk: the next `limit` jobs with payloads after the
    /// last one walked, in id order, and up to an hour of creation time before `cut` (see
    /// migration payload_purge_progress). Those finished before `cut` lose their inputs and
    /// results; the others are set aside for [`Store::purge_deferred_payloads`]. Instances
    /// take turns (the progress row is locked).
    pub async fn purge_payloads(&self, cut: DateTime<Utc>, limit: i64) -> StoreResult<PurgeStep> {
        let step = sqlx::query!(
            r#"
            WITH progress AS (
                SELECT walked_to FROM payload_purge_progress FOR UPDATE
            ), walk AS (
                SELECT j.id, j.finished_at < $1 AS due
                FROM jobs j
                -- A subquery, not a join: as a join the planner walked the primary key from
                -- its start and filtered (282 ms a page at 10M jobs, 6.7 ms this way).
                WHERE j.id > (SELECT walked_to FROM progress)
                  AND j.id < uuid_v7_floor($1::timestamptz - interval '1 hour')
                  AND j.payload_purged_at IS NULL
                ORDER BY j.id
                LIMIT $2
            ), purged AS (
                -- Checked again on the row as it is when locked: a job retried meanwhile
                -- is not finished any more, and is set aside instead.
                UPDATE jobs j SET inputs = '{}'::jsonb, result = NULL, payload_purged_at = now()
                FROM walk w
                WHERE j.id = w.id AND w.due AND j.finished_at < $1
                RETURNING j.id
            ), set_aside AS (
                INSERT INTO payload_purge_deferred (job_id)
                SELECT id FROM walk WHERE id NOT IN (SELECT id FROM purged)
                ON CONFLICT DO NOTHING
            ), moved AS (
                UPDATE payload_purge_progress
                SET walked_to = (SELECT id FROM walk ORDER BY id DESC LIMIT 1)
                WHERE EXISTS (SELECT 1 FROM walk)
            )
            SELECT (SELECT count(*) FROM walk) AS "walked!",
                   (SELECT count(*) FROM purged) AS "purged!"
            "#,
            cut,
            limit,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(PurgeStep {
            walked: step.walked,
            purged: step.purged,
        })
    }

    /// Purges the set-aside jobs that are now due (finished before `cut`), and forgets those
    /// purged or gone with their partition. Returns how many were purged.
    pub async fn purge_deferred_payloads(&self, cut: DateTime<Utc>) -> StoreResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH purged AS (
                UPDATE jobs j SET inputs = '{}'::jsonb, result = NULL, payload_purged_at = now()
                FROM payload_purge_deferred d
                WHERE j.id = d.job_id AND j.finished_at < $1 AND j.payload_purged_at IS NULL
                RETURNING j.id
            ), settled AS (
                -- (This statement's snapshot does not see the update above: hence both.)
                DELETE FROM payload_purge_deferred d
                WHERE d.job_id IN (SELECT id FROM purged)
                   OR NOT EXISTS (SELECT 1 FROM jobs j
                                  WHERE j.id = d.job_id AND j.payload_purged_at IS NULL)
            )
            SELECT count(*) AS "n!" FROM purged
            "#,
            cut,
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
