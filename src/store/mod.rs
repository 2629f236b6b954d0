//! Every SQL statement of the server lives below this module, checked at compile time against
//! the offline cache in `sqlx-data/`.

mod callbacks;
mod engine_health;
mod events;
mod gauges;
mod held;
mod history;
mod idempotency;
mod inline;
mod intake_batch;
mod jobs;
mod keys;
mod mcp_sessions;
mod memory;
mod notify;
mod oauth;
mod open_deliveries;
mod rate_limits;
mod reporting;
mod schedules;
mod settings;
mod stream;
mod ui_sessions;
mod upkeep;

pub use callbacks::{
    CallbackAudit, ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryStatus, IngestAudit,
    IngestTarget,
};
pub use engine_health::SshActivity;
pub use events::JobEvent;
pub use gauges::QueueGauges;
pub use held::HeldConnection;
pub use history::HistoryPartition;
pub use idempotency::{KeyClaim, StoredKey};
pub use inline::{InlineOutcome, InlineTx, MemoryItemWithJob};
pub use intake_batch::{IntakeFiled, IntakeJob, OwnedKeyClaim, RanInline};
pub use jobs::{
    AtOnceCandidate, CancelOutcome, Claim, ClaimedJob, Claiming, Completion, CompletionStatus,
    FinishedAtOnce, JobFilter, JobRecord, ListCursor, NewJob, ReleaseReason, RetryOutcome,
};
pub use keys::{ApiKeyRecord, AuthFailure, NewApiKey};
pub use memory::{MemoryHit, MemoryItem, NewMemoryItem};
pub use notify::{Channel, DeferredNotify, ListenEvent, Notification};
pub use oauth::{
    AccessRecord, GrantRecord, NewGrant, NewOauthClient, NewTokens, OauthAudit, OauthClientRecord,
    RedeemedCode, Redemption,
};
pub use open_deliveries::OpenDelivery;
pub use rate_limits::{BucketTake, Refusal};
pub use reporting::PurgeStep;
pub use schedules::{FROM_CONFIG, NewSchedule, ScheduleLock, ScheduleRecord};
pub use settings::StoredSecret;
pub use stream::{StreamEvent, StreamPage, StreamPosition};
pub use ui_sessions::UiSession;

use std::sync::{Arc, Mutex};

use sqlx::{PgPool, Postgres, Transaction, postgres::PgDatabaseError};

/// `pool.begin()`, safe to cancel. sqlx 0.8.6's `begin` sends BEGIN and, if its future is
/// dropped before the answer (a client that hung up, a timeout), forgets it: the connection goes
/// back to the pool inside an open transaction, every later statement on it joins that
/// transaction (invisible to other connections, `now()` frozen), and some later COMMIT on it
/// publishes them all at once. A bench run saw it: 10,553 jobs filed on such a connection were
/// claimed on it, completed on another (which could not see them, so the completions were
/// dropped), committed later, and failed when their leases ran out. Begun in a task of its own,
/// BEGIN always completes; a transaction nobody waits for any more is dropped there, which
/// rolls it back before the connection is reused.
pub(crate) async fn begin(pool: &PgPool) -> StoreResult<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(tx) => Ok(tx?),
        // The runtime is shutting down.
        Err(_) => Err(StoreError::closed()),
    }
}

/// Sets a setting for the rest of the transaction (`SET LOCAL`, as a statement that can be
/// prepared).
pub(crate) async fn set_local(
    tx: &mut Transaction<'static, Postgres>,
    setting: &str,
    value: &str,
) -> StoreResult<()> {
    sqlx::query_scalar!(
        r#"SELECT set_config($1, $2, true) AS "set!""#,
        setting,
        value
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(())
}

/// Begins a transaction whose statements read ordered index scans instead of sorting.
///
/// `jobs` is partitioned, so a statement taking "the first N rows in some order" (the claim,
/// the promotion of due scheduled jobs, the unparking of jobs for free places) can either merge
/// the partitions' indexes in order and stop after N rows, or read every matching row of every
/// partition and sort them. An unpartitioned table had one ordered index and no such choice.
/// After a burst, a partition's statistics still describe it as nearly empty, and the planner
/// then takes the sort: measured with 100,000 queued jobs, 65 ms a claim instead of 0.4 ms,
/// and 96 ms (spilling to disk) to promote 256 due jobs instead of 9 ms. With sorts forbidden
/// only the ordered merge is left, whatever the statistics say. For statements that need no
/// sort of their own; one that sorts a few rows afterwards turns sorts back on
/// (`set_local(tx, "enable_sort", "on")`) before it.
pub(crate) async fn begin_ordered_scans(
    pool: &PgPool,
) -> StoreResult<Transaction<'static, Postgres>> {
    let mut tx = begin(pool).await?;
    set_local(&mut tx, "enable_sort", "off").await?;
    Ok(tx)
}

/// Takes advisory lock `id` until the transaction ends, if no other session holds it: for
/// upkeep one instance does at a time.
pub(crate) async fn try_lock_for_transaction(
    tx: &mut Transaction<'static, Postgres>,
    id: i64,
) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// The store's one error type: either the database cannot be reached (callers answer 503 or
/// retry later), or a statement failed for another reason (a bug or a broken invariant).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// The pool is closed (the server is stopping).
    pub fn closed() -> Self {
        StoreError::Unavailable(sqlx::Error::PoolClosed)
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A failure a standby gives where its primary would answer: unreachable or restarting,
    /// a statement cancelled by a conflict with recovery (40001), or a table or column its
    /// replay has not reached yet (42P01, 42703: a migration the primary already has).
    fn is_replica_lag(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "42P01" | "42703"))
            }
            StoreError::Database(_) => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db
                .try_downcast_ref::<PgDatabaseError>()
                .map(|pg| {
                    let code = pg.code();
                    // 08: connection exception; 57P0x: shutting down; 53300: too many
                    // connections; 3D000/28xxx: the database or our login is gone; 25006:
                    // connected to a read-only standby (mid-failover); 55000 from the
                    // server's connection-time database check is a database closed to
                    // connections (the routine name, unlike the message, is not translated).
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code.starts_with("28")
                        || code == "53300"
                        || code == "3D000"
                        || code == "25006"
                        || (code == "55000" && pg.routine() == Some("CheckMyDatabase"))
                })
                .unwrap_or(false),
            _ => false,
        };
        if matches!(e, sqlx::Error::PoolTimedOut) {
            metrics::counter!("orchestrator_db_pool_timeouts_total").increment(1);
        }
        if let sqlx::Error::Protocol(message) = &e
            && message.contains("NotificationResponse")
        {
            explain_stray_notification();
        }
        if unavailable {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A statement that received a notification it never listened for ran on a server session
/// where this instance's LISTEN ran: `database.url` goes through a pooler in transaction mode
/// that lends that session to other connections. Said once, with what to do (sqlx's own
/// message names only the protocol message).
fn explain_stray_notification() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            "a statement received a PostgreSQL notification meant for this instance's LISTEN: \
             database.url goes through a pooler in transaction mode (PgBouncer), which lends \
             the listening session to other connections. Set database.listen_url to a direct \
             connection"
        );
    }
}

/// Cheap to clone: a handle on the connection pool (and the replica's and the direct
/// connection's, when there are).
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Reads that may lag (`database.read_url`); the primary's pool when there is no replica.
    read: PgPool,
    /// Sessions of their own, for LISTEN (`database.listen_url`); the primary's pool when
    /// it is not behind a pooler.
    listen: PgPool,
    /// Whether `read` is a replica of its own (`database.read_url`), not the primary.
    has_replica: bool,
    /// Until when reads skip a replica found unreachable, shared by the store's clones.
    replica_down_until: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// How common memory.search's words and tags are, shared by the store's clones.
    word_stats: Arc<Mutex<memory::WordStats>>,
}

/// How long reads go to the primary after the replica could not be reached: a down replica
/// costs one read a connection timeout (`database.acquire_timeout`) per period, not every read.
const REPLICA_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            read: pool.clone(),
            listen: pool.clone(),
            pool,
            has_replica: false,
            replica_down_until: Arc::default(),
            word_stats: Arc::default(),
        }
    }

    /// Listings and overviews read from `read` (a streaming replica).
    pub fn with_replica(mut self, read: Option<PgPool>) -> Self {
        if let Some(read) = read {
            self.read = read;
            self.has_replica = true;
        }
        self
    }

    /// LISTEN on `listen` (a direct connection, when `pool` goes through a pooler).
    pub fn with_listener(mut self, listen: Option<PgPool>) -> Self {
        if let Some(listen) = listen {
            self.listen = listen;
        }
        self
    }

    /// Runs `read` against the replica — for listings and overviews that may lag a little
    /// behind the primary — and, if the replica fails it, against the primary. A replica
    /// fails reads the primary would answer: it is down or restarting, it is still replaying
    /// a migration the primary has (a table or column it does not know yet), or replay
    /// cancelled the statement (a conflict with recovery). None of that is the caller's
    /// fault, and the primary has the same data, newer; so the read is answered there (any
    /// other error is returned as it is, not run twice) and the replica's error logged and
    /// counted (`orchestrator_replica_fallbacks_total`); a replica
    /// that cannot be reached is skipped for `REPLICA_RETRY_AFTER`. Without a replica, `read`
    /// runs once against the primary. A write through the replica fails (a standby is
    /// read-only), so `read` must only read.
    pub async fn from_replica<T, F, Fut>(&self, read: F) -> StoreResult<T>
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        if !self.has_replica || self.replica_skipped() {
            return read(self.clone()).await;
        }
        let replica = Store {
            pool: self.read.clone(),
            read: self.read.clone(),
            listen: self.listen.clone(),
            has_replica: false,
            replica_down_until: Arc::default(),
            word_stats: self.word_stats.clone(),
        };
        match read(replica).await {
            // Anything else the primary would fail too: not run twice.
            Err(e) if !e.is_replica_lag() => Err(e),
            Ok(answer) => Ok(answer),
            Err(e) => {
                if e.is_unavailable() {
                    *self.replica_down() = Some(tokio::time::Instant::now() + REPLICA_RETRY_AFTER);
                }
                tracing::warn!(
                    error = %e,
                    "a read from the replica (database.read_url) failed; answered from the \
                     primary instead"
                );
                metrics::counter!("orchestrator_replica_fallbacks_total").increment(1);
                read(self.clone()).await
            }
        }
    }

    fn replica_skipped(&self) -> bool {
        let mut down = self.replica_down();
        match *down {
            Some(until) if tokio::time::Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn replica_down(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        // The value is a plain deadline, valid whatever a panicking holder did.
        self.replica_down_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Readiness: the database answers and every migration this build knows is applied.
    pub async fn migrations_applied(&self, expected: i64) -> StoreResult<bool> {
        let applied =
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM _sqlx_migrations WHERE success"#)
                .fetch_one(&self.pool)
                .await?;
        Ok(applied >= expected)
    }
}
