//! Periodic upkeep shared by all instances (SKIP LOCKED keeps them out of each other's way):
//! expired leases go back to the queue or fail, flows that never called back time out, and
//! expired idempotency keys, remembered webhook-ids, sessions, places of idle concurrency keys
//! and old schedule fire records are purged.

use std::{sync::Arc, time::Duration};

use super::{announce_finished, waiters::Waiters};
use crate::store::Store;

const PAGE: i64 = 500;
/// Bounds one tick's work so a large backlog cannot monopolise a connection.
const MAX_PAGES: usize = 20;
/// How long a schedule's fire records are kept (the audit trail keeps every fire).
const SCHEDULE_FIRES_DAYS: i32 = 30;

#[derive(Debug, Clone, Copy)]
pub struct MaintenanceSettings {
    pub every: Duration,
    /// How long inbound webhook-ids are remembered for de-duplication.
    pub remember_ingest_ids: Duration,
    /// Finished jobs lose their inputs and results after this many days (0: never).
    pub payload_days: u32,
    /// Partitions of job history and the audit trail: made ahead, dropped when expired.
    pub history: super::HistorySettings,
    /// Stored MCP sessions unused this long are forgotten (a client coming back opens a new
    /// one).
    pub mcp_session_retention: Duration,
}

pub async fn run(store: Store, waiters: Arc<Waiters>, settings: MaintenanceSettings) {
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pass(&store, &waiters, &settings).await;
    }
}

/// One round of every upkeep task (also `orchestrator maintain`, for cron-driven setups and
/// reporting refreshes).
pub async fn pass(store: &Store, waiters: &Waiters, settings: &MaintenanceSettings) {
    rescue(store, waiters).await;
    expire_callback_deadlines(store, waiters).await;
    purge_keys(store).await;
    if let Err(e) = store
        .purge_ingest_seen(settings.remember_ingest_ids.as_secs_f64())
        .await
    {
        tracing::warn!(error = %e, "purging remembered webhook-ids failed");
    }
    // Before the rollup, which reads the trail's newest ranges through them.
    match store.summarize_new_trail_ranges().await {
        Ok(Some(n)) if n > 0 => {
            tracing::debug!(ranges = n, "audit trail BRIN ranges summarized")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "summarizing the audit trail's new BRIN ranges failed")
        }
    }
    match store.roll_up_finished_jobs().await {
        Ok(Some(n)) if n > 0 => tracing::info!(jobs = n, "finished jobs rolled up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "rolling up finished jobs failed"),
    }
    if settings.payload_days > 0 {
        purge_payloads(store, settings.payload_days).await;
    }
    super::keep_history(store, &settings.history, chrono::Utc::now()).await;
    match store
        .purge_idle_mcp_sessions(settings.mcp_session_retention.as_secs_f64(), PAGE * 2)
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(sessions = n, "idle MCP sessions forgotten"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "forgetting idle MCP sessions failed"),
    }
    let a_day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    match store.purge_expired_oauth(a_day_ago, PAGE * 2).await {
        Ok(n) if n > 0 => tracing::debug!(purged = n, "expired OAuth codes and tokens purged"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging expired OAuth codes and tokens failed"),
    }
    match store.purge_ui_sessions(PAGE * 2).await {
        Ok(n) if n > 0 => tracing::debug!(purged = n, "ended dashboard sessions purged"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging ended dashboard sessions failed"),
    }
    match store.purge_idle_concurrency_keys().await {
        Ok(n) if n > 0 => tracing::debug!(places = n, "places of idle concurrency keys purged"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging idle concurrency keys failed"),
    }
    match store
        .purge_old_schedule_fires(SCHEDULE_FIRES_DAYS, PAGE * 2)
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(purged = n, "old schedule fire records purged"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging old schedule fire records failed"),
    }
}

/// Payload retention: the set-aside jobs now due, then the walk onwards from where it stopped
/// (a page at a time, so each pass reads only jobs it has not walked yet).
async fn purge_payloads(store: &Store, days: u32) {
    let cut = chrono::Utc::now() - chrono::Duration::days(days.into());
    let mut purged = match store.purge_deferred_payloads(cut).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "purging job payloads failed");
            return;
        }
    };
    for _ in 0..MAX_PAGES {
        match store.purge_payloads(cut, PAGE * 2).await {
            Ok(step) => {
                purged += step.purged;
                if step.walked < PAGE * 2 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging job payloads failed");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(jobs = purged, days, "job payloads purged");
    }
}

async fn expire_callback_deadlines(store: &Store, waiters: &Waiters) {
    for _ in 0..MAX_PAGES {
        match store.expire_callback_deadlines(PAGE).await {
            Ok(expired) => {
                let n = expired.len() as i64;
                if n > 0 {
                    tracing::warn!(jobs = n, "flows did not call back before their deadline");
                }
                expired
                    .into_iter()
                    .for_each(|j| announce_finished(waiters, j));
                if n < PAGE {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiring callback deadlines failed");
                return;
            }
        }
    }
}

async fn rescue(store: &Store, waiters: &Waiters) {
    for _ in 0..MAX_PAGES {
        match store.rescue_expired(PAGE).await {
            Ok((count, failed)) => {
                if count > 0 {
                    tracing::warn!(
                        rescued = count,
                        failed = failed.len(),
                        "expired leases rescued"
                    );
                    metrics::counter!("orchestrator_jobs_rescued_total").increment(count as u64);
                }
                failed
                    .into_iter()
                    .for_each(|j| announce_finished(waiters, j));
                if (count as i64) < PAGE {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease rescue failed");
                return;
            }
        }
    }
}

async fn purge_keys(store: &Store) {
    for _ in 0..MAX_PAGES {
        match store.purge_expired_keys(PAGE * 2).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(purged = n, "expired idempotency keys purged");
                }
                if (n as i64) < PAGE * 2 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency key purge failed");
                return;
            }
        }
    }
}
