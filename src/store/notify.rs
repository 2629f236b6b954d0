//! LISTEN/NOTIFY, owned here: the channels (one typed list — the two SQL functions of the
//! migrations that notify use the same names, which a test checks), statements that bind the
//! channel's name as a parameter, and the listener that turns notifications into typed events.
//! Notifications are hints: after a (re)connect the subscriber is told to look again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::ids::JobId;

/// Every channel the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Jobs were queued: claim.
    NewWork,
    /// Jobs reached a final state (payload: `<origin>;<ids>`): wake their waiters.
    JobDone,
    /// Running jobs were asked to stop (payload: `<origin>;<ids>`).
    Cancel,
    /// Callback deliveries are due.
    Deliveries,
    /// API keys were created or revoked: authentication caches must go.
    Keys,
    /// Audit events were written (a trigger notifies once per transaction): live streams read.
    Events,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::NewWork,
        Channel::JobDone,
        Channel::Cancel,
        Channel::Deliveries,
        Channel::Keys,
        Channel::Events,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Channel::NewWork => "orch_jobs",
            Channel::JobDone => "orch_job_done",
            Channel::Cancel => "orch_cancel",
            Channel::Deliveries => "orch_deliveries",
            Channel::Keys => "orch_keys",
            Channel::Events => "orch_events",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: Channel,
    /// The instance that made the change, when the payload names one.
    pub origin: Option<Uuid>,
    /// The jobs it is about (job channels).
    pub jobs: Vec<JobId>,
}

impl Notification {
    /// Payloads are `<origin instance>;<ids>` (the origin may be empty) or empty.
    fn parse(channel: Channel, payload: &str) -> Self {
        let (origin, ids) = payload.split_once(';').unwrap_or(("", payload));
        Self {
            channel,
            origin: Uuid::try_parse(origin).ok(),
            jobs: ids
                .split(',')
                .filter_map(|hex| Uuid::try_parse(hex.trim()).ok().map(JobId::from))
                .collect(),
        }
    }
}

/// The channel a listener NOTIFYs itself on (through the pool every other statement uses)
/// each time it starts listening, to prove that notifications reach it: a LISTEN made through
/// a pooler in transaction mode hears nothing, silently, and every wake-up would wait for the
/// fallback polls.
const PROBE_CHANNEL: &str = "orch_listen_probe";

/// How long a listener waits to hear its probe before saying that it does not.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// What the listener tells its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenEvent {
    Notified(Notification),
    /// Listening (again): whatever was said meanwhile was missed, so look again.
    Resync,
}

/// Sends a channel's NOTIFY on behalf of transactions that deferred theirs (to commit without
/// the notification-queue lock): every [`DeferredNotify::poke`] is followed by a NOTIFY, and
/// pokes that arrive while one is being sent share the next.
#[derive(Debug, Clone)]
pub struct DeferredNotify {
    poke: Arc<tokio::sync::Notify>,
}

impl DeferredNotify {
    /// Starts the sender; it ends with the runtime.
    pub fn start(store: Store, channel: Channel) -> Self {
        let poke = Arc::new(tokio::sync::Notify::new());
        let poked = poke.clone();
        tokio::spawn(async move {
            loop {
                poked.notified().await;
                if let Err(e) = store.notify(channel).await {
                    // Listeners look again on their own (each has a fallback poll).
                    tracing::warn!(error = %e, channel = channel.name(), "deferred NOTIFY failed");
                }
            }
        });
        Self { poke }
    }

    /// A transaction that deferred its NOTIFY committed.
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}

impl Store {
    /// `NOTIFY channel` in a transaction of its own.
    pub async fn notify(&self, channel: Channel) -> StoreResult<()> {
        Ok(self.notify_raw(channel.name(), "").await?)
    }

    async fn notify_raw(&self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        sqlx::query!("SELECT pg_notify($1, $2)", channel, payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Listens on every channel, reconnecting with backoff, until the receiver is dropped.
    pub fn listen(&self) -> mpsc::UnboundedReceiver<ListenEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            while !tx.is_closed() {
                match store.listen_once(&tx).await {
                    Ok(()) => delay = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; reconnecting");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        rx
    }

    async fn listen_once(
        &self,
        tx: &mpsc::UnboundedSender<ListenEvent>,
    ) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.listen).await?;
        listener.ignore_pool_close_event(true);
        listener
            .listen_all(
                Channel::ALL
                    .map(Channel::name)
                    .into_iter()
                    .chain([PROBE_CHANNEL]),
            )
            .await?;
        if tx.send(ListenEvent::Resync).is_err() {
            return Ok(());
        }
        let probe = Uuid::new_v4().simple().to_string();
        let heard = Arc::new(AtomicBool::new(false));
        self.notify_raw(PROBE_CHANNEL, &probe).await?;
        // A timer beside the loop rather than a timeout around `try_recv`, which must not be
        // cancelled halfway through a message.
        tokio::spawn({
            let heard = heard.clone();
            async move {
                tokio::time::sleep(PROBE_WAIT).await;
                let ok = heard.load(Ordering::Relaxed);
                metrics::gauge!("orchestrator_notifications_heard").set(f64::from(u8::from(ok)));
                if !ok {
                    tracing::error!(
                        "this instance does not hear PostgreSQL notifications: its own NOTIFY \
                         did not reach its LISTEN within {PROBE_WAIT:?}. Other instances' \
                         requests and jobs reach it only through the fallback polls. Behind \
                         PgBouncer in transaction pooling mode, the session that ran LISTEN is \
                         lent to other connections, whose statements fail on the notifications \
                         it receives. Set database.listen_url to a direct connection"
                    );
                }
            }
        });
        loop {
            let event = match listener.try_recv().await? {
                // The connection dropped; the listener reconnects on the next call.
                None => ListenEvent::Resync,
                Some(n) if n.channel() == PROBE_CHANNEL => {
                    if n.payload() == probe && !heard.swap(true, Ordering::Relaxed) {
                        tracing::debug!("listening: this instance heard its own probe");
                    }
                    continue;
                }
                Some(n) => match Channel::from_name(n.channel()) {
                    Some(channel) => {
                        ListenEvent::Notified(Notification::parse(channel, n.payload()))
                    }
                    None => continue,
                },
            };
            if tx.send(event).is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_origin_and_jobs() {
        let (a, b) = (JobId::new(), JobId::new());
        let origin = Uuid::now_v7();
        let n = Notification::parse(
            Channel::JobDone,
            &format!(
                "{};{},nonsense,{}",
                origin.simple(),
                a.uuid().simple(),
                b.uuid().simple()
            ),
        );
        assert_eq!(n.origin, Some(origin));
        assert_eq!(n.jobs, vec![a, b]);
        let empty = Notification::parse(Channel::NewWork, "");
        assert_eq!((empty.origin, empty.jobs.len()), (None, 0));
        assert_eq!(Notification::parse(Channel::Cancel, ";").origin, None);
    }

    #[test]
    fn channel_names_are_distinct_and_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::from_name(c.name()), Some(c));
        }
        assert_eq!(Channel::from_name("orch_other"), None);
    }
}
