//! The audit trail read as a stream of job events, in commit order, resumable from any
//! position. A row's position is (its transaction's id, its id); rows are read only below the
//! horizon — the oldest transaction still running — where the set of rows can no longer grow
//! (the migration `event_stream` says why), so a reader that resumes after a position gets
//! exactly the rows it has not seen.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{JobEvent, Store, StoreResult};
use crate::{
    ids::JobId,
    model::{JobStatus, Mode},
};

/// Where an event stands in the stream: totally ordered, durable, the same on every instance.
/// Written `<xact>-<id>` (the SSE event id clients send back as `Last-Event-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPosition {
    xact: i64,
    id: i64,
}

impl StreamPosition {
    /// Before every event.
    pub const START: Self = Self { xact: 0, id: 0 };

    /// Just below `horizon`: everything of the transactions older than it.
    pub fn below(horizon: i64) -> Self {
        Self {
            xact: horizon - 1,
            id: i64::MAX,
        }
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.xact, self.id)
    }
}

impl FromStr for StreamPosition {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const SHAPE: &str = "an event id is two numbers joined by `-`, as the stream sent it";
        let (xact, id) = s.trim().split_once('-').ok_or(SHAPE)?;
        let number = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<i64>().ok())
                .flatten()
                .ok_or(SHAPE)
        };
        Ok(Self {
            xact: number(xact)?,
            id: number(id)?,
        })
    }
}

/// One event of a job's history as streams carry it: the event, where it stands, and whose
/// job it is about.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub position: StreamPosition,
    pub job_id: JobId,
    pub intent: Option<String>,
    pub mode: Option<Mode>,
    /// The API key that created the job (who may see the event).
    pub owner: Option<Uuid>,
    pub event: JobEvent,
}

/// Events read after a position, and how far the read covers.
#[derive(Debug, Clone)]
pub struct StreamPage {
    pub events: Vec<StreamEvent>,
    /// Every event at or before this position has been read (those the read selects).
    pub covered: StreamPosition,
    /// A full page: more may follow at once.
    pub more: bool,
}

impl StreamPage {
    fn new(events: Vec<StreamEvent>, limit: i64, horizon: i64) -> Self {
        let more = events.len() as i64 >= limit;
        let covered = match events.last() {
            Some(last) if more => last.position,
            _ => StreamPosition::below(horizon),
        };
        Self {
            events,
            covered,
            more,
        }
    }
}

struct Row {
    xact: i64,
    id: i64,
    at: DateTime<Utc>,
    kind: String,
    job_id: Uuid,
    intent: Option<String>,
    mode: Option<Mode>,
    from_status: Option<JobStatus>,
    to_status: Option<JobStatus>,
    attempt: i32,
    instance_id: Option<Uuid>,
    actor_kind: Option<String>,
    actor_name: Option<String>,
    detail: Option<Value>,
    owner: Option<Uuid>,
}

impl From<Row> for StreamEvent {
    fn from(r: Row) -> Self {
        StreamEvent {
            position: StreamPosition {
                xact: r.xact,
                id: r.id,
            },
            job_id: JobId::from(r.job_id),
            intent: r.intent,
            mode: r.mode,
            owner: r.owner,
            event: JobEvent {
                id: r.id,
                at: r.at,
                kind: r.kind,
                from_status: r.from_status,
                to_status: r.to_status,
                attempt: r.attempt,
                instance_id: r.instance_id,
                actor_kind: r.actor_kind,
                actor_name: r.actor_name,
                detail: r.detail,
            },
        }
    }
}

impl Store {
    /// Where the job's final state change stands (none while it is not final).
    pub async fn job_final_position(&self, job: JobId) -> StoreResult<Option<StreamPosition>> {
        Ok(sqlx::query!(
            r#"
            SELECT xact, id FROM audit_events
            WHERE job_id = $1
              AND to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            ORDER BY xact DESC, id DESC
            LIMIT 1
            "#,
            job.uuid(),
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|r| StreamPosition {
            xact: r.xact,
            id: r.id,
        }))
    }

    /// Where the job was last sent back to the queue (`retried`): final states before it
    /// are not the job's end.
    pub async fn job_retried_position(&self, job: JobId) -> StoreResult<Option<StreamPosition>> {
        Ok(sqlx::query!(
            r#"
            SELECT xact, id FROM audit_events
            WHERE job_id = $1 AND kind = 'retried'
            ORDER BY xact DESC, id DESC
            LIMIT 1
            "#,
            job.uuid(),
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|r| StreamPosition {
            xact: r.xact,
            id: r.id,
        }))
    }

    /// Where streams can read up to now: the oldest transaction still running.
    pub async fn stream_horizon(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar!(r#"SELECT audit_horizon() AS "horizon!""#)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Whether events are committed at or above `xact` (above the horizon: an older
    /// transaction still runs, so they cannot be read yet). `xact` is a constant here so the
    /// BRIN finds the table's tail instead of the whole table being read.
    pub async fn stream_waiting(&self, xact: i64) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM audit_events WHERE xact >= $1) AS "waiting!""#,
            xact,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// One job's events after `after` (its history as `GET /jobs/{id}/events` shows it),
    /// below `horizon`, oldest first.
    pub async fn job_stream(
        &self,
        job: JobId,
        after: StreamPosition,
        horizon: i64,
        limit: i64,
    ) -> StoreResult<StreamPage> {
        let rows = sqlx::query_as!(
            Row,
            r#"
            SELECT a.xact, a.id, a.at, a.kind, a.job_id AS "job_id!", a.intent,
                   a.mode AS "mode: Mode", a.from_status AS "from_status: JobStatus",
                   a.to_status AS "to_status: JobStatus", coalesce(a.attempt, 0) AS "attempt!",
                   a.instance_id, a.actor_kind, a.actor_name, a.detail,
                   j.api_key_id AS "owner?"
            FROM audit_events a LEFT JOIN jobs j ON j.id = a.job_id
            WHERE a.job_id = $1 AND (a.xact, a.id) > ($2, $3) AND a.xact < $4
              AND a.kind NOT IN ('callback.out', 'callback.in')
            ORDER BY a.xact, a.id
            LIMIT $5
            "#,
            job.uuid(),
            after.xact,
            after.id,
            horizon,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(StreamPage::new(
            rows.into_iter().map(StreamEvent::from).collect(),
            limit,
            horizon,
        ))
    }

    /// Every job's events after `after`, below `horizon`, oldest first.
    pub async fn jobs_stream(
        &self,
        after: StreamPosition,
        horizon: i64,
        limit: i64,
    ) -> StoreResult<StreamPage> {
        // One window of transactions per read: `xact >= $1 AND xact < $3` lets the BRIN read
        // only that stretch of the table, so a stream resumed from an old (or forged) position
        // walks the history a window at a time instead of sorting all of it on every page.
        let upto = horizon.min(after.xact.saturating_add(XACT_WINDOW));
        let rows = sqlx::query_as!(
            Row,
            r#"
            SELECT a.xact, a.id, a.at, a.kind, a.job_id AS "job_id!", a.intent,
                   a.mode AS "mode: Mode", a.from_status AS "from_status: JobStatus",
                   a.to_status AS "to_status: JobStatus", coalesce(a.attempt, 0) AS "attempt!",
                   a.instance_id, a.actor_kind, a.actor_name, a.detail,
                   j.api_key_id AS "owner?"
            FROM audit_events a LEFT JOIN jobs j ON j.id = a.job_id
            WHERE a.xact >= $1 AND (a.xact, a.id) > ($1, $2) AND a.xact < $3
              AND a.job_id IS NOT NULL AND a.kind NOT IN ('callback.out', 'callback.in')
            ORDER BY a.xact, a.id
            LIMIT $4
            "#,
            after.xact,
            after.id,
            upto,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut page = StreamPage::new(
            rows.into_iter().map(StreamEvent::from).collect(),
            limit,
            upto,
        );
        // Later windows remain below the horizon.
        page.more |= upto < horizon;
        Ok(page)
    }
}

/// Transactions one read of every job's events spans at most.
const XACT_WINDOW: i64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_transaction_then_id_and_round_trip() {
        let a = StreamPosition { xact: 7, id: 900 };
        let b = StreamPosition { xact: 8, id: 3 };
        assert!(
            a < b,
            "a later transaction's row comes later, whatever its id"
        );
        assert!(StreamPosition::START < a);
        assert_eq!("7-900".parse::<StreamPosition>(), Ok(a));
        assert_eq!(a.to_string().parse::<StreamPosition>(), Ok(a));
        for bad in [
            "",
            "7",
            "7-",
            "-7",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "99999999999999999999-1",
        ] {
            assert!(bad.parse::<StreamPosition>().is_err(), "{bad}");
        }
        assert!(StreamPosition::below(8) < b && StreamPosition::below(8) > a);
    }

    #[test]
    fn a_short_page_covers_up_to_the_horizon_a_full_one_up_to_its_last_event() {
        let empty = StreamPage::new(Vec::new(), 10, 50);
        assert_eq!(empty.covered, StreamPosition::below(50));
        assert!(!empty.more);
    }
}
