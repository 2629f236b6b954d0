//! Logs (text or JSON, filtered by `RUST_LOG` or config), the Prometheus recorder with every
//! metric's description, and the gauges sampled from the database.

pub mod gauges;

use std::{io::IsTerminal, sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use serde::{Deserialize, Serialize};

static LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`init_logging`] ran: errors then go through the logs, not also to stderr.
pub fn logging_started() -> bool {
    LOGGING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber; later calls (tests start many apps) are no-ops.
pub fn init_logging(config: &LogConfig) {
    LOGGING.store(true, std::sync::atomic::Ordering::Relaxed);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// The process-wide metrics recorder (installed once, shared by every app in the process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .expect("static buckets are valid");
            for (name, buckets) in [
                ("orchestrator_completion_batch_size", BATCH_BUCKETS),
                ("orchestrator_claim_batch_size", BATCH_BUCKETS),
                ("orchestrator_intake_batch_size", BATCH_BUCKETS),
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                    .expect("static buckets are valid");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            } else {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// Durations: from a millisecond to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Jobs per statement: 1 to the largest batch (512 by default, 1,024 tuned).
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every metric the server exports, with its HELP text: one list, so names, units and help
/// stay together (a test checks the exposition for HELP on every family).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "orchestrator_build_info",
        "Always 1; the labels say which build runs (version)."
    );
    metrics::gauge!("orchestrator_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_counter!(
        "orchestrator_http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "orchestrator_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (a synchronous /orchestrate includes its wait), by method, route and status."
    );
    describe_gauge!(
        "orchestrator_notifications_heard",
        "1 when this instance's LISTEN heard its own NOTIFY after (re)connecting, 0 when it did not within 10 s (wake-ups then wait for the fallback polls: behind PgBouncer in transaction mode, set database.listen_url)."
    );
    describe_counter!(
        "orchestrator_rate_limited_total",
        "Requests refused with 429 by a rate limit (limit: api_key or intent)"
    );
    describe_counter!(
        "orchestrator_auth_failures_total",
        "Requests refused for a missing, unknown, revoked or expired API key."
    );
    describe_counter!(
        "orchestrator_jobs_created_total",
        "Jobs filed (replays of an idempotency key are not), by intent."
    );
    describe_counter!(
        "orchestrator_jobs_claimed_total",
        "Jobs this instance claimed from the queue."
    );
    describe_histogram!(
        "orchestrator_claim_batch_size",
        "Jobs taken by one claim statement."
    );
    describe_gauge!(
        "orchestrator_claim_prefetch",
        "Claimed jobs this instance may hold waiting for a slot, from the measured call and claim times (workers.prefetch at most)."
    );
    describe_counter!(
        "orchestrator_jobs_given_back_total",
        "Claimed jobs handed back to the queue, their attempt not counted: a second without a slot while every slot held a long call (reason not_started), or shutdown (those waiting for a slot, and those the grace period stopped)."
    );
    describe_counter!(
        "orchestrator_jobs_finished_total",
        "Jobs that reached a final state, counted by the instance that wrote it, by intent and status."
    );
    describe_counter!(
        "orchestrator_jobs_rescued_total",
        "Jobs whose lease expired (their instance died or stalled) and that maintenance took back."
    );
    describe_counter!(
        "orchestrator_completions_total",
        "Attempt outcomes written by the batched completer."
    );
    describe_histogram!(
        "orchestrator_completion_batch_size",
        "Completions written by one statement."
    );
    describe_histogram!(
        "orchestrator_attempt_seconds",
        Unit::Seconds,
        "How long one attempt of a job ran, by intent."
    );
    describe_counter!(
        "orchestrator_callback_attempts_total",
        "Outbound callback delivery attempts, by outcome."
    );
    describe_counter!(
        "orchestrator_mcp_calls_total",
        "tools/call requests to MCP servers, by server and outcome."
    );
    describe_counter!(
        "orchestrator_mcp_restarts_total",
        "Sessions with an MCP server restarted by the supervisor, by server."
    );
    describe_gauge!(
        "orchestrator_mcp_server_up",
        "1 while the session with an MCP server is up, by server."
    );
    describe_gauge!(
        "orchestrator_jobs",
        "Jobs in a non-final state now (queued, running, awaiting_callback), across all instances."
    );
    describe_gauge!(
        "orchestrator_jobs_parked",
        "Queued jobs waiting for a place of their concurrency key (included in orchestrator_jobs{status=\"queued\"})."
    );
    describe_gauge!(
        "orchestrator_oldest_queued_job_age_seconds",
        Unit::Seconds,
        "How long the oldest due queued job that is not waiting for a concurrency place has waited (0 when none waits)."
    );
    describe_gauge!(
        "orchestrator_callback_deliveries",
        "Callback deliveries pending (to be sent or retried) and exhausted (every attempt failed)."
    );
    describe_gauge!(
        "orchestrator_flow_breaker_state",
        "A flow's circuit breaker, by intent: 0 closed, 1 half-open (probing), 2 open (failing fast)."
    );
    describe_gauge!(
        "orchestrator_db_pool_connections",
        "Database connections of this instance's pool, idle or in use."
    );
    describe_gauge!(
        "orchestrator_db_pool_max_connections",
        "The most connections this instance's pool opens (database.max_connections)."
    );
    describe_counter!(
        "orchestrator_db_pool_timeouts_total",
        "Waits for a pool connection that gave up (database.acquire_timeout): the pool was exhausted."
    );
    describe_gauge!(
        "orchestrator_history_partitions_ahead_seconds",
        "How far ahead of now the partitions of job history and of the audit trail reach (the shorter of the two); rows past it are refused."
    );
    describe_counter!(
        "orchestrator_history_partitions_dropped_total",
        "Partitions of jobs or audit_events dropped by retention (retention.jobs_days, retention.audit_days)."
    );
    describe_counter!(
        "orchestrator_replica_fallbacks_total",
        "Reads meant for the replica (database.read_url) that it failed and the primary answered."
    );
    describe_histogram!(
        "orchestrator_intake_batch_size",
        "Jobs for the queue filed by one statement and one commit (group commit at intake)."
    );
    describe_counter!(
        "orchestrator_live_events_total",
        "Job events read from the audit trail and handed to this instance's live streams (SSE)."
    );
}

/// `[log]` and `[metrics]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How often the queue, pool and breaker gauges are sampled (one query per sample, not per
    /// scrape).
    #[serde(with = "crate::duration::human")]
    pub gauge_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            gauge_interval: Duration::from_secs(15),
        }
    }
}

impl MetricsConfig {
    pub fn problems(&self) -> Vec<crate::model::ConfigProblem> {
        if self.gauge_interval.is_zero() {
            vec![crate::model::ConfigProblem::new(
                "metrics.gauge_interval_ms",
                "must be positive",
            )]
        } else {
            Vec::new()
        }
    }
}
