//! `[workers]` and `[retention]`: how an instance runs jobs and keeps their history.

use serde::{Deserialize, Serialize};

/// `[workers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Jobs this instance runs at once (0 = intake only, no workers).
    pub concurrency: usize,
    /// The most jobs one claim takes.
    pub claim_batch: i64,
    /// Fallback poll for new work when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// A claim's lease; the heartbeat extends it while the job runs.
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How often maintenance looks for expired leases and expired idempotency keys.
    pub maintenance_interval_ms: u64,
    /// Retry backoff: base * 2^(attempt-1), capped, with ±20 % jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// The most completions written in one statement.
    pub completion_batch: usize,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            claim_batch: 64,
            poll_interval_ms: 1_000,
            lease_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            maintenance_interval_ms: 5_000,
            retry_base_ms: 1_000,
            retry_max_ms: 600_000,
            completion_batch: 256,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Drop finished jobs' inputs and results after this many days (0: keep them). Reporting
    /// columns and the audit trail stay.
    pub payload_days: u32,
}
