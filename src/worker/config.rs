//! `[workers]` and `[retention]`: how an instance runs jobs and keeps their history.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ConfigProblem;

/// `[workers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Jobs this instance runs at once (0 = intake only, no workers). A job whose tool has
    /// returned no longer counts while its outcome is written (as many again may be).
    pub concurrency: usize,
    /// The most jobs one claim takes.
    pub claim_batch: i64,
    /// Claimed jobs that may wait here for a slot, at most: when tools end faster than a claim
    /// round trip, the next claim brings what the slots will finish meanwhile (measured; none
    /// for slow tools). 0: claim only what the free slots start at once.
    pub prefetch: usize,
    /// Fallback poll for new work when no wake-up arrives.
    #[serde(with = "crate::duration::human")]
    pub poll_interval: Duration,
    /// A claim's lease; the heartbeat extends it while the job runs.
    #[serde(with = "crate::duration::human")]
    pub lease: Duration,
    #[serde(with = "crate::duration::human")]
    pub heartbeat_interval: Duration,
    /// How often maintenance looks for expired leases and expired idempotency keys.
    #[serde(with = "crate::duration::human")]
    pub maintenance_interval: Duration,
    /// Retry backoff: base * 2^(attempt-1), capped, with ±20 % jitter.
    #[serde(with = "crate::duration::human")]
    pub retry_base: Duration,
    #[serde(with = "crate::duration::human")]
    pub retry_max: Duration,
    /// The most completions written in one statement.
    pub completion_batch: usize,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            claim_batch: 512,
            prefetch: 960,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            completion_batch: 512,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Drop finished jobs' inputs and results after this many days (0: keep them). Reporting
    /// columns and the audit trail stay.
    pub payload_days: u32,
    /// Drop whole partitions of job history once every job in them was created and finished
    /// this many days ago (0: keep all). The hourly rollups keep the reports.
    pub jobs_days: u32,
    /// Drop whole partitions of the audit trail this many days old, once they are folded into
    /// the rollups (0: keep all). Each drop is itself recorded in the trail.
    pub audit_days: u32,
    /// How many days of history one partition holds: history leaves a partition at a time,
    /// so rows stay up to this much longer than their retention. Every statement on `jobs`
    /// that cannot pick its partition by id plans and locks all of them: a year of 7-day
    /// partitions (54) cost the drain about 20 %, of 30-day ones (14) nothing measurable.
    pub partition_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            payload_days: 0,
            jobs_days: 0,
            audit_days: 0,
            partition_days: 30,
        }
    }
}

/// The longest partition: a year.
const MAX_PARTITION_DAYS: u32 = 366;
/// The longest retention that is not "keep everything": a century.
const MAX_RETENTION_DAYS: u32 = 36_525;

impl RetentionConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !(1..=MAX_PARTITION_DAYS).contains(&self.partition_days) {
            out.push(ConfigProblem::new(
                "retention.partition_days",
                format!("must be between 1 and {MAX_PARTITION_DAYS}"),
            ));
        }
        // Days become PostgreSQL intervals of int4 days: bounded so that a typo is a clear
        // error at start rather than an overflow.
        for (field, days) in [
            ("retention.payload_days", self.payload_days),
            ("retention.jobs_days", self.jobs_days),
            ("retention.audit_days", self.audit_days),
        ] {
            if days > MAX_RETENTION_DAYS {
                out.push(ConfigProblem::new(
                    field,
                    format!("must be at most {MAX_RETENTION_DAYS} (0 keeps everything)"),
                ));
            }
        }
        out
    }
}

/// The most job slots, or prefetched jobs, one instance may be configured with.
const MAX_SLOTS: usize = 100_000;

impl WorkersConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        // Slots and prefetch become semaphore permits (and their sum one): bounded so that a
        // typo is a clear error at start, not an overflow.
        for (field, value) in [
            ("workers.concurrency", self.concurrency),
            ("workers.prefetch", self.prefetch),
        ] {
            if value > MAX_SLOTS {
                out.push(ConfigProblem::new(
                    field,
                    format!("must be at most {MAX_SLOTS}"),
                ));
            }
        }
        if self.claim_batch < 1 {
            out.push(ConfigProblem::new(
                "workers.claim_batch",
                "must be at least 1",
            ));
        }
        if self.completion_batch < 1 {
            out.push(ConfigProblem::new(
                "workers.completion_batch",
                "must be at least 1",
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval * 2 > self.lease {
            out.push(ConfigProblem::new(
                "workers.heartbeat_interval_ms",
                "must be positive and at most half of workers.lease_ms",
            ));
        }
        if self.poll_interval.is_zero() || self.maintenance_interval.is_zero() {
            out.push(ConfigProblem::new(
                "workers.poll_interval_ms",
                "poll and maintenance intervals must be positive",
            ));
        }
        out
    }
}
