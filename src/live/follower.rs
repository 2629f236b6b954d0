//! One stream's view of the broadcast: the events of its scope after its position, each
//! exactly once, in stream order.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::{
    Semaphore,
    broadcast::{self, error::RecvError},
};

use super::Batch;
use crate::{
    ids::JobId,
    store::{Store, StoreError, StreamEvent, StreamPage, StreamPosition},
};

/// Catch-up reads from the database, per page.
const CATCH_UP_PAGE: i64 = 500;

/// Which events a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One job's history.
    Job(JobId),
    /// Every job's events (streams filter further: state changes, intent, visibility).
    AllJobs,
}

impl Scope {
    fn includes(self, event: &StreamEvent) -> bool {
        match self {
            Scope::Job(id) => event.job_id == id,
            Scope::AllJobs => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The stream fell too far behind the broadcast: its client should reconnect with the
    /// last event id it got (the database has everything since).
    #[error("the stream fell behind")]
    Behind,
    /// The instance is stopping.
    #[error("the event reader stopped")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Follower {
    store: Store,
    catch_ups: Arc<Semaphore>,
    rx: broadcast::Receiver<Arc<Batch>>,
    scope: Scope,
    /// Every event of the scope at or before this position has been handed out (or skipped).
    covered: StreamPosition,
    ready: VecDeque<Arc<StreamEvent>>,
    /// A batch that starts after `covered`: the gap is read from the database first.
    held: Option<Arc<Batch>>,
    /// Whether the database may hold events after `covered` the broadcast will not bring.
    behind_database: bool,
}

impl Follower {
    pub(super) fn new(
        store: Store,
        catch_ups: Arc<Semaphore>,
        rx: broadcast::Receiver<Arc<Batch>>,
        scope: Scope,
        from: StreamPosition,
    ) -> Self {
        Self {
            store,
            catch_ups,
            rx,
            scope,
            covered: from,
            ready: VecDeque::new(),
            held: None,
            behind_database: true,
        }
    }

    /// The next event of the scope.
    pub async fn next(&mut self) -> Result<Arc<StreamEvent>, FollowError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if self.behind_database {
                self.catch_up().await?;
                continue;
            }
            if let Some(batch) = self.held.take() {
                self.apply(&batch);
                continue;
            }
            match self.rx.recv().await {
                Ok(batch) if batch.after > self.covered => {
                    self.held = Some(batch);
                    self.behind_database = true;
                }
                Ok(batch) => self.apply(&batch),
                Err(RecvError::Lagged(_)) => return Err(FollowError::Behind),
                Err(RecvError::Closed) => return Err(FollowError::Closed),
            }
        }
    }

    /// One page from the database after `covered`, up to the current horizon.
    async fn catch_up(&mut self) -> Result<(), FollowError> {
        let _turn = self
            .catch_ups
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FollowError::Closed)?;
        let horizon = self.store.stream_horizon().await?;
        let page: StreamPage = match self.scope {
            Scope::Job(id) => {
                self.store
                    .job_stream(id, self.covered, horizon, CATCH_UP_PAGE)
                    .await?
            }
            Scope::AllJobs => {
                self.store
                    .jobs_stream(self.covered, horizon, CATCH_UP_PAGE)
                    .await?
            }
        };
        if page.covered > self.covered {
            self.covered = page.covered;
        }
        self.ready.extend(page.events.into_iter().map(Arc::new));
        // Still short of the held batch's start: read on (the horizon moves on meanwhile).
        self.behind_database = page.more
            || self
                .held
                .as_ref()
                .is_some_and(|batch| batch.after > self.covered);
        if self.behind_database && !page.more && self.ready.is_empty() {
            // The horizon has not reached the batch yet: an older transaction still runs.
            tokio::time::sleep(super::WAITING_RETRY).await;
        }
        Ok(())
    }

    fn apply(&mut self, batch: &Batch) {
        let scope = self.scope;
        let covered = self.covered;
        self.ready.extend(
            batch
                .events
                .iter()
                .filter(|e| e.position > covered && scope.includes(e))
                .cloned(),
        );
        if batch.covered > self.covered {
            self.covered = batch.covered;
        }
    }
}
