//! What notifications do in this instance: new work wakes the claim loop, finished jobs wake
//! their waiters, cancel requests stop running attempts, key changes clear the authentication
//! caches, due deliveries wake the sender. Hearing them is `store::notify`'s; after every
//! (re)connect everything they could have said is looked at again.

use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

use super::{Executor, StopReason, waiters::Waiters};
use crate::{
    ids::JobId,
    store::{Channel, ListenEvent, Store},
};

/// Whom a notification wakes.
pub struct Wakeups {
    pub jobs: Arc<Notify>,
    pub deliveries: Arc<Notify>,
    /// API keys were created or revoked: authentication caches must go.
    pub keys: Arc<Notify>,
    /// Audit events were written: live event streams read them.
    pub events: Arc<Notify>,
}

pub async fn run(store: Store, executor: Arc<Executor>, waiters: Arc<Waiters>, wake: Wakeups) {
    let me = executor.instance_id();
    let mut events = store.listen();
    while let Some(event) = events.recv().await {
        let n = match event {
            ListenEvent::Resync => {
                resync(&store, &waiters, &wake).await;
                continue;
            }
            // This instance made the change and already acted on it.
            ListenEvent::Notified(n) if n.origin == Some(me) && n.channel != Channel::Events => {
                continue;
            }
            ListenEvent::Notified(n) => n,
        };
        match n.channel {
            Channel::NewWork => wake.jobs.notify_one(),
            Channel::Deliveries => wake.deliveries.notify_one(),
            Channel::Keys => wake.keys.notify_one(),
            Channel::Events => wake.events.notify_one(),
            Channel::JobDone => {
                let waited: Vec<Uuid> = n
                    .jobs
                    .into_iter()
                    .filter(|id| waiters.is_waiting(*id))
                    .map(JobId::uuid)
                    .collect();
                deliver(&store, &waiters, &waited).await;
            }
            Channel::Cancel => {
                for id in n.jobs {
                    executor.stop(id, StopReason::Cancelled);
                }
            }
        }
    }
}

async fn resync(store: &Store, waiters: &Waiters, wake: &Wakeups) {
    wake.jobs.notify_one();
    wake.deliveries.notify_one();
    wake.keys.notify_one();
    wake.events.notify_one();
    let waited: Vec<Uuid> = waiters
        .waiting_jobs()
        .into_iter()
        .map(JobId::uuid)
        .collect();
    deliver(store, waiters, &waited).await;
}

async fn deliver(store: &Store, waiters: &Waiters, ids: &[Uuid]) {
    if ids.is_empty() {
        return;
    }
    match store.finished_jobs(ids).await {
        // Finished by another instance (or by this one, which counted it already): wake only.
        Ok(jobs) => jobs.into_iter().for_each(|j| waiters.finish(Arc::new(j))),
        Err(e) => tracing::warn!(error = %e, "could not load finished jobs for waiters"),
    }
}
