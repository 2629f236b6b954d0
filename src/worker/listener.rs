//! LISTEN/NOTIFY: hears other instances' new work, finished jobs and cancel requests.
//! Notifications are hints: after a reconnect everything they could have said is re-checked.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Executor, StopReason, backoff::jitter, waiters::Waiters};
use crate::{ids::JobId, store::Store};

pub const NEW_WORK: &str = "orch_jobs";
pub const JOB_DONE: &str = "orch_job_done";
pub const CANCEL: &str = "orch_cancel";
pub const DELIVERIES: &str = "orch_deliveries";
pub const KEYS: &str = "orch_keys";

/// Whom a notification wakes.
pub struct Wakeups {
    pub jobs: Arc<Notify>,
    pub deliveries: Arc<Notify>,
    /// API keys were created or revoked: authentication caches must go.
    pub keys: Arc<Notify>,
}

pub async fn run(store: Store, executor: Arc<Executor>, waiters: Arc<Waiters>, wake: Wakeups) {
    let mut delay = Duration::from_millis(200);
    loop {
        match listen(&store, &executor, &waiters, &wake).await {
            Ok(()) => delay = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, "notification listener failed; reconnecting");
                tokio::time::sleep(jitter(delay, 0.2)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn listen(
    store: &Store,
    executor: &Executor,
    waiters: &Waiters,
    wake: &Wakeups,
) -> Result<(), sqlx::Error> {
    let me = executor.instance_id().simple().to_string();
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all([NEW_WORK, JOB_DONE, CANCEL, DELIVERIES, KEYS])
        .await?;
    // Anything said while we were not listening: look again.
    resync(store, waiters, wake).await;
    loop {
        let Some(n) = listener.try_recv().await? else {
            // The connection dropped; the listener reconnects on the next call.
            resync(store, waiters, wake).await;
            continue;
        };
        let (origin, ids) = split_origin(n.payload());
        if origin == me {
            // This instance made the change and already acted on it.
            continue;
        }
        match n.channel() {
            NEW_WORK => wake.jobs.notify_one(),
            DELIVERIES => wake.deliveries.notify_one(),
            KEYS => wake.keys.notify_one(),
            JOB_DONE => {
                let waited: Vec<Uuid> = parse_ids(ids)
                    .filter(|id| waiters.is_waiting(*id))
                    .map(JobId::uuid)
                    .collect();
                deliver(store, waiters, &waited).await;
            }
            CANCEL => {
                for id in parse_ids(ids) {
                    executor.stop(id, StopReason::Cancelled);
                }
            }
            _ => {}
        }
    }
}

/// Payloads are `<origin instance>;<ids>`; the origin may be empty.
fn split_origin(payload: &str) -> (&str, &str) {
    payload.split_once(';').unwrap_or(("", payload))
}

fn parse_ids(payload: &str) -> impl Iterator<Item = JobId> + '_ {
    payload
        .split(',')
        .filter_map(|hex| Uuid::try_parse(hex.trim()).ok().map(JobId::from))
}

async fn resync(store: &Store, waiters: &Waiters, wake: &Wakeups) {
    wake.jobs.notify_one();
    wake.deliveries.notify_one();
    wake.keys.notify_one();
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
        Ok(jobs) => jobs
            .into_iter()
            .for_each(|j| waiters.finish(std::sync::Arc::new(j))),
        Err(e) => tracing::warn!(error = %e, "could not load finished jobs for waiters"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_separated_simple_uuids_and_skips_garbage() {
        let a = JobId::new();
        let b = JobId::new();
        let payload = format!("{},nonsense,{}", a.uuid().simple(), b.uuid().simple());
        assert_eq!(parse_ids(&payload).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(parse_ids("").count(), 0);
    }

    #[test]
    fn payloads_name_their_origin() {
        assert_eq!(split_origin("abc;1,2"), ("abc", "1,2"));
        assert_eq!(split_origin(";1"), ("", "1"));
        assert_eq!(split_origin(""), ("", ""));
    }
}
