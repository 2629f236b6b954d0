//! Files jobs in batches: whatever concurrent requests filed while the previous batch was being
//! written goes in the next statement, so a burst of `async: true` requests, or of waited-for
//! calls that run no statement of their own (`system.echo`, `memory.write`), costs one commit
//! (one WAL flush) per batch instead of one per request. Under light load a batch is a single
//! job, so nobody waits for a timer. Each request is answered only after its batch committed.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{DeferredNotify, HeldConnection, IntakeFiled, IntakeJob, Store, StoreError};

/// What filing one job came to: how it was written, or `None` when its idempotency key already
/// answers for another live job.
pub type Filed = Result<Option<IntakeFiled>, StoreError>;

type Item = (IntakeJob, oneshot::Sender<Filed>);

#[derive(Clone, Debug)]
pub struct Filer {
    tx: mpsc::Sender<Item>,
}

impl Filer {
    /// Starts the writer task; it ends once every `Filer` handle is dropped. After each
    /// batch, `events_written` sends the live streams' NOTIFY the batch deferred.
    pub fn start(store: Store, max_batch: usize, events_written: DeferredNotify) -> Self {
        let (tx, rx) = mpsc::channel(max_batch * 4);
        tokio::spawn(run(store, max_batch, events_written, rx));
        Self { tx }
    }

    pub async fn file(&self, job: IntakeJob) -> Filed {
        let (ack, done) = oneshot::channel();
        if self.tx.send((job, ack)).await.is_err() {
            return Err(StoreError::closed());
        }
        done.await.unwrap_or_else(|_| Err(StoreError::closed()))
    }
}

/// Batches written at once. One statement at a time would make every request wait behind a
/// batch that stalls — an insert that has to merge the full-text index's pending list into the
/// index takes tens of milliseconds (measured: p99 of `memory.write` at 64 connections 45–68 ms
/// with one writer); with a second, the next batch commits meanwhile. Two batches meeting on a
/// key wait on each other in key order, as two instances' do.
const WRITERS: usize = 2;

async fn run(
    store: Store,
    max_batch: usize,
    events_written: DeferredNotify,
    mut rx: mpsc::Receiver<Item>,
) {
    // Each writer keeps its connection while batches follow one another (see
    // `store::HeldConnection`); writers come back here through `done` after each batch.
    let mut free: Vec<HeldConnection> = (0..WRITERS).map(|_| store.held_connection()).collect();
    let (done_tx, mut done) = mpsc::unbounded_channel::<HeldConnection>();
    let mut waiting: Vec<Item> = Vec::with_capacity(max_batch);
    loop {
        while let Ok(writer) = done.try_recv() {
            free.push(writer);
        }
        if free.is_empty() {
            // While every writer is busy, requests gather in the channel for the next batch.
            // (`done` cannot close: this loop holds a sender.)
            free.extend(done.recv().await);
            continue;
        }
        if waiting.is_empty() {
            if rx.is_empty() {
                // Idle: no writer keeps a connection it has no use for.
                free.iter_mut().for_each(HeldConnection::release);
                tokio::select! {
                    n = rx.recv_many(&mut waiting, max_batch) => if n == 0 { return },
                    writer = done.recv() => {
                        free.extend(writer);
                        continue;
                    }
                }
            } else if rx.recv_many(&mut waiting, max_batch).await == 0 {
                return;
            }
        }
        // Whatever else arrived meanwhile joins, up to the batch size.
        let room = max_batch.saturating_sub(waiting.len());
        if room > 0 {
            while let Ok(item) = rx.try_recv() {
                waiting.push(item);
                if waiting.len() >= max_batch {
                    break;
                }
            }
        }
        let (batch, later) = split_on_keys(std::mem::take(&mut waiting));
        waiting = later;
        // A writer that still holds a connection goes first.
        let pick = free.iter().position(HeldConnection::holds).unwrap_or(0);
        let mut writer = free.swap_remove(pick);
        let (store, events_written, done_tx) =
            (store.clone(), events_written.clone(), done_tx.clone());
        tokio::spawn(async move {
            write(&store, &mut writer, batch).await;
            events_written.poke();
            // Fails only once the loop has ended; the connection then goes back to the pool.
            let _ = done_tx.send(writer);
        });
    }
}

/// One statement cannot claim the same idempotency key twice: a second request with a key
/// already in the batch waits for the next one (where it meets the committed first and is
/// answered as its replay). The batch is ordered by key, so two batches (two instances) that
/// share keys wait on each other in the same order and cannot deadlock.
fn split_on_keys(items: Vec<Item>) -> (Vec<Item>, Vec<Item>) {
    let mut seen = HashSet::new();
    let (mut batch, mut later) = (Vec::with_capacity(items.len()), Vec::new());
    for item in items {
        match &item.0.key {
            Some(k) if !seen.insert((k.scope.clone(), k.key.clone())) => later.push(item),
            _ => batch.push(item),
        }
    }
    batch.sort_by(|a, b| {
        fn key(i: &Item) -> Option<(&str, &str)> {
            i.0.key.as_ref().map(|k| (k.scope.as_str(), k.key.as_str()))
        }
        key(a).cmp(&key(b))
    });
    (batch, later)
}

/// Writes a batch and answers each request. A batch the database refuses is written one job
/// at a time, so that one job it cannot store fails alone.
async fn write(store: &Store, writer: &mut HeldConnection, batch: Vec<Item>) {
    let (jobs, acks): (Vec<IntakeJob>, Vec<_>) = batch.into_iter().unzip();
    match store.insert_intake_jobs_on(writer, &jobs).await {
        Ok(filed) => {
            metrics::histogram!("orchestrator_intake_batch_size").record(jobs.len() as f64);
            let filed: HashMap<Uuid, IntakeFiled> = filed.into_iter().collect();
            for (job, ack) in jobs.iter().zip(acks) {
                let _ = ack.send(Ok(filed.get(&job.id).copied()));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(ack) = acks.into_iter().next() {
                let _ = ack.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "intake batch refused; filing one by one");
            for (job, ack) in jobs.iter().zip(acks) {
                let one = store
                    .insert_intake_jobs_on(writer, std::slice::from_ref(job))
                    .await;
                let _ = ack.send(one.map(|filed| filed.first().map(|(_, s)| *s)));
            }
        }
    }
}
