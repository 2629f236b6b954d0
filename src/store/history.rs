//! Job history and the audit trail live in time partitions (migration
//! `20261209000001_partitioned_history`): the coming ones are made ahead, and expired ones
//! leave whole, each drop recorded in the trail first.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult};
use crate::model::AuditKind;

/// Advisory lock id: one instance drops partitions at a time.
const RETENTION_LOCK: i64 = 0x0c4e_57a7_0002;

/// How long partition DDL may wait for a lock on the tables. Dropping a partition (DETACH)
/// needs a table to itself for a moment, and while it waits every new statement on the table
/// queues behind it, so it gives up quickly; a pass that gives up tries again at the next one
/// (making partitions takes a lock reads and writes pass, and runs two lengths ahead of need).
const DDL_LOCK_TIMEOUT: &str = "100ms";

/// Partitions with more rows than this (by the statistics) are recorded with the estimate.
const EXACT_COUNT_UP_TO: i64 = 1_000_000;

/// `55P03` (lock_not_available): the lock timeout ran out. `55006` (object_in_use): the
/// partition turned out to hold a job that is not past retention once it was detached.
const NOT_NOW: [&str; 2] = ["55P03", "55006"];

/// One partition of `jobs` or `audit_events` and the time it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPartition {
    pub name: String,
    /// `jobs` or `audit_events`.
    pub table: String,
    /// None: the partition holding everything from before history was partitioned.
    pub from: Option<DateTime<Utc>>,
    pub until: DateTime<Utc>,
}

impl Store {
    /// Makes the partitions of both tables that follow the newest one, `days` long each, until
    /// one reaches past `upto` (the days before `now` that have none get one partition).
    /// Returns how many were made (0 also when the tables were busy for longer than the lock
    /// timeout).
    pub async fn ensure_history_partitions(
        &self,
        days: u32,
        now: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> StoreResult<i32> {
        let mut tx = super::begin(&self.pool).await?;
        super::set_local(&mut tx, "lock_timeout", DDL_LOCK_TIMEOUT).await?;
        let made = sqlx::query_scalar!(
            r#"SELECT ensure_history_partitions($1, $2, $3) AS "made!""#,
            days as i32,
            now,
            upto,
        )
        .fetch_one(&mut *tx)
        .await;
        match made {
            Err(e) if is_not_now(&e) => Ok(0),
            other => {
                let made = other?;
                tx.commit().await?;
                Ok(made)
            }
        }
    }

    /// Seconds from `now` to the end of the newest partition of the table whose partitions
    /// reach least far (negative: rows of the present have no partition and are refused).
    pub async fn history_partitions_ahead(&self, now: DateTime<Utc>) -> StoreResult<f64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT extract(epoch FROM min(newest) - $1::timestamptz)::float8 AS "ahead!"
               FROM (SELECT max(until_at) AS newest FROM history_partitions GROUP BY parent) t"#,
            now,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Every partition, oldest first.
    pub async fn history_partitions(&self) -> StoreResult<Vec<HistoryPartition>> {
        Ok(sqlx::query_as!(
            HistoryPartition,
            r#"SELECT name, parent AS "table", from_at AS "from", until_at AS "until"
               FROM history_partitions ORDER BY until_at, parent"#
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Partitions past retention at `now` (0 days: never). A `jobs` partition goes when all of
    /// its jobs were created and finished more than `jobs_days` ago and none has a callback
    /// delivery still pending; an `audit_events` partition when its whole time range is more
    /// than `audit_days` ago and already folded into the reporting rollups.
    pub async fn expired_history_partitions(
        &self,
        jobs_days: u32,
        audit_days: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<HistoryPartition>> {
        Ok(sqlx::query_as!(
            HistoryPartition,
            r#"
            WITH cut AS (
                SELECT $3::timestamptz - make_interval(days => $1) AS jobs,
                       least($3::timestamptz - make_interval(days => $2),
                             (SELECT upto FROM rollup_watermarks WHERE name = 'jobs')) AS audit
            ), ranges AS (
                SELECT h.*, coalesce(uuid_v7_floor(h.from_at),
                                     '00000000-0000-0000-0000-000000000000') AS lo,
                       uuid_v7_floor(h.until_at) AS hi
                FROM history_partitions h
            )
            SELECT r.name AS "name!", r.parent AS "table!", r.from_at AS "from",
                   r.until_at AS "until!"
            FROM ranges r, cut
            WHERE (r.parent = 'jobs' AND $1 > 0 AND r.until_at <= cut.jobs
                   -- Each by its own index: unfinished jobs by status, late finishes by BRIN.
                   AND NOT EXISTS (
                       SELECT 1 FROM jobs j
                       WHERE j.id >= r.lo AND j.id < r.hi
                         AND j.status IN ('scheduled', 'queued', 'running', 'awaiting_callback'))
                   AND NOT EXISTS (
                       SELECT 1 FROM jobs j
                       WHERE j.id >= r.lo AND j.id < r.hi
                         AND finished_hour(j.finished_at) >= finished_hour(cut.jobs)
                         AND j.finished_at >= cut.jobs)
                   AND NOT EXISTS (
                       SELECT 1 FROM callback_deliveries d
                       WHERE d.job_id >= r.lo AND d.job_id < r.hi AND d.status = 'pending'))
               OR (r.parent = 'audit_events' AND $2 > 0 AND r.until_at <= cut.audit)
            ORDER BY r.until_at, r.parent
            "#,
            jobs_days as i32,
            audit_days as i32,
            now,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops one expired partition: the drop is written to the audit trail (with the rows it
    /// removes: `rows_exact` false when that is the statistics' estimate of a large one), the partition detached, checked again now that nothing can change it, and
    /// dropped, all in one transaction. Returns the rows removed, or None when it cannot go
    /// now (another instance is dropping, the tables stayed busy, or a job in it was sent back
    /// to the queue meanwhile); the next pass tries again.
    pub async fn drop_history_partition(
        &self,
        partition: &HistoryPartition,
        jobs_days: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<i64>> {
        let mut tx = super::begin(&self.pool).await?;
        if !super::try_lock_for_transaction(&mut tx, RETENTION_LOCK).await? {
            return Ok(None);
        }
        // Counted exactly up to a size; past it, the statistics' estimate: a drop that cannot
        // get its lock is retried every pass, and must not scan a large partition each time.
        let rows = sqlx::query!(
            r#"
            WITH est AS (
                SELECT greatest(c.reltuples, 0)::bigint AS n, c.reltuples > $2 AS large
                FROM pg_class c WHERE c.oid = to_regclass($1))
            SELECT CASE WHEN est.large THEN est.n
                   WHEN h.parent = 'jobs' THEN (
                       SELECT count(*) FROM jobs
                       WHERE id >= coalesce(uuid_v7_floor(h.from_at),
                                            '00000000-0000-0000-0000-000000000000')
                         AND id < uuid_v7_floor(h.until_at))
                   ELSE (
                       SELECT count(*) FROM audit_events
                       WHERE at >= coalesce(h.from_at, '-infinity') AND at < h.until_at)
                   END AS "n!",
                   NOT est.large AS "exact!"
            FROM history_partitions h, est WHERE h.name = $1
            "#,
            partition.name,
            EXACT_COUNT_UP_TO as f32,
        )
        .fetch_optional(&mut *tx)
        .await?;
        // Another instance dropped it since it was listed.
        let Some(rows) = rows else {
            return Ok(None);
        };
        super::set_local(&mut tx, "lock_timeout", DDL_LOCK_TIMEOUT).await?;
        // Stamped with the caller's clock, which is the time the partition expired by.
        sqlx::query!(
            r#"
            INSERT INTO audit_events (at, kind, outcome, actor_kind, target, detail)
            VALUES ($1, $2, 'ok', 'maintenance', $3,
                    jsonb_build_object('table', $4::text, 'from', $5::timestamptz,
                                       'until', $6::timestamptz, 'rows', $7::bigint,
                                       'rows_exact', $8::boolean))
            "#,
            now,
            AuditKind::RetentionDropped.as_str(),
            partition.name,
            partition.table,
            partition.from,
            partition.until,
            rows.n,
            rows.exact,
        )
        .execute(&mut *tx)
        .await?;
        let dropped = sqlx::query!(
            "SELECT drop_history_partition($1, $2::timestamptz - make_interval(days => $3))",
            partition.name,
            now,
            jobs_days as i32,
        )
        .execute(&mut *tx)
        .await;
        match dropped {
            Err(e) if is_not_now(&e) => Ok(None),
            other => {
                other?;
                tx.commit().await?;
                Ok(Some(rows.n))
            }
        }
    }
}

fn is_not_now(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| NOT_NOW.contains(&c.as_ref())))
}
