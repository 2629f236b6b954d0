//! Connections per host, reused across commands: each command gets a channel of its own on the
//! host's one authenticated connection, at most `max_sessions` at once. A connection found dead
//! is replaced (opening a channel runs nothing, so that retry is safe); one left unused for
//! `ssh.idle_timeout` is closed.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use russh::{Channel, Disconnect, client::Msg};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use super::client::{self, ConnectError, Session, Target};

/// Every configured host's pool.
#[derive(Debug, Default)]
pub struct Pools {
    hosts: BTreeMap<String, Arc<HostPool>>,
}

impl Pools {
    pub fn new(targets: Vec<Target>, idle_timeout: Duration) -> Self {
        Self {
            hosts: targets
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(HostPool::new(t, idle_timeout))))
                .collect(),
        }
    }

    pub fn get(&self, host: &str) -> Option<&Arc<HostPool>> {
        self.hosts.get(host)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }
}

struct Connection {
    session: Session,
    generation: u64,
}

pub struct HostPool {
    pub target: Target,
    sessions: Arc<Semaphore>,
    connection: Mutex<Option<Arc<Connection>>>,
    idle_timeout: Duration,
    generations: AtomicU64,
    /// Channels open now, and when the last one closed (for the idle reaper).
    in_use: AtomicUsize,
    last_used: std::sync::Mutex<Instant>,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool")
            .field("target", &self.target)
            .field("in_use", &self.in_use.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why no channel could be opened. Nothing ran on the host in any of these cases.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    #[error("all {max} sessions to {host} stayed busy until the time limit")]
    Busy { host: String, max: usize },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{host} refused a new session: {detail}")]
    Channel { host: String, detail: String },
}

/// A channel for one command, holding one of the host's session slots until dropped.
pub struct Lease {
    pub channel: Channel<Msg>,
    /// The connection was made for this command (not reused).
    pub fresh: bool,
    _slot: Slot,
}

/// Counts an open channel and gives back its session slot when dropped.
struct Slot {
    pool: Arc<HostPool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.pool.last_used.lock().expect("last_used lock") = Instant::now();
        self.pool.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HostPool {
    fn new(target: Target, idle_timeout: Duration) -> Self {
        Self {
            sessions: Arc::new(Semaphore::new(target.config.max_sessions)),
            target,
            connection: Mutex::new(None),
            idle_timeout,
            generations: AtomicU64::new(0),
            in_use: AtomicUsize::new(0),
            last_used: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits (until `deadline`) for a free session slot, then opens a channel on the host's
    /// connection, connecting first if there is none or it died.
    pub async fn open(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<Lease, OpenError> {
        let permit = tokio::time::timeout_at(deadline, self.sessions.clone().acquire_owned())
            .await
            .map_err(|_| OpenError::Busy {
                host: self.target.name.clone(),
                max: self.target.config.max_sessions,
            })?
            .expect("the session semaphore is never closed");
        self.in_use.fetch_add(1, Ordering::SeqCst);
        let slot = Slot {
            pool: self.clone(),
            _permit: permit,
        };
        let limit = self.target.config.connect_timeout;
        let mut last_error = None;
        for _ in 0..2 {
            let (conn, fresh) = self.connection().await?;
            match tokio::time::timeout(limit, conn.session.channel_open_session()).await {
                Ok(Ok(channel)) => {
                    return Ok(Lease {
                        channel,
                        fresh,
                        _slot: slot,
                    });
                }
                // The server answered no (e.g. its MaxSessions): the connection is fine, and
                // other commands are running on it.
                Ok(Err(russh::Error::ChannelOpenFailure(reason))) => {
                    return Err(OpenError::Channel {
                        host: self.target.name.clone(),
                        detail: format!("{reason:?}"),
                    });
                }
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(_) => last_error = Some(format!("no answer within {} ms", limit.as_millis())),
            }
            // The connection is broken or silent (so are any channels on it): replace it, and
            // try once more on a new one.
            self.discard(conn.generation).await;
            if fresh {
                break;
            }
        }
        Err(OpenError::Channel {
            host: self.target.name.clone(),
            detail: last_error.unwrap_or_default(),
        })
    }

    /// The live connection, or a new one (made while holding the lock, so concurrent commands
    /// to a host share one connection instead of racing to make several).
    async fn connection(self: &Arc<Self>) -> Result<(Arc<Connection>, bool), ConnectError> {
        let mut current = self.connection.lock().await;
        if let Some(conn) = current.as_ref()
            && !conn.session.is_closed()
        {
            return Ok((conn.clone(), false));
        }
        let session = client::connect(&self.target).await?;
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let conn = Arc::new(Connection {
            session,
            generation,
        });
        *current = Some(conn.clone());
        tracing::debug!(host = %self.target.name, generation, "ssh connection established");
        tokio::spawn(reap_when_idle(Arc::downgrade(self), generation));
        Ok((conn, true))
    }

    async fn discard(&self, generation: u64) {
        let mut current = self.connection.lock().await;
        if current.as_ref().is_some_and(|c| c.generation == generation)
            && let Some(conn) = current.take()
        {
            let _ = conn
                .session
                .disconnect(Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// Channels open on this host right now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }
}

/// Closes the connection once nothing has used it for the idle timeout; ends when the
/// connection is replaced or the pool is gone.
async fn reap_when_idle(pool: Weak<HostPool>, generation: u64) {
    loop {
        let Some(wait) = pool.upgrade().map(|p| p.idle_timeout) else {
            return;
        };
        tokio::time::sleep(wait / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut current = pool.connection.lock().await;
        match current.as_ref() {
            Some(c) if c.generation == generation && !c.session.is_closed() => {}
            _ => return,
        }
        let idle_for = pool.last_used.lock().expect("last_used lock").elapsed();
        if pool.in_use() == 0 && idle_for >= pool.idle_timeout {
            if let Some(conn) = current.take() {
                tracing::debug!(host = %pool.target.name, generation, "closing idle ssh connection");
                let _ = conn
                    .session
                    .disconnect(Disconnect::ByApplication, "idle", "en")
                    .await;
            }
            return;
        }
    }
}
