//! History retention: the partitions of job history and of the audit trail are made ahead of
//! time, and expired ones are dropped whole (`retention.jobs_days`, `retention.audit_days`).

use chrono::{DateTime, Utc};

use crate::store::Store;

/// What maintenance needs of `[retention]` for partitions.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    pub partition_days: u32,
    /// 0: keep job history.
    pub jobs_days: u32,
    /// 0: keep the audit trail.
    pub audit_days: u32,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct HistoryReport {
    pub partitions_made: i32,
    /// Each dropped partition with the rows it held.
    pub dropped: Vec<(String, i64)>,
}

/// Partitions are kept this many lengths ahead of the clock: a row whose time has no partition
/// is refused, so passes that could not get the tables (or instances down for a while) must
/// not leave the present uncovered.
const AHEAD: u32 = 2;

/// Makes the partitions the coming `AHEAD` lengths need (at start, and in every pass).
pub async fn make_partitions_ahead(
    store: &Store,
    settings: &HistorySettings,
    now: DateTime<Utc>,
) -> i32 {
    let upto = now + chrono::Duration::days(i64::from(settings.partition_days * AHEAD));
    let made = match store
        .ensure_history_partitions(settings.partition_days, now, upto)
        .await
    {
        Ok(made) => {
            if made > 0 {
                tracing::info!(partitions = made, until = %upto, "history partitions made");
            }
            made
        }
        Err(e) => {
            tracing::warn!(error = %e, "making history partitions failed");
            0
        }
    };
    match store.history_partitions_ahead(now).await {
        Ok(ahead) => metrics::gauge!("orchestrator_history_partitions_ahead_seconds").set(ahead),
        Err(e) => tracing::warn!(error = %e, "reading how far history partitions reach failed"),
    }
    made
}

/// Makes the coming partitions and drops the expired ones, as of `now`.
pub async fn keep_history(
    store: &Store,
    settings: &HistorySettings,
    now: DateTime<Utc>,
) -> HistoryReport {
    let mut report = HistoryReport {
        partitions_made: make_partitions_ahead(store, settings, now).await,
        ..HistoryReport::default()
    };
    if settings.jobs_days == 0 && settings.audit_days == 0 {
        return report;
    }
    let expired = match store
        .expired_history_partitions(settings.jobs_days, settings.audit_days, now)
        .await
    {
        Ok(expired) => expired,
        Err(e) => {
            tracing::warn!(error = %e, "looking for expired history partitions failed");
            return report;
        }
    };
    for partition in expired {
        match store
            .drop_history_partition(&partition, settings.jobs_days, now)
            .await
        {
            Ok(Some(rows)) => {
                tracing::info!(partition = %partition.name, table = %partition.table, rows,
                               "expired history partition dropped");
                metrics::counter!("orchestrator_history_partitions_dropped_total",
                                  "table" => partition.table.clone())
                .increment(1);
                report.dropped.push((partition.name, rows));
            }
            Ok(None) => {
                tracing::debug!(partition = %partition.name, "history partition kept for now");
            }
            Err(e) => {
                tracing::warn!(error = %e, partition = %partition.name,
                               "dropping a history partition failed");
            }
        }
    }
    report
}
