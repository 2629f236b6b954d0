//! Writes attempt completions in batches: whatever finished while the previous batch was being
//! written goes out in the next statement (group commit). Under light load a batch is a single
//! completion, so nobody waits for a timer.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{announce_finished, backoff::jitter, waiters::Waiters};
use crate::store::{Completion, CompletionStatus, HeldConnection, Store};

type Item = (Completion, oneshot::Sender<bool>);

#[derive(Clone, Debug)]
pub struct Completer {
    tx: mpsc::Sender<Item>,
    /// Attempts also record their progress (the job's history) while they run.
    store: Store,
}

impl Completer {
    /// Starts the writer task; it ends once every `Completer` handle is dropped and the queue
    /// is drained.
    pub fn start(
        store: Store,
        owner: Uuid,
        max_batch: usize,
        waiters: Arc<Waiters>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(store.clone(), owner, max_batch, rx, waiters));
        (Self { tx, store }, task)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records the end of an attempt. Returns whether it still held the lease (false: the job
    /// was rescued or cancelled meanwhile and this result was discarded).
    pub async fn complete(&self, c: Completion) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send((c, ack)).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

async fn run(
    store: Store,
    owner: Uuid,
    max_batch: usize,
    mut rx: mpsc::Receiver<Item>,
    waiters: Arc<Waiters>,
) {
    let mut batch: Vec<Item> = Vec::with_capacity(max_batch);
    // Kept while batches follow one another (see `store::HeldConnection`).
    let mut writer = store.held_connection();
    loop {
        if rx.is_empty() {
            // Idle: the connection goes back to the pool rather than waiting here with us.
            writer.release();
        }
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        let applied = write(&store, &mut writer, owner, &completions, &waiters).await;
        for (c, ack) in batch.drain(..) {
            let _ = ack.send(applied.contains(&c.job_id.uuid()));
        }
    }
}

/// Writes a batch, retrying while the database is unreachable. A batch the database refuses
/// for another reason is split so that one unstorable result cannot block the others; a single
/// completion refused that way fails its job with `result_not_storable`.
async fn write(
    store: &Store,
    writer: &mut HeldConnection,
    owner: Uuid,
    batch: &[Completion],
    waiters: &Arc<Waiters>,
) -> Vec<Uuid> {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.complete_jobs_on(writer, owner, batch).await {
            Ok(done) => {
                metrics::counter!("orchestrator_completions_total").increment(batch.len() as u64);
                metrics::histogram!("orchestrator_completion_batch_size")
                    .record(batch.len() as f64);
                let applied = done.applied.iter().map(|id| id.uuid()).collect();
                for job in done.finished {
                    announce_finished(waiters, job);
                }
                return applied;
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, jobs = batch.len(), "completion write failed; retrying");
                tokio::time::sleep(jitter(delay, 0.2)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, jobs = batch.len(), "completion batch refused; writing one by one");
                let mut applied = Vec::new();
                for one in batch {
                    applied.extend(
                        Box::pin(write(
                            store,
                            writer,
                            owner,
                            std::slice::from_ref(one),
                            waiters,
                        ))
                        .await,
                    );
                }
                return applied;
            }
            Err(e) => {
                let c = &batch[0];
                tracing::error!(error = %e, job_id = %c.job_id, "completion refused by the database");
                if c.status == CompletionStatus::Failed
                    && c.error_code.as_deref() == Some("result_not_storable")
                {
                    return Vec::new();
                }
                let fallback = Completion {
                    status: CompletionStatus::Failed,
                    result: None,
                    error_code: Some("result_not_storable".into()),
                    error_message: Some("the result could not be stored".into()),
                    retry_at: None,
                    callback_deadline: None,
                    ..c.clone()
                };
                return Box::pin(write(
                    store,
                    writer,
                    owner,
                    std::slice::from_ref(&fallback),
                    waiters,
                ))
                .await;
            }
        }
    }
}
