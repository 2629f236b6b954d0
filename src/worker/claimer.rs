//! The claim loop: takes due jobs for this instance's slots and, inside the claim's own
//! transaction, runs and finishes those whose call needs neither a slot nor a lease (a tool
//! whose call runs no statement and reaches nothing outside the database: `system.echo`,
//! `memory.write`). Such a job costs one update instead of a lease and a completion; if the
//! claim does not commit, it stays queued with nothing of its run, and the next claim runs it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Executor, announce_finished, backoff, waiters::Waiters};
use crate::{
    model::{FinishedJob, Mode},
    store::{Claim, Claiming, FinishedAtOnce, Store, StoreError},
};

/// Claims that finish jobs at once in flight together, each its own transaction: the
/// statements finishing 512 jobs keep one backend busy for tens of milliseconds, and with one
/// claim at a time the drain would run on one PostgreSQL core (measured: 15-17k jobs/s with one,
/// against 23-25k for the lease path, whose claims and batched completions overlap).
const AT_ONCE_IN_FLIGHT: usize = 2;

pub(super) struct ClaimLoop {
    pub store: Store,
    pub executor: Arc<Executor>,
    pub waiters: Arc<Waiters>,
    pub wake: Arc<Notify>,
    pub stop: CancellationToken,
    /// The most jobs one claim takes (`workers.claim_batch`).
    pub batch: usize,
    pub lease_secs: f64,
    pub poll: Duration,
}

/// What the claims finishing jobs at once share with the loop.
#[derive(Default)]
struct AtOnceState {
    /// Jobs the last claim finished at once. They took no slot, so the next claim asks for as
    /// many more than the room for leased jobs: a queue of such jobs drains in claims of
    /// `workers.claim_batch`, not of the free slots.
    finished_last: AtomicUsize,
    /// Writing the last claim's finished jobs failed: the next claim leases everything, so a
    /// statement that keeps failing for one job cannot hold the queue (the lease path records
    /// each job's failure on its own).
    failed: AtomicBool,
}

pub(super) async fn run(l: ClaimLoop) {
    let in_flight = Arc::new(Semaphore::new(AT_ONCE_IN_FLIGHT));
    let state = Arc::new(AtOnceState::default());
    let mut error_delay = Duration::from_millis(100);
    loop {
        let room = tokio::select! {
            r = l.executor.claim_room(l.batch) => r,
            _ = l.stop.cancelled() => None,
        };
        let Some(room) = room else { break };
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = l.stop.cancelled() => break,
        };
        let asked = (room + state.finished_last.load(Ordering::SeqCst)).min(l.batch);
        let at_once = if state.failed.swap(false, Ordering::SeqCst) {
            Vec::new()
        } else {
            l.executor.at_once_intents()
        };
        let at_once: Vec<(&str, Mode)> = at_once.iter().map(|(i, m)| (i.as_str(), *m)).collect();
        let sent = Instant::now();
        let (claiming, candidates) = match l.store.lock_due_jobs(asked as i64, &at_once).await {
            Ok(locked) => locked,
            Err(e) => {
                drop(permit);
                if !wait_after_error(&l, &e, &mut error_delay).await {
                    break;
                }
                continue;
            }
        };
        error_delay = Duration::from_millis(100);
        if !candidates.is_empty() {
            // The calls take microseconds; the statements after them go on in a task of their
            // own while the next claim is made. That claim does not see the jobs this one will
            // lease yet, so up to AT_ONCE_IN_FLIGHT rooms' worth may arrive at once: they wait
            // here for a slot as prefetched jobs do (and go back if none frees).
            let ran = l.executor.run_at_once(candidates).await;
            state.finished_last.store(ran.len(), Ordering::SeqCst);
            tokio::spawn(finish(
                Finishing {
                    executor: l.executor.clone(),
                    waiters: l.waiters.clone(),
                    state: state.clone(),
                    lease_secs: l.lease_secs,
                    room,
                    sent,
                    _permit: permit,
                },
                claiming,
                ran,
            ));
            continue;
        }
        state.finished_last.store(0, Ordering::SeqCst);
        let leased = claiming
            .lease(l.executor.instance_id(), l.lease_secs, room)
            .await;
        drop(permit);
        match leased {
            Ok(claim) => {
                l.executor.claimed(sent.elapsed());
                let (claimed, parked) = (claim.jobs.len(), claim.parked);
                took(&l.executor, &l.waiters, claim, Vec::new());
                // SKIP LOCKED may hand out fewer rows than exist: only an empty claim means
                // the queue is (for now) empty; one that parked jobs waiting for a place has
                // moved them out of the way of the jobs behind them.
                if claimed > 0 || parked > 0 {
                    continue;
                }
                tokio::select! {
                    _ = l.wake.notified() => {}
                    _ = tokio::time::sleep(l.poll) => {}
                    _ = l.stop.cancelled() => break,
                }
            }
            Err(e) => {
                if !wait_after_error(&l, &e, &mut error_delay).await {
                    break;
                }
            }
        }
    }
    // Claims still being written hand their jobs over before the loop says it stopped.
    let _ = in_flight.acquire_many(AT_ONCE_IN_FLIGHT as u32).await;
    tracing::info!("claim loop stopped");
}

/// Backs off after a failed claim; false when the loop is to stop.
async fn wait_after_error(l: &ClaimLoop, e: &StoreError, delay: &mut Duration) -> bool {
    tracing::warn!(error = %e, "claim failed");
    let stopped = tokio::select! {
        _ = tokio::time::sleep(backoff::jitter(*delay, 0.2)) => false,
        _ = l.stop.cancelled() => true,
    };
    *delay = (*delay * 2).min(Duration::from_secs(5));
    !stopped
}

/// What a claim that finished jobs at once needs to end in its own task.
struct Finishing {
    executor: Arc<Executor>,
    waiters: Arc<Waiters>,
    state: Arc<AtOnceState>,
    lease_secs: f64,
    /// The most jobs to lease (the room for leased jobs when the claim was made).
    room: usize,
    sent: Instant,
    /// Held until the claim's transaction ends.
    _permit: OwnedSemaphorePermit,
}

/// Writes the jobs run during the claim final, leases the rest (at most the room there was)
/// and commits; locked jobs left over stay queued for the next claim.
async fn finish(f: Finishing, mut claiming: Claiming, ran: Vec<FinishedAtOnce>) {
    let owner = f.executor.instance_id();
    let written = async {
        let finished = if ran.is_empty() {
            Vec::new()
        } else {
            claiming.finish_at_once(owner, &ran).await?
        };
        let claim = claiming.lease(owner, f.lease_secs, f.room).await?;
        Ok::<_, StoreError>((claim, finished))
    }
    .await;
    match written {
        Ok((claim, finished)) => {
            f.executor.claimed(f.sent.elapsed());
            took(&f.executor, &f.waiters, claim, finished);
        }
        Err(e) => {
            // Rolled back: the jobs are queued again, nothing of their run exists.
            tracing::warn!(error = %e, jobs = ran.len(), "a claim finishing jobs at once failed");
            f.state.finished_last.store(0, Ordering::SeqCst);
            f.state.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// Hands a committed claim's jobs over: the leased ones to the executor (each takes its slot
/// as it starts: the free ones at once, a prefetched job when a call ends), the finished ones
/// to their waiters.
fn took(executor: &Arc<Executor>, waiters: &Waiters, claim: Claim, finished: Vec<FinishedJob>) {
    let claimed = claim.jobs.len() + finished.len();
    if claimed > 0 {
        metrics::counter!("orchestrator_jobs_claimed_total").increment(claimed as u64);
        metrics::histogram!("orchestrator_claim_batch_size").record(claimed as f64);
    }
    for job in finished {
        announce_finished(waiters, job);
    }
    for job in claim.jobs {
        executor.spawn(job, None);
    }
}
