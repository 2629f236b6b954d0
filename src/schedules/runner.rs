//! The scheduler every instance runs: moves due `scheduled` jobs to the queue, unparks jobs
//! whose concurrency key has places no trigger handed out, and fires due schedules, then
//! sleeps until the next thing is due (at most a second, so what another instance filed is
//! seen soon).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CatchUp, FireContext, Overlap, Timetable, TimetableError, render};
use crate::{
    catalog::Registry,
    ids::JobId,
    intake::{Intake, Submission, SubmitError, Submitted},
    model::Principal,
    store::{ScheduleLock, Store, StoreError},
};

/// The longest the scheduler sleeps without looking.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Jobs moved to the queue per statement.
const PROMOTE_BATCH: i64 = 1_000;
/// Keys with parked jobs looked at per tick (see `Store::unpark_jobs`).
const UNPARK_KEYS: i32 = 1_000;
/// Schedules fired per look.
const FIRE_BATCH: i64 = 100;
/// With `catch_up = "none"`, a fire this late still runs (the scheduler looks every second;
/// a busy database or a restart can make it a little late without anything being missed).
const ON_TIME: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Timetable(#[from] TimetableError),
}

pub struct Scheduler {
    store: Store,
    registry: Arc<Registry>,
    intake: Arc<Intake>,
    instance: Uuid,
    wake: Arc<Notify>,
}

impl Scheduler {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        intake: Arc<Intake>,
        instance: Uuid,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            registry,
            intake,
            instance,
            wake,
        }
    }

    /// Something new may be due sooner than what the scheduler sleeps for.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Looks, sleeps until the next due time (or a wake-up), looks again, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = match self.tick().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not look at due work");
                    None
                }
            };
            let wait = next
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(MAX_WAIT);
            let wait = if next.is_none() { MAX_WAIT } else { wait };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Promotes due jobs and fires due schedules; returns when something is next due.
    pub async fn tick(&self) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        while self
            .store
            .promote_due_jobs(self.instance, PROMOTE_BATCH)
            .await?
            == PROMOTE_BATCH
        {}
        let unparked = self.store.unpark_jobs(UNPARK_KEYS).await?;
        if unparked > 0 {
            tracing::debug!(jobs = unparked, "jobs unparked: their key had free places");
        }
        for id in self.store.due_schedules(FIRE_BATCH).await? {
            // Another instance may have taken it since: then it is not ours to fire.
            if let Some(lock) = self.store.lock_due_schedule(id).await?
                && let Err(e) = self.fire_due(lock).await
            {
                tracing::warn!(schedule = %id, error = %e, "a schedule did not fire; it is tried again");
            }
        }
        Ok(self.store.next_schedule_work().await?)
    }

    /// Fires what is due of a locked schedule, by its catch-up policy, and moves it on.
    async fn fire_due(&self, mut lock: ScheduleLock) -> Result<(), ScheduleError> {
        let now = Utc::now();
        let s = lock.schedule.clone();
        let timetable = Timetable::parse(&s.cron, &s.timezone)?;
        let from = s.next_fire_at.unwrap_or(now);
        let fires = match CatchUp::parse(&s.catch_up) {
            CatchUp::All => timetable.last_in(from, now, s.catch_up_max.max(1) as usize),
            CatchUp::Latest => timetable.last_in(from, now, 1),
            CatchUp::None => timetable
                .last_in(from, now, 1)
                .into_iter()
                .filter(|t| now - *t <= ON_TIME)
                .collect(),
        };
        let mut previous = s.last_fire_at;
        let mut last_fired = None;
        for fire_time in fires {
            if self
                .fire_one(&mut lock, &timetable, fire_time, previous, "fired")
                .await?
                .is_some()
            {
                previous = Some(fire_time);
                last_fired = Some(fire_time);
            }
        }
        lock.finish(timetable.next_after(now), last_fired).await?;
        Ok(())
    }

    /// Fires a schedule now, whatever its timetable says (`POST /schedules/{id}/trigger`): a
    /// job even if the previous run still goes. `None`: no such schedule, or it is being
    /// fired by someone else this moment.
    pub async fn trigger(&self, id: Uuid) -> Result<Option<JobId>, ScheduleError> {
        let Some(mut lock) = self.store.lock_schedule_now(id).await? else {
            return Ok(None);
        };
        let s = lock.schedule.clone();
        let timetable = Timetable::parse(&s.cron, &s.timezone)?;
        let now = Utc::now();
        let job = self
            .fire_one(&mut lock, &timetable, now, s.last_fire_at, "triggered")
            .await?;
        lock.finish(s.next_fire_at, job.map(|_| now)).await?;
        Ok(job)
    }

    /// One fire: checks the overlap policy (not for `triggered`), renders the inputs, files
    /// the job under the schedule's own idempotency key and records the fire. A fire that
    /// cannot file a job (intent gone, inputs refused) is recorded as skipped, with why.
    async fn fire_one(
        &self,
        lock: &mut ScheduleLock,
        timetable: &Timetable,
        fire_time: DateTime<Utc>,
        previous: Option<DateTime<Utc>>,
        how: &str,
    ) -> Result<Option<JobId>, ScheduleError> {
        let s = lock.schedule.clone();
        let busy = match Overlap::parse(&s.overlap) {
            _ if how == "triggered" => None,
            Overlap::Allow => None,
            Overlap::Skip => match lock.last_job().await? {
                Some((_, Some(status))) if !status.is_final() => {
                    Some("the previous run is still going")
                }
                _ => None,
            },
            Overlap::QueueOne => lock
                .has_waiting_job()
                .await?
                .then_some("a run is already waiting to start"),
        };
        if let Some(reason) = busy {
            lock.record_fire(fire_time, None, "skipped", self.instance, Some(reason))
                .await?;
            return Ok(None);
        }
        let prepared = async {
            let inputs = render(
                &s.inputs,
                &FireContext {
                    schedule: &s.name,
                    fire_time,
                    previous_fire_time: previous.or_else(|| timetable.previous_before(fire_time)),
                },
            )?;
            let intent = self
                .registry
                .resolve(&s.intent, s.mode)
                .await
                .map_err(|e| format!("intent `{}`: {e:?}", s.intent))?;
            intent.validate(&inputs).map_err(|errors| {
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            Ok::<_, String>((intent, inputs))
        };
        let (intent, inputs) = match prepared.await {
            Ok(ready) => ready,
            Err(reason) => {
                tracing::warn!(schedule = %s.name, %reason, "a schedule's fire filed no job");
                lock.record_fire(fire_time, None, "skipped", self.instance, Some(&reason))
                    .await?;
                return Ok(None);
            }
        };
        let submitted = self
            .intake
            .submit(Submission {
                intent,
                requested_mode: s.mode,
                inputs,
                callback_url: None,
                // The same fire always names the same key: filed again after a crash, it is
                // the same job.
                idempotency_key: Some(format!(
                    "schedule:{}:{}",
                    s.id.simple(),
                    fire_time.timestamp_micros()
                )),
                max_attempts: None,
                principal: Principal {
                    api_key_id: s.api_key_id,
                    name: s.principal.clone(),
                    client_addr: None,
                    request_id: None,
                    // The configuration file's schedules file jobs for the operator; one made
                    // through the API files them for its key (or anonymously, as it was made).
                    operator: s.is_from_config(),
                },
                wait: false,
                run_at: None,
                when: None,
                schedule_id: Some(s.id),
            })
            .await?;
        let job = match submitted {
            Submitted::Created { job_id, .. } | Submitted::Replay { job_id, .. } => job_id,
        };
        lock.record_fire(fire_time, Some(job), how, self.instance, None)
            .await?;
        Ok(Some(job))
    }
}
