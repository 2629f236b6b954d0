//! Runs claimed jobs: one task per attempt, bounded by the instance's slots, with the attempt
//! timeout, cancellation, and a fenced completion at the end. No transaction is open while a
//! tool runs.

use crate::redact::Redactor;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use super::{WorkersConfig, backoff::Backoff, completer::Completer, pace::Pace};
use crate::{
    catalog::{Progress, Registry, ToolContext, ToolError, ToolOutput, ToolResult},
    ids::JobId,
    model::Mode,
    store::{
        AtOnceCandidate, ClaimedJob, Completion, CompletionStatus, FinishedAtOnce, InlineOutcome,
        ReleaseReason,
    },
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
    /// The tool was called (a prefetched job waits for a slot first).
    started: bool,
    /// The attempt ended and its outcome is being written: nothing is left to stop, and a
    /// heartbeat that no longer finds the job running saw that write, not a lost lease.
    finishing: bool,
}

/// A claimed job that has waited this long for a slot while no call ended here goes back to
/// the queue: a prefetch is meant to start within a claim's round trip, so it was claimed just
/// before every slot got a long call, and another instance may have room for it. While calls
/// still end, however slowly (the database is the bottleneck, and every instance shares it),
/// it keeps waiting: handing jobs back then only adds statements to an overloaded database (a
/// bench run saw 181 hand-backs starve the pool and stall the lease heartbeat).
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

/// What ended a claimed job's wait for a slot.
enum SlotWait {
    Got(OwnedSemaphorePermit),
    /// Its token fired: cancelled, lease lost, or shutdown.
    Stopped,
    /// No slot within [`GIVE_BACK_AFTER`], and no call ended meanwhile.
    TooLong,
}

pub struct Executor {
    instance_id: Uuid,
    /// Attempts whose tool runs: `workers.concurrency`.
    slots: Arc<Semaphore>,
    capacity: usize,
    /// Claimed jobs that may wait for a slot, at most (`workers.prefetch`).
    prefetch_max: usize,
    pace: Pace,
    /// Claimed jobs waiting here for a slot.
    waiting: AtomicUsize,
    /// A slot was freed or taken by a waiting job: the claim loop looks again for room.
    turned_over: Notify,
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
        config: &WorkersConfig,
        registry: Arc<Registry>,
        completer: Completer,
        redactor: Arc<Redactor>,
    ) -> Self {
        let capacity = config.concurrency;
        Self {
            instance_id,
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            prefetch_max: config.prefetch,
            pace: Pace::default(),
            waiting: AtomicUsize::new(0),
            turned_over: Notify::new(),
            // Every claimed job may be writing its outcome at once.
            finishing: Arc::new(Semaphore::new((capacity + config.prefetch).max(1))),
            lease: config.lease,
            registry,
            completer,
            backoff: Backoff {
                base: config.retry_base,
                max: config.retry_max,
            },
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

    /// Refuses new local attempts from now on and stops the claimed jobs still waiting for a
    /// slot, returning them: the caller hands them back to the queue together, at once, rather
    /// than when the running ones have finished (their tasks write nothing).
    pub fn close(&self) -> Vec<Uuid> {
        self.closing.store(true, Ordering::SeqCst);
        self.turned_over.notify_waiters();
        // Marked under the same lock `run` takes to start an attempt: a job is either marked
        // here and never started, or started there and not returned (it is released after the
        // drain, when its attempt has ended) — never handed back while it runs.
        self.lock()
            .iter()
            .filter(|(_, r)| !r.started && !r.finishing)
            .filter(|(_, r)| {
                r.reason
                    .compare_exchange(
                        StopReason::None as u8,
                        StopReason::Shutdown as u8,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
            })
            .map(|(id, r)| {
                r.token.cancel();
                id.uuid()
            })
            .collect()
    }

    /// Waits until this instance has room for claimed jobs, then says how many to claim (at
    /// most `max`): the free slots, plus the prefetch the measured pace calls for, less the
    /// claimed jobs already waiting here. None once closed.
    pub async fn claim_room(&self, max: usize) -> Option<usize> {
        loop {
            let turned = self.turned_over.notified();
            tokio::pin!(turned);
            // Registered before looking, so a slot freed in between is not missed.
            turned.as_mut().enable();
            if self.closing.load(Ordering::SeqCst) {
                return None;
            }
            let ahead = self
                .pace
                .prefetch(self.capacity, self.prefetch_max, Instant::now());
            metrics::gauge!("orchestrator_claim_prefetch").set(ahead as f64);
            let room = (self.slots.available_permits() + ahead)
                .saturating_sub(self.waiting.load(Ordering::SeqCst))
                .min(max);
            if room > 0 {
                return Some(room);
            }
            turned.await;
        }
    }

    /// A claim statement's round trip, for the prefetch.
    pub fn claimed(&self, took: Duration) {
        self.pace.claimed(took);
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

    /// Runs a claimed job: at once with `slot`, else once a slot is free.
    pub fn spawn(self: &Arc<Self>, job: ClaimedJob, slot: Option<OwnedSemaphorePermit>) {
        let token = CancellationToken::new();
        let reason = Arc::new(AtomicU8::new(StopReason::None as u8));
        self.lock().insert(
            job.id,
            Running {
                attempt: job.attempt,
                token: token.clone(),
                reason: reason.clone(),
                lease_valid_until: Instant::now() + self.lease,
                started: false,
                finishing: false,
            },
        );
        if slot.is_none() {
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        if job.cancel_requested {
            reason.store(StopReason::Cancelled as u8, Ordering::SeqCst);
            token.cancel();
        }
        let span = tracing::info_span!("job", job_id = %job.id, intent = %job.intent, attempt = job.attempt);
        let this = self.clone();
        self.tracker.spawn(
            async move {
                this.run(job, token, reason, slot).await;
            }
            .instrument(span),
        );
    }

    async fn run(
        &self,
        job: ClaimedJob,
        token: CancellationToken,
        reason: Arc<AtomicU8>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let started = Instant::now();
        let slot = match slot {
            Some(slot) => SlotWait::Got(slot),
            None => {
                let waited = self.wait_for_slot(&token).await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                self.turned_over.notify_waiters();
                waited
            }
        };
        let slot = match slot {
            SlotWait::Got(slot) => slot,
            SlotWait::TooLong => return self.give_back(&job, ReleaseReason::NotStarted).await,
            // Handed back by the shutdown with the others `close` returned.
            SlotWait::Stopped if reason.load(Ordering::SeqCst) == StopReason::Shutdown as u8 => {
                return self.forget(&job);
            }
            // Cancelled (written below without a call) or lease lost (nothing to write).
            SlotWait::Stopped => {
                let finishing = self.finishing.clone().acquire_owned().await;
                let stopped = Err(ToolError::permanent("cancelled", "stopped"));
                return self.finish(job, reason, stopped, started, finishing).await;
            }
        };
        {
            let mut running = self.lock();
            // `close` took it (between the slot and here): the shutdown hands it back.
            if reason.load(Ordering::SeqCst) == StopReason::Shutdown as u8 {
                drop(running);
                return self.forget(&job);
            }
            if let Some(r) = running.get_mut(&job.id)
                && r.attempt == job.attempt
            {
                r.started = true;
            }
        }
        let called = Instant::now();
        let outcome = self.attempt(&job, &token).await;
        let now = Instant::now();
        self.pace.attempt_ended(now - called, now);
        let finishing = self.finishing.clone().acquire_owned().await;
        drop(slot);
        self.turned_over.notify_waiters();
        self.finish(job, reason, outcome, started, finishing).await;
    }

    /// Waits for a slot, for as long as a prefetched job should.
    async fn wait_for_slot(&self, token: &CancellationToken) -> SlotWait {
        // One acquire for the whole wait: the job keeps its place in the slots' queue.
        let slot = self.slots.clone().acquire_owned();
        tokio::pin!(slot);
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => return SlotWait::Stopped,
                slot = &mut slot => return match slot {
                    Ok(slot) => SlotWait::Got(slot),
                    Err(_) => SlotWait::Stopped,
                },
                _ = tokio::time::sleep(GIVE_BACK_AFTER) => {
                    if !self.pace.turning_over(GIVE_BACK_AFTER, Instant::now()) {
                        return SlotWait::TooLong;
                    }
                }
            }
        }
    }

    /// Hands a job that never started here back to the queue, its attempt not counted. If that
    /// cannot be written its lease runs out and maintenance rescues it (the attempt counts).
    async fn give_back(&self, job: &ClaimedJob, why: ReleaseReason) {
        match self
            .completer
            .store()
            .release_jobs(self.instance_id, &[job.id.uuid()], why)
            .await
        {
            Ok(_) => {
                metrics::counter!("orchestrator_jobs_given_back_total", "reason" => why.as_str())
                    .increment(1);
                tracing::debug!(
                    reason = why.as_str(),
                    "claimed job handed back before it started"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hand a job back; its lease will expire")
            }
        }
        self.forget(job);
    }

    /// Records the outcome of an attempt (or of a stop before it started) and forgets the job.
    async fn finish(
        &self,
        job: ClaimedJob,
        reason: Arc<AtomicU8>,
        outcome: ToolResult,
        started: Instant,
        finishing: Result<OwnedSemaphorePermit, tokio::sync::AcquireError>,
    ) {
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
        self.forget(&job);
        drop(finishing);
    }

    fn forget(&self, job: &ClaimedJob) {
        let mut running = self.lock();
        if running
            .get(&job.id)
            .is_some_and(|r| r.attempt == job.attempt)
        {
            running.remove(&job.id);
        }
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

    /// The intents whose queued jobs run during their claim: their tool's call runs no
    /// statement and reaches nothing outside the database (`InlineTool::runs_statements`).
    pub fn at_once_intents(&self) -> Vec<(String, Mode)> {
        self.registry
            .snapshot()
            .iter()
            .filter(|i| i.tool.inline().is_some_and(|t| !t.runs_statements()))
            .map(|i| (i.name().to_owned(), i.mode))
            .collect()
    }

    /// Runs claimed jobs' calls during their claim (see [`Executor::at_once_intents`]): each
    /// takes microseconds and writes nothing itself, so the claim's transaction waits on
    /// nothing but them. A call that fails in a way another attempt could fix is left out:
    /// its job takes a lease and the usual path, retries included.
    pub async fn run_at_once(&self, jobs: Vec<AtOnceCandidate>) -> Vec<FinishedAtOnce> {
        let mut finished = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Some(intent) = self.registry.get(&job.intent, job.mode).await else {
                continue;
            };
            let Some(tool) = intent.tool.inline().filter(|t| !t.runs_statements()) else {
                continue;
            };
            let started = Instant::now();
            let mut tx = self.completer.store().begin_inline();
            let call =
                tokio::time::timeout(intent.timeout, tool.call_in(&mut tx, job.id, &job.inputs));
            let outcome = match call.await {
                Ok(Ok(mut value)) => {
                    self.make_storable(&mut value);
                    InlineOutcome::Succeeded(value)
                }
                Ok(Err(e)) if !e.retryable && !e.timed_out && e.defer.is_none() => {
                    let (code, message) = self.storable_error(&e);
                    InlineOutcome::Failed { code, message }
                }
                Ok(Err(_)) | Err(_) => continue,
            };
            // It said it would not; if it did, its statements are not the claim's.
            if tx.ran_statements() {
                tracing::warn!(intent = %job.intent, "a call said to run no statement ran one");
                continue;
            }
            metrics::histogram!("orchestrator_attempt_seconds", "intent" => job.intent.clone())
                .record(started.elapsed().as_secs_f64());
            finished.push(FinishedAtOnce {
                id: job.id,
                memory: tx.take_memory_with_job(),
                outcome,
            });
        }
        finished
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
