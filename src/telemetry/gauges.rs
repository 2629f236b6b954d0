//! Gauges sampled on an interval rather than per scrape (a scrape must not cost a query, and
//! several scrapers may poll every instance): the queue from one statement, the connection
//! pool, and the flows' circuit breakers.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{store::Store, tools::flow::Breakers};

pub struct GaugeSources {
    pub store: Store,
    pub breakers: Arc<Breakers>,
    /// Flow intent → its URL (breakers are per URL; the gauge is labelled by intent, since a
    /// URL can be a secret and /metrics is public by default).
    pub flows: BTreeMap<String, String>,
}

/// Samples every `interval` until `stop`.
pub async fn run(sources: GaugeSources, interval: Duration, stop: CancellationToken) {
    loop {
        sample(&sources).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn sample(sources: &GaugeSources) {
    match sources.store.queue_gauges().await {
        Ok(q) => {
            for (status, n) in [
                ("queued", q.queued),
                ("running", q.running),
                ("awaiting_callback", q.awaiting_callback),
            ] {
                metrics::gauge!("orchestrator_jobs", "status" => status).set(n as f64);
            }
            metrics::gauge!("orchestrator_jobs_parked").set(q.parked as f64);
            metrics::gauge!("orchestrator_oldest_queued_job_age_seconds")
                .set(q.oldest_queued_seconds);
            for (status, n) in [
                ("pending", q.deliveries_pending),
                ("exhausted", q.deliveries_exhausted),
            ] {
                metrics::gauge!("orchestrator_callback_deliveries", "status" => status)
                    .set(n as f64);
            }
        }
        // The gauges keep their last values; the failure shows in the pool and error metrics.
        Err(e) => tracing::debug!(error = %e, "could not sample the queue gauges"),
    }
    let pool = sources.store.pool();
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    metrics::gauge!("orchestrator_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("orchestrator_db_pool_connections", "state" => "in_use").set(size - idle);
    metrics::gauge!("orchestrator_db_pool_max_connections")
        .set(f64::from(pool.options().get_max_connections()));
    let states: BTreeMap<String, &'static str> = sources
        .breakers
        .views()
        .into_iter()
        .map(|v| (v.url, v.state))
        .collect();
    for (intent, url) in &sources.flows {
        let state = match states.get(url).copied() {
            Some("open") => 2.0,
            Some("half_open") => 1.0,
            _ => 0.0,
        };
        metrics::gauge!("orchestrator_flow_breaker_state", "intent" => intent.clone()).set(state);
    }
}
