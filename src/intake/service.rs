//! The intake service: turns a validated request into a durable job (and its idempotency key) in one
//! statement, runs it at once when the caller waits and a slot is free, and lets callers wait
//! for the outcome without polling.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{canonical::write_canonical, filer::Filer};
use crate::{
    catalog::{Effect, InlineTool, Intent},
    ids::JobId,
    model::{FinishedJob, Mode, Principal, job_error},
    store::{
        CancelOutcome, Channel, ClaimedJob, DeferredNotify, InlineOutcome, IntakeFiled, IntakeJob,
        KeyClaim, NewJob, OwnedKeyClaim, RanInline, RetryOutcome, Store, StoreError, StoredKey,
    },
    worker::{StopReason, Waiter, Workers},
};

/// A request that passed validation.
#[derive(Debug)]
pub struct Submission {
    pub intent: Arc<Intent>,
    pub requested_mode: Mode,
    pub inputs: Value,
    pub callback_url: Option<String>,
    /// Sent by the client (header or body).
    pub idempotency_key: Option<String>,
    /// Lowers the intent's default.
    pub max_attempts: Option<i32>,
    /// Who asks (API key, client address, request id).
    pub principal: Principal,
    /// The caller will wait for the result: run it here at once if a slot is free.
    pub wait: bool,
    /// Not before this time (`run_at`, `delay_ms`): filed as `scheduled` while in the future.
    pub run_at: Option<DateTime<Utc>>,
    /// How the client said when (`run_at=…` or `delay_ms=…`, as sent): part of what the
    /// request is, so a retried request with a delay is the same request.
    pub when: Option<String>,
    /// The schedule filing it.
    pub schedule_id: Option<Uuid>,
}

#[derive(Debug)]
pub enum Submitted {
    Created {
        job_id: JobId,
        waiter: Option<Waiter>,
    },
    /// The idempotency key already answers for this job.
    Replay {
        job_id: JobId,
        waiter: Option<Waiter>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    #[error("the idempotency key changed hands while this request was filed; retry")]
    KeyBusy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What running a request in its one transaction came to.
enum InlineRun {
    /// Committed, final.
    Filed(FinishedJob),
    /// The idempotency key answers for another job: nothing was written.
    KeyTaken,
    /// Not run (nothing was written): take the claim/lease path.
    NotRun,
}

pub enum WaitOutcome {
    Finished(Arc<FinishedJob>),
    Pending,
}

/// Most jobs one intake statement files (the completer's batches are as large).
const MAX_INTAKE_BATCH: usize = 256;

/// The intake service and the jobs' control surface, shared by every request.
pub struct Intake {
    store: Store,
    /// Jobs for the queue, a batch per commit.
    filer: Filer,
    /// The live streams' NOTIFY for the intake's commits (which defer it).
    events_written: DeferredNotify,
    workers: Workers,
    key_ttl: Duration,
    /// Tells this instance's scheduler a job for later was filed (it may be due sooner than
    /// what the scheduler waits for).
    scheduled: Arc<Notify>,
}

impl Intake {
    pub fn new(store: Store, workers: Workers, key_ttl: Duration, scheduled: Arc<Notify>) -> Self {
        let events_written = DeferredNotify::start(store.clone(), Channel::Events);
        Self {
            filer: Filer::start(store.clone(), MAX_INTAKE_BATCH, events_written.clone()),
            events_written,
            store,
            workers,
            key_ttl,
            scheduled,
        }
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub async fn submit(&self, sub: Submission) -> Result<Submitted, SubmitError> {
        let key = IdempotencyKey::for_submission(&sub);
        let scope = key_scope(&sub.principal);
        // A client's own key is mostly sent again on a retry: a plain read answers a replay
        // without the insert's row lock (which serialised replays and cost a WAL flush each).
        // Derived keys are mostly new, so they go straight to the insert.
        if let Some(key) = key.as_ref().filter(|k| !k.derived)
            && let Some(stored) = self.store.find_key(&scope, &key.key).await?
        {
            return self.replay(&sub, key, stored);
        }
        // A key that expired between our insert and our lookup is gone: insert again, once.
        for _ in 0..2 {
            if let Some(done) = self.try_insert(&sub, key.as_ref(), &scope).await? {
                return Ok(done);
            }
            let key = key.as_ref().expect("only keyed inserts conflict");
            if let Some(stored) = self.store.find_key(&scope, &key.key).await? {
                return self.replay(&sub, key, stored);
            }
        }
        Err(SubmitError::KeyBusy)
    }

    /// The job already filed under `key`, if this is the same request.
    fn replay(
        &self,
        sub: &Submission,
        key: &IdempotencyKey,
        stored: StoredKey,
    ) -> Result<Submitted, SubmitError> {
        if stored.request_hash != key.request_hash {
            return Err(SubmitError::KeyReused);
        }
        let waiter = sub
            .wait
            .then(|| self.workers.waiters.register(stored.job_id));
        Ok(Submitted::Replay {
            job_id: stored.job_id,
            waiter,
        })
    }

    async fn try_insert(
        &self,
        sub: &Submission,
        key: Option<&IdempotencyKey>,
        scope: &str,
    ) -> Result<Option<Submitted>, SubmitError> {
        let job_id = JobId::new();
        let intent = &sub.intent;
        let executor = &self.workers.executor;
        // Registered before the insert: the job may finish before we start waiting.
        let waiter = sub.wait.then(|| self.workers.waiters.register(job_id));
        // A job for later is never run here at once, nor one with a concurrency key (its
        // place is taken by the claim).
        let later = sub.run_at.is_some_and(|t| t > Utc::now());
        let concurrency = intent.concurrency_for(&sub.inputs);
        let run_now = sub.wait && !later && concurrency.is_none();
        // A waited-for call whose whole effect is SQL runs in the request's one transaction,
        // bounded by the database pool rather than by worker slots (which the claim loop holds
        // for a moment each round); a callback is a delivery to schedule, so such a job takes
        // the usual path.
        let inline = intent
            .tool
            .inline()
            .filter(|_| run_now && sub.callback_url.is_none());
        let mut permit = if run_now && inline.is_none() {
            executor.try_reserve()
        } else {
            None
        };
        let max_attempts = sub
            .max_attempts
            .map_or(intent.max_attempts, |n| n.clamp(1, intent.max_attempts));
        let attempt_timeout_ms = intent.timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let claim = key.map(|k| KeyClaim {
            scope,
            key: &k.key,
            request_hash: &k.request_hash,
            derived: k.derived,
            ttl_secs: self.key_ttl.as_secs_f64(),
        });
        let mut job = NewJob {
            id: job_id,
            intent: intent.name(),
            mode: intent.mode,
            requested_mode: sub.requested_mode,
            priority: intent.priority,
            max_attempts,
            attempt_timeout_ms,
            inputs: &sub.inputs,
            callback_url: sub.callback_url.as_deref(),
            request_id: sub.principal.request_id.as_deref(),
            start_now: permit.as_ref().map(|_| executor.instance_id()),
            lease_secs: self.workers.lease_secs(),
            principal: &sub.principal,
            run_at: sub.run_at,
            schedule_id: sub.schedule_id,
            concurrency_key: concurrency.as_ref().map(|c| c.key.as_str()),
            concurrency_limit: concurrency.as_ref().map(|c| c.limit),
        };
        if let Some(tool) = inline {
            match self
                .run_inline(tool, &job, claim.as_ref(), intent.timeout)
                .await?
            {
                InlineRun::Filed(finished) => {
                    metrics::counter!("orchestrator_jobs_created_total", "intent" => intent.name().to_owned())
                        .increment(1);
                    crate::worker::announce_finished(&self.workers.waiters, finished);
                    return Ok(Some(Submitted::Created { job_id, waiter }));
                }
                InlineRun::KeyTaken => return Ok(None),
                InlineRun::NotRun => {
                    permit = executor.try_reserve();
                    job.start_now = permit.as_ref().map(|_| executor.instance_id());
                }
            }
        }
        let filed = if job.start_now.is_none() && job.concurrency_key.is_none() {
            self.filer
                .file(intake_job(&job, claim.as_ref(), None))
                .await?
                .is_some()
        } else {
            self.store.insert_job(&job, claim.as_ref()).await?.is_some()
        };
        if !filed {
            return Ok(None);
        }
        metrics::counter!("orchestrator_jobs_created_total", "intent" => intent.name().to_owned())
            .increment(1);
        match permit {
            Some(permit) => executor.spawn(
                ClaimedJob {
                    id: job_id,
                    intent: intent.name().to_owned(),
                    mode: intent.mode,
                    inputs: sub.inputs.clone(),
                    attempt: 1,
                    max_attempts,
                    attempt_timeout_ms,
                    cancel_requested: false,
                },
                Some(permit),
            ),
            None if later => self.scheduled.notify_one(),
            None => self.workers.wake.notify_one(),
        }
        Ok(Some(Submitted::Created { job_id, waiter }))
    }

    /// Files, runs and finishes `job` in one transaction (see `store::InlineTx`). A failure
    /// another attempt could fix (the database unreachable, the time up) leaves nothing behind
    /// and `NotRun`: the claim/lease path then runs the job with its retries.
    async fn run_inline(
        &self,
        tool: &dyn InlineTool,
        job: &NewJob<'_>,
        key: Option<&KeyClaim<'_>>,
        timeout: Duration,
    ) -> Result<InlineRun, StoreError> {
        let executor = &self.workers.executor;
        let started = std::time::Instant::now();
        let mut tx = self.store.begin_inline();
        let call = tokio::time::timeout(timeout, tool.call_in(&mut tx, job.id, job.inputs)).await;
        let outcome = match call {
            Ok(Ok(mut value)) => {
                executor.make_storable(&mut value);
                InlineOutcome::Succeeded(value)
            }
            Ok(Err(e)) if !e.retryable && !e.timed_out && e.defer.is_none() => {
                // Whatever the call did is undone with its transaction; the failure is
                // recorded in a fresh one.
                drop(tx);
                tx = self.store.begin_inline();
                let (code, message) = executor.storable_error(&e);
                InlineOutcome::Failed { code, message }
            }
            Ok(Err(_)) | Err(_) => return Ok(InlineRun::NotRun),
        };
        let ran = RanInline {
            instance: executor.instance_id(),
            outcome,
            duration_ms: started.elapsed().as_millis().try_into().unwrap_or(i64::MAX),
            memory: tx.take_memory_with_job(),
        };
        let filing = intake_job(job, key, Some(ran));
        let answer = finished_job(&filing);
        let filed = if tx.ran_statements() {
            // The job goes with the call's statements, in their transaction.
            let filed = tx.file_finished(&filing).await?;
            if filed.is_some() {
                tx.commit().await?;
                self.events_written.poke();
            }
            filed
        } else {
            // The call ran no statement: its job (and what it writes with it) joins the
            // intake's next batch, one commit for every such request of the moment.
            drop(tx);
            self.filer.file(filing).await?
        };
        let Some(filed) = filed else {
            return Ok(InlineRun::KeyTaken);
        };
        let finished = answer(filed);
        metrics::histogram!("orchestrator_attempt_seconds", "intent" => job.intent.to_owned())
            .record(started.elapsed().as_secs_f64());
        Ok(InlineRun::Filed(finished))
    }

    /// Waits for the job behind `waiter`, up to `timeout` (or until shutdown).
    pub async fn wait(&self, waiter: &mut Waiter, timeout: Duration) -> WaitOutcome {
        tokio::select! {
            job = waiter.finished() => job.map_or(WaitOutcome::Pending, WaitOutcome::Finished),
            _ = tokio::time::sleep(timeout) => WaitOutcome::Pending,
            _ = self.workers.hard_stop.cancelled() => WaitOutcome::Pending,
        }
    }

    /// The job's final state if it has one.
    pub async fn finished(&self, job: JobId) -> Result<Option<Arc<FinishedJob>>, StoreError> {
        Ok(self
            .store
            .finished_jobs(&[job.uuid()])
            .await?
            .pop()
            .map(Arc::new))
    }

    pub fn register_waiter(&self, job: JobId) -> Waiter {
        self.workers.waiters.register(job)
    }

    /// Cancels a job that has not finished. A running attempt here is stopped at once; one on
    /// another instance hears about it through NOTIFY (or its next heartbeat).
    pub async fn cancel(&self, job: JobId, by: &Principal) -> Result<CancelOutcome, StoreError> {
        let (outcome, finished) = self
            .store
            .cancel_job(job, self.workers.instance_id(), by)
            .await?;
        if let Some(f) = finished {
            crate::worker::announce_finished(&self.workers.waiters, f);
        }
        if let CancelOutcome::Requested { lease_owner } = &outcome
            && *lease_owner == self.workers.instance_id()
        {
            self.workers.executor.stop(job, StopReason::Cancelled);
        }
        Ok(outcome)
    }

    /// Sends a failed, timed-out or cancelled job back to the queue; any instance's workers
    /// hear of it through NOTIFY.
    pub async fn retry(&self, job: JobId, by: &Principal) -> Result<RetryOutcome, StoreError> {
        self.store.retry_job(job, by).await
    }
}

/// `job` as the filer takes it (owned: it waits in the batch), for the queue or already run.
fn intake_job(job: &NewJob<'_>, claim: Option<&KeyClaim<'_>>, ran: Option<RanInline>) -> IntakeJob {
    IntakeJob {
        id: job.id.uuid(),
        intent: job.intent.to_owned(),
        mode: job.mode,
        requested_mode: job.requested_mode,
        priority: job.priority,
        max_attempts: job.max_attempts,
        attempt_timeout_ms: job.attempt_timeout_ms,
        inputs: job.inputs.clone(),
        callback_url: job.callback_url.map(str::to_owned),
        principal: job.principal.clone(),
        run_at: job.run_at,
        schedule_id: job.schedule_id,
        key: claim.map(|k| OwnedKeyClaim {
            scope: k.scope.to_owned(),
            key: k.key.to_owned(),
            request_hash: k.request_hash.to_vec(),
            derived: k.derived,
            ttl_secs: k.ttl_secs,
        }),
        ran,
    }
}

/// The answer for a job filed already run, completed by what its batch wrote.
fn finished_job(job: &IntakeJob) -> impl FnOnce(IntakeFiled) -> FinishedJob + use<> {
    let (result, error) = match &job.ran {
        Some(ran) => {
            let (_, result, code, message) = ran.outcome.columns();
            let error = job_error(code.map(str::to_owned), message.map(str::to_owned));
            (result.cloned(), error)
        }
        None => (None, None),
    };
    let (id, intent, mode) = (JobId::from(job.id), job.intent.clone(), job.mode);
    let callback_url = job.callback_url.clone();
    let duration_ms = job.ran.as_ref().map(|r| r.duration_ms);
    move |filed| FinishedJob {
        id,
        intent,
        mode,
        status: filed.status,
        result,
        error,
        callback_url,
        duration_ms,
        finished_at: filed.finished_at,
    }
}

/// Idempotency keys are per API key: two clients may use the same key text.
fn key_scope(principal: &Principal) -> String {
    principal
        .api_key_id
        .map(|id| id.simple().to_string())
        .unwrap_or_default()
}

/// The key a job is filed under, and the hash of what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
    pub derived: bool,
}

impl IdempotencyKey {
    /// A client key covers the whole request; without one, write intents get a key derived
    /// from intent + inputs (so a retried write is answered, not repeated) and read intents
    /// get none.
    pub fn for_submission(sub: &Submission) -> Option<Self> {
        match &sub.idempotency_key {
            Some(key) => {
                let mut h = Sha256::new();
                h.update(b"request\0");
                write_canonical(&mut h, &Value::String(sub.intent.name().to_owned()));
                write_canonical(&mut h, &sub.inputs);
                h.update(sub.requested_mode.as_str().as_bytes());
                h.update(b"\0");
                h.update(sub.callback_url.as_deref().unwrap_or("").as_bytes());
                if let Some(when) = &sub.when {
                    h.update(b"\0when\0");
                    h.update(when.as_bytes());
                }
                Some(Self {
                    key: key.clone(),
                    request_hash: h.finalize().to_vec(),
                    derived: false,
                })
            }
            None if sub.intent.effect_of(&sub.inputs) == Effect::Write => {
                let mut h = Sha256::new();
                h.update(b"derived\0");
                write_canonical(&mut h, &Value::String(sub.intent.name().to_owned()));
                write_canonical(&mut h, &sub.inputs);
                if let Some(when) = &sub.when {
                    h.update(b"\0when\0");
                    h.update(when.as_bytes());
                }
                let digest = h.finalize().to_vec();
                Some(Self {
                    key: format!("derived:{}", hex::encode(&digest)),
                    request_hash: digest,
                    derived: true,
                })
            }
            None => None,
        }
    }
}
