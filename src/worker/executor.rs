//! Runs claimed jobs: one task per attempt, bounded by the instance's slots, with the attempt
//! timeout, cancellation, and a fenced completion at the end. No transaction is open while a
//! tool runs.

use crate::redact::Redactor;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use super::{backoff::Backoff, completer::Completer};
use crate::{
    catalog::{Progress, Registry, ToolContext, ToolError, ToolOutput, ToolResult},
    ids::JobId,
    store::{ClaimedJob, Completion, CompletionStatus},
};

/// Why a running attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    /// The client cancelled the job: it ends `cancelled`.
    Cancelled = 1,
    /// Another worker may own the job now: write nothing.
    LeaseLost = 2,
    /// Shutdown grace ran out: the job goes back to the queue.
    Shutdown = 3,
}

struct Running {
    attempt: i32,
    token: CancellationToken,
    reason: Arc<AtomicU8>,
    /// Until when our lease surely holds (measured from when it was last granted or renewed).
    lease_valid_until: Instant,
    /// The attempt ended and its outcome is being written: nothing is left to stop, and a
    /// heartbeat that no longer finds the job running saw that write, not a lost lease.
    finishing: bool,
}

pub struct Executor {
    instance_id: Uuid,
    /// Attempts whose tool runs: `workers.concurrency`.
    slots: Arc<Semaphore>,
    /// Attempts whose tool has returned and whose outcome is being written, as many again:
    /// a slot is free for the next job once its tool returns, not once the batched completion
    /// commits (for a cheap tool, that wait is most of the job's time), and outcomes waiting
    /// to be written cannot pile up past this bound (the tool's slot is held until there is
    /// room, which holds back the claims).
    finishing: Arc<Semaphore>,
    lease: Duration,
    registry: Arc<Registry>,
    completer: Completer,
    backoff: Backoff,
    redactor: Arc<Redactor>,
    running: Mutex<HashMap<JobId, Running>>,
    tracker: TaskTracker,
    released: Mutex<Vec<Uuid>>,
    closing: AtomicBool,
}

impl Executor {
    pub fn new(
        instance_id: Uuid,
        capacity: usize,
        lease: Duration,
        registry: Arc<Registry>,
        completer: Completer,
        backoff: Backoff,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            instance_id,
            slots: Arc::new(Semaphore::new(capacity)),
            finishing: Arc::new(Semaphore::new(capacity.max(1))),
            lease,
            registry,
            completer,
            backoff,
            redactor,
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            released: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        }
    }

    pub fn instance_id(&self) -> Uuid {
        self.instance_id
    }

    /// A free slot right now, if any (the intake uses one to run a waited-for job at once).
    /// None once shutdown began: new work then waits in the queue for another instance.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Refuses new local attempts from now on.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits for at least one free slot, then takes up to `max` of them.
    pub async fn reserve_up_to(&self, max: usize) -> Option<OwnedSemaphorePermit> {
        super::reserve_up_to(&self.slots, max).await
    }

    /// The jobs running here, with their attempt numbers.
    pub fn running_jobs(&self) -> Vec<(Uuid, i32)> {
        self.lock()
            .iter()
            .map(|(id, r)| (id.uuid(), r.attempt))
            .collect()
    }

    /// The heartbeat sent at `sent` renewed these leases.
    pub fn renewed(&self, jobs: impl IntoIterator<Item = JobId>, sent: Instant) {
        let mut running = self.lock();
        for id in jobs {
            if let Some(r) = running.get_mut(&id) {
                r.lease_valid_until = sent + self.lease;
            }
        }
    }

    /// Stops attempts whose lease may run out before `horizon` (renewals failed): past its
    /// lease a job can be rescued and started elsewhere, and must not run here any more.
    pub fn stop_expiring(&self, horizon: Instant) -> usize {
        let expiring: Vec<(JobId, i32)> = self
            .lock()
            .iter()
            .filter(|(_, r)| r.lease_valid_until <= horizon)
            .map(|(id, r)| (*id, r.attempt))
            .collect();
        for (id, attempt) in &expiring {
            tracing::warn!(job_id = %id, "lease could not be renewed; stopping the attempt");
            self.stop_attempt(*id, Some(*attempt), StopReason::LeaseLost);
        }
        expiring.len()
    }

    /// Tells a local attempt to stop; false when it does not run here.
    pub fn stop(&self, job: JobId, reason: StopReason) -> bool {
        self.stop_attempt(job, None, reason)
    }

    /// Like [`Executor::stop`], but only if the local attempt is `attempt` (when given).
    pub fn stop_attempt(&self, job: JobId, attempt: Option<i32>, reason: StopReason) -> bool {
        match self.lock().get(&job) {
            Some(r) if attempt.is_none_or(|a| a == r.attempt) && !r.finishing => {
                let _ = r.reason.compare_exchange(
                    StopReason::None as u8,
                    reason as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                r.token.cancel();
                true
            }
            _ => false,
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        let ids: Vec<JobId> = self.lock().keys().copied().collect();
        for id in ids {
            self.stop(id, reason);
        }
    }

    /// Resolves once every started attempt has ended.
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Jobs interrupted by shutdown, to hand back to the queue.
    pub fn take_released(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.released.lock().expect("released lock poisoned"))
    }

    pub fn spawn(self: &Arc<Self>, job: ClaimedJob, permit: OwnedSemaphorePermit) {
        let token = CancellationToken::new();
        let reason = Arc::new(AtomicU8::new(StopReason::None as u8));
        self.lock().insert(
            job.id,
            Running {
                attempt: job.attempt,
                token: token.clone(),
                reason: reason.clone(),
                lease_valid_until: Instant::now() + self.lease,
                finishing: false,
            },
        );
        if job.cancel_requested {
            reason.store(StopReason::Cancelled as u8, Ordering::SeqCst);
            token.cancel();
        }
        let span = tracing::info_span!("job", job_id = %job.id, intent = %job.intent, attempt = job.attempt);
        let this = self.clone();
        self.tracker.spawn(
            async move {
                this.run(job, token, reason, permit).await;
            }
            .instrument(span),
        );
    }

    async fn run(
        &self,
        job: ClaimedJob,
        token: CancellationToken,
        reason: Arc<AtomicU8>,
        slot: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let outcome = self.attempt(&job, &token).await;
        let finishing = self.finishing.clone().acquire_owned().await;
        drop(slot);
        if let Some(r) = self.lock().get_mut(&job.id)
            && r.attempt == job.attempt
        {
            r.finishing = true;
        }
        let stop = match reason.load(Ordering::SeqCst) {
            1 => StopReason::Cancelled,
            2 => StopReason::LeaseLost,
            3 => StopReason::Shutdown,
            _ => StopReason::None,
        };
        let completion = match stop {
            StopReason::LeaseLost => None,
            StopReason::Shutdown => {
                self.released
                    .lock()
                    .expect("released lock poisoned")
                    .push(job.id.uuid());
                None
            }
            StopReason::Cancelled => Some(Completion {
                job_id: job.id,
                attempt: job.attempt,
                status: CompletionStatus::Cancelled,
                result: None,
                error_code: Some("cancelled".into()),
                error_message: Some("cancelled by request".into()),
                retry_at: None,
                callback_deadline: None,
            }),
            StopReason::None => match outcome {
                Err(ToolError {
                    defer: Some(wait),
                    code,
                    message,
                    ..
                }) => {
                    self.defer(&job, wait, &code, &message).await;
                    None
                }
                outcome => Some(self.completion_for(&job, outcome)),
            },
        };
        metrics::histogram!("orchestrator_attempt_seconds", "intent" => job.intent.clone())
            .record(started.elapsed().as_secs_f64());
        if let Some(c) = completion {
            let status = c.status;
            if !self.completer.complete(c).await {
                tracing::warn!("attempt result discarded: the lease was no longer held");
            } else {
                tracing::debug!(
                    ?status,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "attempt ended"
                );
            }
        } else if stop != StopReason::None {
            tracing::info!(?stop, "attempt stopped without a result");
        }
        let mut running = self.lock();
        if running
            .get(&job.id)
            .is_some_and(|r| r.attempt == job.attempt)
        {
            running.remove(&job.id);
        }
        drop(finishing);
    }

    async fn attempt(&self, job: &ClaimedJob, token: &CancellationToken) -> ToolResult {
        let Some(intent) = self.registry.get(&job.intent, job.mode).await else {
            // Its engine may be restarting (an MCP server down at boot): worth another attempt.
            return Err(ToolError::transient(
                "intent_unavailable",
                format!(
                    "intent {} is not served in mode {} right now",
                    job.intent,
                    job.mode.as_str()
                ),
            ));
        };
        let (progress, progress_writer) = Progress::recording(
            self.completer.store().clone(),
            self.redactor.clone(),
            job.id,
            job.attempt,
        );
        let ctx = ToolContext {
            job_id: job.id,
            attempt: job.attempt,
            cancel: token.clone(),
            progress,
        };
        let timeout = Duration::from_millis(job.attempt_timeout_ms.max(1) as u64);
        let call = intent.tool.call(&ctx, &job.inputs);
        let outcome = tokio::select! {
            biased;
            _ = token.cancelled() => Err(ToolError::permanent("cancelled", "stopped")),
            r = tokio::time::timeout(timeout, call) => match r {
                Ok(r) => r,
                Err(_) => Err(ToolError::timed_out(format!(
                    "the attempt did not finish within {} ms", timeout.as_millis()))),
            },
        };
        drop(ctx);
        // The last progress report goes in the history before the outcome.
        progress_writer.finish().await;
        outcome
    }

    /// Puts a job its engine did not run back in the queue for `wait`, the attempt not
    /// counted. If that cannot be written the lease runs out and maintenance rescues the job
    /// (then the attempt counts): the same as for an instance that stopped.
    async fn defer(&self, job: &ClaimedJob, wait: Duration, code: &str, message: &str) {
        let run_at = chrono::Utc::now() + wait;
        let detail = serde_json::json!({"code": code, "message": message});
        match self
            .completer
            .store()
            .defer_job(self.instance_id, job.id, job.attempt, run_at, &detail)
            .await
        {
            Ok(true) => tracing::debug!(%code, wait_ms = wait.as_millis() as u64, "deferred"),
            Ok(false) => tracing::warn!("deferral discarded: the lease was no longer held"),
            Err(e) => tracing::warn!(error = %e, "could not defer the job; its lease will expire"),
        }
    }

    fn completion_for(&self, job: &ClaimedJob, outcome: ToolResult) -> Completion {
        let base = Completion {
            job_id: job.id,
            attempt: job.attempt,
            status: CompletionStatus::Succeeded,
            result: None,
            error_code: None,
            error_message: None,
            retry_at: None,
            callback_deadline: None,
        };
        match outcome {
            Ok(ToolOutput::Done(mut value)) => {
                self.make_storable(&mut value);
                Completion {
                    result: Some(value),
                    ..base
                }
            }
            Ok(ToolOutput::AwaitCallback { deadline }) => Completion {
                status: CompletionStatus::AwaitCallback,
                callback_deadline: Some(chrono::Utc::now() + deadline),
                ..base
            },
            Err(e) => {
                let status = if e.retryable && job.attempt < job.max_attempts {
                    CompletionStatus::Retry
                } else if e.timed_out {
                    CompletionStatus::TimedOut
                } else {
                    CompletionStatus::Failed
                };
                let retry_at = (status == CompletionStatus::Retry).then(|| {
                    let delay = self.backoff.delay(job.attempt, e.retry_after);
                    chrono::Utc::now() + delay
                });
                tracing::info!(code = %e.code, retryable = e.retryable, ?status, "attempt failed: {}", e.message);
                let (code, message) = self.storable_error(&e);
                Completion {
                    status,
                    error_code: Some(code),
                    error_message: Some(message),
                    retry_at,
                    ..base
                }
            }
        }
    }

    /// A tool's raw output (a remote command's, a peer's) may hold NULs, or echo our own
    /// credentials: neither is stored.
    pub fn make_storable(&self, value: &mut Value) {
        crate::nul::strip_value(value);
        self.redactor.value(value);
    }

    /// An error's code and message as they may be stored.
    pub fn storable_error(&self, e: &ToolError) -> (String, String) {
        (
            crate::nul::strip(&e.code).into_owned(),
            self.redactor
                .text(&crate::nul::strip(&e.message))
                .into_owned(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Running>> {
        self.running.lock().expect("running lock poisoned")
    }
}
