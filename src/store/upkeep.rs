//! Bookkeeping rows that only ever grew: the places of concurrency keys no job uses any more,
//! and the fire records of schedules long past.

use super::{Store, StoreResult};

impl Store {
    /// Removes the places of concurrency keys that have no job left to run (none scheduled,
    /// queued, running or awaiting a callback, and no place taken). Intake creates a key's
    /// places in the statement that files the job, and a retry in the statement that sends a
    /// finished job back (`ON CONFLICT DO NOTHING`), so a purge that ran between that insert
    /// and its commit would leave the job with no place to ever take: the delete runs under a
    /// table lock that waits for every transaction writing places to end (and holds new ones
    /// back meanwhile), and only when a look without the lock found something to purge, so
    /// claims and intake rarely wait for it.
    pub async fn purge_idle_concurrency_keys(&self) -> StoreResult<u64> {
        let idle = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM idle_concurrency_keys()) AS "idle!""#
        )
        .fetch_one(&self.pool)
        .await?;
        if !idle {
            return Ok(0);
        }
        let mut tx = super::begin(&self.pool).await?;
        // Waiting longer would hold claims back; the next pass tries again.
        super::set_local(&mut tx, "lock_timeout", "200ms").await?;
        let locked = sqlx::query!("LOCK TABLE concurrency_slots IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await;
        match locked {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => return Ok(0),
            other => other?,
        };
        let purged = sqlx::query!(
            "DELETE FROM concurrency_slots WHERE key IN (SELECT idle_concurrency_keys())"
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }

    /// Forgets fire records older than `days` that no scheduler can need again: before the
    /// schedule's last fire (catch-up only fires after it), and not the latest fire that filed
    /// a job (overlap rules ask for it). The audit trail keeps every fire as
    /// `schedule.fired`/`schedule.skipped`.
    pub async fn purge_old_schedule_fires(&self, days: i32, limit: i64) -> StoreResult<u64> {
        Ok(sqlx::query!(
            r#"
            DELETE FROM schedule_fires d
            USING (
                SELECT f.schedule_id, f.fire_time
                FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
                WHERE f.created_at < now() - make_interval(days => $1)
                  AND f.fire_time < s.last_fire_at
                  AND (f.job_id IS NULL
                       OR f.fire_time < (SELECT max(l.fire_time) FROM schedule_fires l
                                         WHERE l.schedule_id = f.schedule_id
                                           AND l.job_id IS NOT NULL))
                LIMIT $2
            ) old
            WHERE d.schedule_id = old.schedule_id AND d.fire_time = old.fire_time
            "#,
            days,
            limit,
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
