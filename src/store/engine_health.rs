//! What the audit trail says about the engines lately, for the dashboard's engine health:
//! the trail is shared by every instance, so this is the deployment's view, not one process's.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult};

/// One SSH host's commands and connection failures over a period.
#[derive(Debug, Clone)]
pub struct SshActivity {
    pub host: String,
    /// Commands started (`ssh.run`).
    pub runs: i64,
    /// Connections refused, failed, or with a host key that did not match.
    pub failures: i64,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
}

impl Store {
    /// Per SSH host over the last `hours`. Reads only the kinds the partial index
    /// `audit_events_kind_at_idx` holds, by time: a few rows per command, however long the
    /// trail.
    pub async fn ssh_activity(&self, hours: f64) -> StoreResult<Vec<SshActivity>> {
        Ok(sqlx::query_as!(
            SshActivity,
            r#"
            SELECT target AS "host!",
                   count(*) FILTER (WHERE kind = 'ssh.run') AS "runs!",
                   count(*) FILTER (WHERE kind <> 'ssh.run') AS "failures!",
                   max(at) FILTER (WHERE kind <> 'ssh.run') AS last_failure_at,
                   (array_agg(detail ->> 'reason' ORDER BY at DESC)
                        FILTER (WHERE kind <> 'ssh.run'))[1] AS last_failure
            FROM audit_events
            WHERE kind IN ('ssh.run', 'ssh.connect_failed', 'ssh.host_key_mismatch')
              AND at > now() - make_interval(secs => $1::float8 * 3600)
              AND target IS NOT NULL
            GROUP BY target
            ORDER BY target
            "#,
            hours,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
