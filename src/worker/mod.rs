//! In-process workers: the claim loop, the lease heartbeat, the completion writer, the
//! LISTEN/NOTIFY listener and maintenance, started and stopped together.

pub mod backoff;
mod claimer;
mod completer;
mod config;
pub mod executor;
mod history;
mod listener;
mod maintenance;
mod pace;

pub use history::{HistoryReport, HistorySettings, keep_history, make_partitions_ahead};
pub use listener::Wakeups;
pub use maintenance::{MaintenanceSettings, pass as maintenance_pass};
pub mod waiters;

use crate::redact::Redactor;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use config::{RetentionConfig, WorkersConfig};
pub use executor::{Executor, StopReason};
pub use waiters::{Waiter, Waiters};

use crate::{
    catalog::Registry,
    model::FinishedJob,
    store::{ReleaseReason, Store},
};
use futures::future::BoxFuture;
use tokio_util::task::TaskTracker;

/// Work that runs beside the job workers (callback delivery): woken by the same listener,
/// stopped with them in the ordered shutdown. Its tasks run under `tracker`, so shutdown can
/// wait for them within the grace period.
pub trait Sidecar: Send + Sync + 'static {
    fn run(
        self: Arc<Self>,
        wake: Arc<Notify>,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) -> BoxFuture<'static, ()>;
}

/// Waits for at least one free slot, then takes up to `max` of them at once (callback delivery
/// claims that many rows next).
pub(crate) async fn reserve_up_to(
    slots: &Arc<tokio::sync::Semaphore>,
    max: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mut permit = slots.clone().acquire_owned().await.ok()?;
    let extra = slots.available_permits().min(max.saturating_sub(1));
    if extra > 0
        && let Ok(more) = slots.clone().try_acquire_many_owned(extra as u32)
    {
        permit.merge(more);
    }
    Some(permit)
}

/// Everything a job this instance finished triggers here: counted once, where the final state
/// was written (other instances only wake their waiters when they hear of it).
pub(crate) fn announce_finished(waiters: &Waiters, job: FinishedJob) {
    metrics::counter!("orchestrator_jobs_finished_total",
        "intent" => job.intent.clone(), "status" => job.status.as_str())
    .increment(1);
    waiters.finish(Arc::new(job));
}

/// The running worker machinery of one instance.
pub struct Workers {
    pub executor: Arc<Executor>,
    pub waiters: Arc<Waiters>,
    /// Signalled when this process queued work (other instances hear NOTIFY).
    pub wake: Arc<Notify>,
    store: Store,
    stop_claiming: CancellationToken,
    /// Cancelled when shutdown grace runs out: waits end, remaining attempts are released.
    pub hard_stop: CancellationToken,
    lease_secs: f64,
    tasks: std::sync::Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    claimer: Option<JoinHandle<()>>,
    delivering: Option<JoinHandle<()>>,
    delivery_tracker: TaskTracker,
    background: Vec<JoinHandle<()>>,
    completer: Option<JoinHandle<()>>,
}

/// What the workers of one instance are started with.
pub struct WorkersSetup {
    /// This instance: lease owner of what it claims.
    pub instance_id: Uuid,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub config: WorkersConfig,
    /// Callback delivery, run beside the workers.
    pub sidecar: Option<Arc<dyn Sidecar>>,
    pub maintenance: MaintenanceSettings,
    /// Signalled when API keys changed somewhere (authentication caches must go).
    pub keys_changed: Arc<Notify>,
    /// Signalled when audit events were written somewhere (live streams read them).
    pub events_written: Arc<Notify>,
    /// Cuts our own credentials out of what tools return.
    pub redactor: Arc<Redactor>,
}

impl Workers {
    pub fn start(setup: WorkersSetup) -> Self {
        let WorkersSetup {
            instance_id,
            store,
            registry,
            config,
            sidecar: deliveries,
            maintenance,
            keys_changed,
            events_written,
            redactor,
        } = setup;
        let waiters = Arc::new(Waiters::default());
        let wake = Arc::new(Notify::new());
        let (completer, completer_task) = completer::Completer::start(
            store.clone(),
            instance_id,
            config.completion_batch,
            waiters.clone(),
        );
        let executor = Arc::new(Executor::new(
            instance_id,
            &config,
            registry,
            completer,
            redactor,
        ));
        let stop_claiming = CancellationToken::new();
        let lease_secs = config.lease.as_secs_f64();
        tracing::info!(%instance_id, concurrency = config.concurrency, "workers starting");

        let claimer = (config.concurrency > 0).then(|| {
            tokio::spawn(claimer::run(claimer::ClaimLoop {
                store: store.clone(),
                executor: executor.clone(),
                waiters: waiters.clone(),
                wake: wake.clone(),
                stop: stop_claiming.clone(),
                batch: config.claim_batch as usize,
                lease_secs,
                poll: config.poll_interval,
            }))
        });
        let delivery_wake = Arc::new(Notify::new());
        let delivery_tracker = TaskTracker::new();
        let delivering = deliveries.map(|deliverer| {
            tokio::spawn(deliverer.run(
                delivery_wake.clone(),
                stop_claiming.clone(),
                delivery_tracker.clone(),
            ))
        });
        let background = vec![
            tokio::spawn(heartbeat_loop(
                store.clone(),
                executor.clone(),
                lease_secs,
                config.heartbeat_interval,
            )),
            tokio::spawn(listener::run(
                store.clone(),
                executor.clone(),
                waiters.clone(),
                Wakeups {
                    jobs: wake.clone(),
                    deliveries: delivery_wake,
                    keys: keys_changed,
                    events: events_written,
                },
            )),
            tokio::spawn(maintenance::run(
                store.clone(),
                waiters.clone(),
                maintenance,
            )),
        ];
        Self {
            executor,
            waiters,
            wake,
            store,
            stop_claiming,
            hard_stop: CancellationToken::new(),
            lease_secs,
            tasks: std::sync::Mutex::new(Tasks {
                claimer,
                delivering,
                delivery_tracker,
                background,
                completer: Some(completer_task),
            }),
        }
    }

    pub fn instance_id(&self) -> Uuid {
        self.executor.instance_id()
    }

    pub fn lease_secs(&self) -> f64 {
        self.lease_secs
    }

    /// Hands jobs this instance holds but will not finish back to the queue, in one statement,
    /// their attempts not counted. If that cannot be written their leases run out and
    /// maintenance rescues them (the attempt counts).
    async fn release(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        match self
            .store
            .release_jobs(self.executor.instance_id(), &ids, ReleaseReason::Shutdown)
            .await
        {
            Ok(n) => {
                metrics::counter!("orchestrator_jobs_given_back_total", "reason" => ReleaseReason::Shutdown.as_str())
                    .increment(n);
                tracing::info!(released = n, "jobs handed back to the queue")
            }
            Err(e) => {
                tracing::error!(error = %e, "could not release jobs; their leases will expire")
            }
        }
    }

    /// Stops claiming, lets running attempts finish within `grace`, stops and releases the
    /// rest back to the queue, then stops the background tasks.
    pub async fn shutdown(&self, grace: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock poisoned"));
        self.stop_claiming.cancel();
        if let Some(claimer) = tasks.claimer {
            let _ = claimer.await;
        }
        if let Some(delivering) = tasks.delivering {
            let _ = delivering.await;
        }
        let waiting = self.executor.close();
        tasks.delivery_tracker.close();
        self.release(waiting).await;
        let (drained, _) = tokio::join!(
            tokio::time::timeout(grace, self.executor.drained()),
            // A delivery cut short is sent again once its lease runs out (receivers
            // de-duplicate by webhook-id).
            tokio::time::timeout(grace, tasks.delivery_tracker.wait()),
        );
        if drained.is_err() {
            tracing::warn!(
                running = self.executor.running_jobs().len(),
                "shutdown grace over; stopping running jobs"
            );
            self.hard_stop.cancel();
            self.executor.stop_all(StopReason::Shutdown);
            self.executor.drained().await;
        }
        self.hard_stop.cancel();
        self.release(self.executor.take_released()).await;
        for task in &tasks.background {
            task.abort();
        }
        if let Some(completer) = tasks.completer {
            completer.abort();
        }
        tracing::info!("workers stopped");
    }
}

/// One statement per interval renews every lease this instance holds. Jobs it no longer holds
/// are stopped (another worker may run them now); jobs asked to cancel are stopped too.
async fn heartbeat_loop(store: Store, executor: Arc<Executor>, lease_secs: f64, every: Duration) {
    let owner = executor.instance_id();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A heartbeat stuck on an unreachable database must not delay the check below.
        if tokio::time::timeout(every, renew(&store, &executor, owner, lease_secs))
            .await
            .is_err()
        {
            tracing::warn!("lease heartbeat timed out");
        }
        // Whatever could not be renewed must stop before its lease runs out.
        executor.stop_expiring(Instant::now() + every);
    }
}

async fn renew(store: &Store, executor: &Executor, owner: Uuid, lease_secs: f64) {
    let running = executor.running_jobs();
    if running.is_empty() {
        return;
    }
    let ids: Vec<Uuid> = running.iter().map(|(id, _)| *id).collect();
    let sent = Instant::now();
    match store.heartbeat(owner, &ids, lease_secs).await {
        Ok(held) => {
            executor.renewed(held.iter().map(|h| h.id), sent);
            let mut lost: std::collections::HashMap<Uuid, i32> = running.into_iter().collect();
            for h in held {
                lost.remove(&h.id.uuid());
                if h.cancel_requested {
                    executor.stop(h.id, StopReason::Cancelled);
                }
            }
            for (id, attempt) in lost {
                if executor.stop_attempt(id.into(), Some(attempt), StopReason::LeaseLost) {
                    tracing::warn!(job_id = %crate::ids::JobId::from(id), "lease lost; attempt stopped");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
    }
}
