//! Schedules and jobs for later: the schedule rows, their fires (one row per schedule and fire
//! time: the guarantee that a fire files one job however many instances look), and moving due
//! `scheduled` jobs to the queue.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Channel, Store, StoreResult};
use crate::{
    ids::JobId,
    model::{JobStatus, Mode, Principal},
};

/// `schedules.source` of a schedule from the configuration file (the others: `api`).
pub const FROM_CONFIG: &str = "config";

#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub name: String,
    pub intent: String,
    pub mode: Mode,
    pub inputs: Value,
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    pub catch_up: String,
    pub catch_up_max: i32,
    pub paused: bool,
    pub source: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fire_at: Option<DateTime<Utc>>,
    pub api_key_id: Option<Uuid>,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRecord {
    /// Made by the configuration file: it lives there (the API neither changes nor deletes
    /// it), and it files its jobs for the operator.
    pub fn is_from_config(&self) -> bool {
        self.source == FROM_CONFIG
    }
}

#[derive(Debug, Clone)]
pub struct NewSchedule<'a> {
    pub name: &'a str,
    pub intent: &'a str,
    pub mode: Mode,
    pub inputs: &'a Value,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub overlap: &'a str,
    pub catch_up: &'a str,
    pub catch_up_max: i32,
    pub paused: bool,
    /// `config` or `api`.
    pub source: &'a str,
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Who made it: its jobs are filed as theirs.
    pub by: &'a Principal,
}

/// `SELECT <every ScheduleRecord column> FROM schedules WHERE <filter>`.
macro_rules! select_schedules {
    ($filter:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ScheduleRecord,
            r#"SELECT id, name, intent, mode AS "mode: Mode", inputs, cron, timezone, overlap,
                      catch_up, catch_up_max, paused, source, next_fire_at, last_fire_at,
                      api_key_id, principal, created_at, updated_at
               FROM schedules WHERE "# + $filter
            $(, $arg)*
        )
    };
}

impl Store {
    /// A new schedule, audited as `schedule.created`; `None` when the name is taken.
    pub async fn create_schedule(&self, s: &NewSchedule<'_>) -> StoreResult<Option<Uuid>> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH made AS (
                INSERT INTO schedules (id, name, intent, mode, inputs, cron, timezone, overlap,
                                       catch_up, catch_up_max, paused, source, next_fire_at,
                                       api_key_id, principal)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT (name) DO NOTHING
                RETURNING id
            ), event AS (
                INSERT INTO audit_events (kind, target, actor_kind, actor_id, actor_name,
                                          request_id, client_addr, detail)
                SELECT 'schedule.created', $2, $18, $14::uuid::text, $15, $16, $17,
                       jsonb_build_object('intent', $3::text, 'cron', $6::text,
                                          'timezone', $7::text, 'source', $12::text)
                FROM made
            )
            SELECT id FROM made
            "#,
            Uuid::now_v7(),
            s.name,
            s.intent,
            s.mode as Mode,
            s.inputs,
            s.cron,
            s.timezone,
            s.overlap,
            s.catch_up,
            s.catch_up_max,
            s.paused,
            s.source,
            s.next_fire_at,
            s.by.api_key_id,
            s.by.name,
            s.by.request_id,
            s.by.client_addr,
            s.by.actor_kind().as_str(),
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A `[[schedules]]` entry of the configuration, made or brought up to date at start. Its
    /// next fire time is kept when its timing did not change, so a restart catches up on what
    /// was missed. `None`: a schedule made through the API holds the name.
    pub async fn upsert_config_schedule(&self, s: &NewSchedule<'_>) -> StoreResult<Option<Uuid>> {
        if let Some(id) = self.create_schedule(s).await? {
            return Ok(Some(id));
        }
        Ok(sqlx::query_scalar!(
            r#"
            UPDATE schedules
            SET intent = $2, mode = $3, inputs = $4, overlap = $7, catch_up = $8,
                catch_up_max = $9, paused = $10,
                next_fire_at = CASE WHEN cron = $5 AND timezone = $6 AND paused = $10
                                    THEN next_fire_at ELSE $11 END,
                cron = $5, timezone = $6, updated_at = now()
            WHERE name = $1 AND source = 'config'
            RETURNING id
            "#,
            s.name,
            s.intent,
            s.mode as Mode,
            s.inputs,
            s.cron,
            s.timezone,
            s.overlap,
            s.catch_up,
            s.catch_up_max,
            s.paused,
            s.next_fire_at,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes the configuration's schedules that are no longer in it.
    pub async fn drop_config_schedules_except(&self, names: &[String]) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH gone AS (
                DELETE FROM schedules WHERE source = 'config' AND name <> ALL($1)
                RETURNING name
            ), event AS (
                INSERT INTO audit_events (kind, target, actor_kind, detail)
                SELECT 'schedule.deleted', name, 'operator', '{"reason": "not in the configuration"}'
                FROM gone
            )
            SELECT name AS "name!" FROM gone
            "#,
            names,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        Ok(select_schedules!("true ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn schedule(&self, id: Uuid) -> StoreResult<Option<ScheduleRecord>> {
        Ok(select_schedules!("id = $1", id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Pauses or resumes; resuming sets the next fire time (fires missed while paused are
    /// not caught up). Audited as `schedule.changed`.
    pub async fn set_schedule_paused(
        &self,
        id: Uuid,
        paused: bool,
        next_fire_at: Option<DateTime<Utc>>,
        by: &Principal,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH changed AS (
                UPDATE schedules SET paused = $2, next_fire_at = $3, updated_at = now()
                WHERE id = $1 RETURNING name
            ), event AS (
                INSERT INTO audit_events (kind, target, actor_kind, actor_id, actor_name,
                                          request_id, client_addr, detail)
                SELECT 'schedule.changed', name,
                       CASE WHEN $4::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       $4::uuid::text, $5, $6, $7,
                       jsonb_build_object('action', CASE WHEN $2 THEN 'paused' ELSE 'resumed' END)
                FROM changed
            )
            SELECT count(*) AS "n!" FROM changed
            "#,
            id,
            paused,
            next_fire_at,
            by.api_key_id,
            by.name,
            by.request_id,
            by.client_addr,
        )
        .fetch_one(&self.pool)
        .await?
            > 0)
    }

    /// Deletes a schedule (its jobs stay), audited as `schedule.deleted`.
    pub async fn delete_schedule(&self, id: Uuid, by: &Principal) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH gone AS (DELETE FROM schedules WHERE id = $1 RETURNING name), event AS (
                INSERT INTO audit_events (kind, target, actor_kind, actor_id, actor_name,
                                          request_id, client_addr)
                SELECT 'schedule.deleted', name,
                       CASE WHEN $2::uuid IS NULL THEN 'anonymous' ELSE 'api_key' END,
                       $2::uuid::text, $3, $4, $5
                FROM gone
            )
            SELECT count(*) AS "n!" FROM gone
            "#,
            id,
            by.api_key_id,
            by.name,
            by.request_id,
            by.client_addr,
        )
        .fetch_one(&self.pool)
        .await?
            > 0)
    }

    /// Schedules whose next fire time has come.
    pub async fn due_schedules(&self, limit: i64) -> StoreResult<Vec<Uuid>> {
        Ok(sqlx::query_scalar!(
            r#"
            SELECT id FROM schedules
            WHERE NOT paused AND next_fire_at <= now()
            ORDER BY next_fire_at
            LIMIT $1
            "#,
            limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes a due schedule for firing: its row stays locked until [`ScheduleLock::finish`]
    /// (another instance skips it meanwhile). `None`: not due, paused, gone, or taken.
    pub async fn lock_due_schedule(&self, id: Uuid) -> StoreResult<Option<ScheduleLock>> {
        self.lock_schedule(id, true).await
    }

    /// Takes a schedule to fire it now (on demand), whatever its next fire time.
    pub async fn lock_schedule_now(&self, id: Uuid) -> StoreResult<Option<ScheduleLock>> {
        self.lock_schedule(id, false).await
    }

    async fn lock_schedule(&self, id: Uuid, only_due: bool) -> StoreResult<Option<ScheduleLock>> {
        let mut tx = super::begin(&self.pool).await?;
        let schedule = select_schedules!(
            "id = $1 AND (NOT $2 OR (NOT paused AND next_fire_at <= now())) \
             FOR UPDATE SKIP LOCKED",
            id,
            only_due
        )
        .fetch_optional(&mut *tx)
        .await?;
        Ok(schedule.map(|schedule| ScheduleLock { tx, schedule }))
    }

    /// Moves up to `limit` due `scheduled` jobs to `queued` (audited as `due`) and wakes the
    /// workers; returns how many.
    pub async fn promote_due_jobs(&self, instance: Uuid, limit: i64) -> StoreResult<i64> {
        // A burst of due jobs is taken from the partitions' indexes in order, never all sorted.
        let mut tx = super::begin_ordered_scans(&self.pool).await?;
        let promoted = sqlx::query_scalar!(
            r#"
            WITH due AS (
                SELECT id FROM jobs WHERE status = 'scheduled' AND run_at <= now()
                ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED
            ), moved AS (
                UPDATE jobs j SET status = 'queued' FROM due WHERE j.id = due.id
                RETURNING j.id, j.intent, j.mode, j.attempts
            ), event AS (
                INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status,
                                          attempt, instance_id, actor_kind)
                SELECT id, intent, mode, 'due', 'scheduled', 'queued', attempts, $1,
                       'instance'
                FROM moved
            ), wake AS (
                SELECT pg_notify($3, '') WHERE EXISTS (SELECT 1 FROM moved)
            )
            SELECT count(*) AS "n!" FROM moved LEFT JOIN wake ON true
            "#,
            instance,
            limit,
            Channel::NewWork.name(),
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(promoted)
    }

    /// When the scheduler next has something to do: the earliest scheduled job or fire time.
    pub async fn next_schedule_work(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar!(
            r#"
            SELECT LEAST((SELECT min(run_at) FROM jobs WHERE status = 'scheduled'),
                         (SELECT min(next_fire_at) FROM schedules WHERE NOT paused))
            "#
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// A schedule taken for firing (its row locked in this transaction).
pub struct ScheduleLock {
    tx: Transaction<'static, Postgres>,
    pub schedule: ScheduleRecord,
}

impl ScheduleLock {
    /// The latest fire that filed a job, and where that job is now.
    pub async fn last_job(&mut self) -> StoreResult<Option<(DateTime<Utc>, Option<JobStatus>)>> {
        Ok(sqlx::query!(
            r#"
            SELECT f.fire_time, j.status AS "status?: JobStatus"
            FROM schedule_fires f LEFT JOIN jobs j ON j.id = f.job_id
            WHERE f.schedule_id = $1 AND f.job_id IS NOT NULL
            ORDER BY f.fire_time DESC
            LIMIT 1
            "#,
            self.schedule.id,
        )
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|r| (r.fire_time, r.status)))
    }

    /// Whether a job of this schedule waits to start (scheduled or queued).
    pub async fn has_waiting_job(&mut self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"
            SELECT EXISTS (SELECT 1 FROM jobs WHERE schedule_id = $1
                                              AND status IN ('scheduled', 'queued'))
                AS "waiting!"
            "#,
            self.schedule.id,
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Records one fire (`fired` or `triggered` with its job, or `skipped` and why), audited
    /// as `schedule.fired` / `schedule.skipped`. False: that fire time is recorded already.
    pub async fn record_fire(
        &mut self,
        fire_time: DateTime<Utc>,
        job: Option<JobId>,
        outcome: &str,
        instance: Uuid,
        reason: Option<&str>,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"
            WITH fire AS (
                INSERT INTO schedule_fires (schedule_id, fire_time, job_id, outcome)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (schedule_id, fire_time) DO NOTHING
                RETURNING fire_time
            ), event AS (
                INSERT INTO audit_events (kind, target, job_id, instance_id, actor_kind,
                                          outcome, detail)
                SELECT CASE WHEN $4 = 'skipped' THEN 'schedule.skipped' ELSE 'schedule.fired' END,
                       $5, $3, $6, 'instance', NULL,
                       jsonb_strip_nulls(jsonb_build_object('fire_time', $2::timestamptz,
                                                            'how', $4::text,
                                                            'reason', $7::text))
                FROM fire
            )
            SELECT count(*) AS "n!" FROM fire
            "#,
            self.schedule.id,
            fire_time,
            job.map(|j| j.uuid()),
            outcome,
            self.schedule.name,
            instance,
            reason,
        )
        .fetch_one(&mut *self.tx)
        .await?
            > 0)
    }

    /// Sets the next fire time (and the last, when it fired) and lets the schedule go.
    pub async fn finish(
        mut self,
        next_fire_at: Option<DateTime<Utc>>,
        last_fire_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        sqlx::query!(
            r#"
            UPDATE schedules
            SET next_fire_at = CASE WHEN paused THEN next_fire_at ELSE $2 END,
                last_fire_at = GREATEST(last_fire_at, $3), updated_at = now()
            WHERE id = $1
            "#,
            self.schedule.id,
            next_fire_at,
            last_fire_at,
        )
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}
