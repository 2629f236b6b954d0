//! Live job events. One reader per instance follows the audit trail (`store::stream`) and
//! broadcasts what it reads in batches; every stream of the instance (SSE clients, the
//! dashboard) follows the broadcast through a [`Follower`], which fills any gap from the
//! database itself — at its start, after a reconnect with `Last-Event-ID`, or when the reader
//! (re)started after the follower's position. So a stream never loses or repeats an event,
//! and the database is read once per wake-up, not once per client.
//!
//! The reader wakes when any instance wrote events (the `orch_events` notification, which the
//! worker's listener hands over), again shortly after while committed events wait behind an
//! older transaction, and once a second as a safety net — only while someone follows.

mod follower;

pub use follower::{FollowError, Follower, Scope};

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError, StreamEvent, StreamPosition};

/// At most one read of the trail this often, however many notifications arrive.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// How soon to look again when committed events wait behind an older transaction.
const WAITING_RETRY: Duration = Duration::from_millis(25);
/// A missed notification (a listener reconnecting) delays events at most this long.
const SAFETY_NET: Duration = Duration::from_secs(1);
/// Events per read.
const PAGE: i64 = 1_000;

/// What the reader read in one go: every job event after `after` up to `covered`.
#[derive(Debug)]
pub struct Batch {
    pub after: StreamPosition,
    pub covered: StreamPosition,
    pub events: Vec<Arc<StreamEvent>>,
}

/// The instance's reader and its broadcast.
pub struct LiveEvents {
    store: Store,
    wake: Arc<Notify>,
    batches: broadcast::Sender<Arc<Batch>>,
    /// Followers reading the database at once (history at the start, gaps): a thousand
    /// streams opened together queue here instead of taking every pooled connection from
    /// the workers.
    catch_ups: Arc<Semaphore>,
}

/// Followers that may read the database at the same time.
const CONCURRENT_CATCH_UPS: usize = 4;

impl LiveEvents {
    /// `buffer`: batches a follower may fall behind before it is told to reconnect.
    pub fn new(store: Store, buffer: usize) -> Arc<Self> {
        let (batches, _) = broadcast::channel(buffer.max(1));
        Arc::new(Self {
            store,
            wake: Arc::new(Notify::new()),
            batches,
            catch_ups: Arc::new(Semaphore::new(CONCURRENT_CATCH_UPS)),
        })
    }

    /// Notified when events were written (by any instance).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Starts following from `from` (exclusive): what the database holds first, then live.
    pub fn follow(&self, scope: Scope, from: StreamPosition) -> Follower {
        let rx = self.batches.subscribe();
        // A reader that was idle starts reading now rather than at its next safety-net tick.
        self.wake.notify_one();
        Follower::new(self.store.clone(), self.catch_ups.clone(), rx, scope, from)
    }

    /// Where a stream that wants only what happens from now on starts.
    pub async fn now(&self) -> Result<StreamPosition, StoreError> {
        Ok(StreamPosition::below(self.store.stream_horizon().await?))
    }

    /// Streams being followed on this instance.
    pub fn followers(&self) -> usize {
        self.batches.receiver_count()
    }

    /// Reads and broadcasts until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // None while nobody follows: the next follower fills any gap from the database, so an
        // idle reader need not keep up.
        let mut reading: Option<Reading> = None;
        let mut again = false;
        loop {
            let wait = if again { WAITING_RETRY } else { SAFETY_NET };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            if self.followers() == 0 {
                reading = None;
                again = false;
                continue;
            }
            again = match self.read(&mut reading).await {
                Ok(again) => again,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the event stream");
                    false
                }
            };
            tokio::time::sleep(MIN_INTERVAL).await;
        }
    }

    /// One read; whether to read again soon.
    async fn read(&self, reading: &mut Option<Reading>) -> Result<bool, StoreError> {
        let horizon = self.store.stream_horizon().await?;
        let Some(r) = reading else {
            let start = StreamPosition::below(horizon);
            *reading = Some(Reading {
                read: start,
                announced: start,
            });
            // Say where live reading starts, events or not: a follower whose catch-up ended
            // short of it reads the gap from the database now. Without this it would wait for
            // the next event to learn of the gap, and a job's last event, committed between
            // the two reads, would reach its stream only if something else happened later.
            let _ = self.batches.send(Arc::new(Batch {
                after: start,
                covered: start,
                events: Vec::new(),
            }));
            return Ok(false);
        };
        let page = self.store.jobs_stream(r.read, horizon, PAGE).await?;
        r.read = r.read.max(page.covered);
        // Stretches without events are not announced: followers skip them by position alone,
        // and a quiet stream costs no wake-ups.
        if !page.events.is_empty() {
            metrics::counter!("orchestrator_live_events_total").increment(page.events.len() as u64);
            // No receiver left since the check: nothing to do.
            let _ = self.batches.send(Arc::new(Batch {
                after: r.announced,
                covered: r.read,
                events: page.events.into_iter().map(Arc::new).collect(),
            }));
            r.announced = r.read;
        }
        // Read again soon if the page was full, or if events wait behind an older transaction
        // (no notification may come when it ends: it need not have written events).
        Ok(page.more || self.store.stream_waiting(horizon).await?)
    }
}

/// How far the reader read, and how far it told followers (the start of its next batch).
#[derive(Debug, Clone, Copy)]
struct Reading {
    read: StreamPosition,
    announced: StreamPosition,
}

/// `[events]`: live event streams.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Batches a stream may fall behind before it is ended and told to reconnect with its last
    /// event id (a slow client never holds up the reader or other clients).
    pub buffer: usize,
    /// A comment line this often keeps idle streams open through proxies.
    #[serde(with = "crate::duration::human")]
    pub heartbeat: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            buffer: 1_024,
            heartbeat: Duration::from_secs(15),
        }
    }
}

impl EventsConfig {
    pub fn problems(&self) -> Vec<crate::model::ConfigProblem> {
        let mut out = Vec::new();
        if self.buffer == 0 {
            out.push(crate::model::ConfigProblem::new(
                "events.buffer",
                "must be positive",
            ));
        }
        if self.heartbeat.is_zero() {
            out.push(crate::model::ConfigProblem::new(
                "events.heartbeat",
                "must be positive",
            ));
        }
        out
    }
}
