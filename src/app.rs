//! Wiring: database, catalog, workers and the HTTP server of one instance, run until a
//! shutdown signal, then stopped in order.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    auth::{AuthState, Authenticator},
    callbacks::{
        CallbackIngest, Deliverer, DeliverySettings, SafeClient, SecretKey, SigningSecrets,
        UrlPolicy, Verifier,
    },
    catalog::{Intent, Registry, Tool},
    config::Config,
    db,
    db::embedded::{ClusterUser, EmbeddedPostgres},
    http::{self, AppState},
    intake::Intake,
    model::Mode,
    redact::Redactor,
    schedules::Scheduler,
    store::Store,
    telemetry::gauges,
    tools::{
        flow::{self, Breakers, FlowDeps},
        local_catalog,
        mcp::McpManager,
    },
    worker::{Sidecar, Workers, WorkersSetup},
};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    embedded: Option<EmbeddedPostgres>,
    mcp: McpManager,
}

#[derive(Clone)]
pub struct BuildOptions {
    /// Apply pending migrations at start.
    pub migrate: bool,
    /// Local (agent) tools beyond the built-in ones, for embedding and tests.
    pub extra_tools: Vec<Arc<dyn Tool>>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            extra_tools: Vec::new(),
        }
    }
}

impl Application {
    pub async fn build(config: Config, options: BuildOptions) -> anyhow::Result<Self> {
        // First: a port in use is one clear error at once, before migrating or starting work.
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        // The recorder before anything records: a job the workers finish at once (one already
        // queued) must be counted, not recorded into no recorder.
        let metrics = crate::telemetry::metrics_handle();
        let database = db::connect(&config.database, options.migrate, ClusterUser::Server).await?;
        tracing::info!("database: {}", database.description);
        let store = Store::new(database.pool)
            .with_replica(database.read_pool)
            .with_listener(database.listen_pool);
        // Before anything is filed: a database migrated or restored a while ago may have no
        // partition for the present yet.
        crate::worker::make_partitions_ahead(
            &store,
            &config.maintenance().history,
            chrono::Utc::now(),
        )
        .await;
        let mut catalog = local_catalog(&config.tools, &config.ssh, &store)
            .context("loading the local intents")?;
        for tool in options.extra_tools {
            catalog.add(Intent::new(Mode::Agent, tool, None)?)?;
        }
        let registry = Arc::new(Registry::with_routing(catalog, config.routing.clone()));

        let callbacks = &config.callbacks;
        let url_policy = Arc::new(UrlPolicy::new(callbacks.allow_networks.clone()));
        let signing = Arc::new(SigningSecrets::resolve(callbacks, &store).await?);
        let client = SafeClient::new(url_policy.clone(), signing.signer()?);
        let oauth = Arc::new(crate::oauth::Oauth::new(
            config.oauth.clone(),
            &config.server.public_url,
            store.clone(),
            client.clone(),
        ));
        let redactor = Arc::new(Redactor::new(
            config
                .secret_values(signing.secrets().iter().map(|s| s.expose()))
                .iter()
                .map(|s| s.as_str()),
        ));
        let breakers = Arc::new(Breakers::default());
        let flows = flow::tools(
            &config.flows,
            &FlowDeps {
                client: &client,
                store: &store,
                public_url: &config.server.public_url,
                breakers: &breakers,
                destructive: config.mcp.flows_destructive,
            },
        )
        .context("loading the flows")?;
        registry.set_source(
            "flows",
            flows
                .into_iter()
                .map(|tool| Intent::new(Mode::Flow, tool, None).map(Arc::new))
                .collect::<Result<_, _>>()?,
        )?;

        // Before the workers: queued MCP jobs must find their intents.
        let mcp = McpManager::start(&config.mcp, &registry).await;
        log_intents(&registry);
        tracing::info!(public_url = %config.server.public_url, "public URL (status_url, callbacks, OpenAPI servers)");
        let keys_changed = Arc::new(tokio::sync::Notify::new());
        let live = crate::live::LiveEvents::new(store.clone(), config.events.buffer);
        let instance_id = Uuid::now_v7();
        let deliverer = (callbacks.delivery_concurrency > 0).then(|| {
            Arc::new(Deliverer::new(
                store.clone(),
                client,
                instance_id,
                DeliverySettings {
                    concurrency: callbacks.delivery_concurrency,
                    timeout: callbacks.timeout,
                    schedule: callbacks.retry_schedule.clone(),
                    max_retry_after: callbacks.max_retry_after,
                    poll: config.workers.poll_interval,
                },
                redactor.clone(),
            )) as Arc<dyn Sidecar>
        });
        let workers = Workers::start(WorkersSetup {
            instance_id,
            store: store.clone(),
            registry: registry.clone(),
            config: config.workers.clone(),
            sidecar: deliverer,
            maintenance: config.maintenance(),
            keys_changed: keys_changed.clone(),
            events_written: live.waker(),
            redactor: redactor.clone(),
        });
        let authenticator = Arc::new(Authenticator::new(
            store.clone(),
            config.auth.effective_mode(),
        ));
        log_auth_state(&authenticator, config.server.listen).await?;
        {
            let authenticator = authenticator.clone();
            let oauth = oauth.clone();
            tokio::spawn(async move {
                loop {
                    keys_changed.notified().await;
                    authenticator.invalidate();
                    oauth.invalidate();
                }
            });
        }
        let ingest = Arc::new(CallbackIngest::new(
            store.clone(),
            Verifier::new(
                callbacks
                    .ingest_keys()
                    .map(|s| SecretKey::parse(s.expose()))
                    .collect::<Result<Vec<_>, _>>()
                    .context("callbacks.ingest_secret")?,
                callbacks.tolerance,
            ),
            workers.waiters.clone(),
            workers.instance_id(),
            redactor,
        ));
        let scheduled = Arc::new(tokio::sync::Notify::new());
        let intake = Arc::new(Intake::new(
            store.clone(),
            workers,
            config.idempotency.ttl,
            scheduled.clone(),
        ));
        sync_config_schedules(&store, &config.schedules).await?;
        let scheduler = Arc::new(Scheduler::new(
            store.clone(),
            registry.clone(),
            intake.clone(),
            instance_id,
            scheduled,
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(live.clone().run(shutdown.child_token()));
        tokio::spawn(scheduler.clone().run(shutdown.child_token()));
        tokio::spawn(gauges::run(
            gauges::GaugeSources {
                store: store.clone(),
                breakers: breakers.clone(),
                flows: config
                    .flows
                    .iter()
                    .map(|(intent, flow)| (intent.clone(), flow.url.clone()))
                    .collect(),
            },
            config.metrics.gauge_interval,
            shutdown.child_token(),
        ));
        let state = AppState::new(http::SharedState {
            config: Arc::new(config),
            store,
            registry,
            intake,
            metrics,
            callback_policy: url_policy,
            ingest,
            breakers,
            authenticator,
            signing,
            oauth,
            live,
            mcp: mcp.health(),
            scheduler,
            shutdown: shutdown.clone(),
        });
        Ok(Self {
            listener,
            state,
            shutdown,
            embedded: database.embedded,
            mcp,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Cancel it to stop the instance gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token fires, then: stop accepting, let requests and running
    /// jobs finish within the grace period, hand the rest back to the queue.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let grace = self.state.config.server.shutdown_grace;
        let router = http::router(self.state.clone());
        let shutdown = self.shutdown.clone();
        tracing::info!(%addr, instance_id = %self.state.intake.workers().instance_id(), "listening");
        // TCP_NODELAY: an answer written in more than one piece (a streamed body, an SSE event
        // after its headers) must not wait for the client's delayed ACK (40 ms on Linux).
        let listener = self.listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = tokio::spawn(server.into_future());

        let server_result = tokio::select! {
            r = &mut server => Some(r),
            _ = shutdown.cancelled() => None,
        };
        if let Some(r) = server_result {
            // The server stopped on its own: an error. Stop the workers too.
            self.state.intake.workers().shutdown(grace).await;
            self.mcp.shutdown().await;
            r.context("server task")?.context("server")?;
            return Ok(());
        }
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        let workers = self.state.intake.workers().shutdown(grace);
        let (_, served) = tokio::join!(workers, async {
            tokio::time::timeout(grace + Duration::from_secs(5), &mut server).await
        });
        match served {
            Ok(r) => r.context("server task")?.context("server")?,
            Err(_) => {
                tracing::warn!("requests still open after the grace period; closing");
                server.abort();
            }
        }
        // After the workers: no call is left to need a session.
        self.mcp.shutdown().await;
        self.state.store.pool().close().await;
        if let Some(mut pg) = self.embedded.take() {
            tokio::task::spawn_blocking(move || pg.stop()).await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// What this instance can run, per engine.
fn log_intents(registry: &Registry) {
    let catalog = registry.snapshot();
    for mode in [Mode::Agent, Mode::Flow, Mode::Mcp] {
        let names: Vec<&str> = catalog
            .iter()
            .filter(|i| i.mode == mode)
            .map(|i| i.name())
            .collect();
        tracing::info!(
            engine = mode.as_str(),
            count = names.len(),
            "intents: {}",
            names.join(", ")
        );
    }
}

/// Says at start whether the API needs keys; an open API reachable from other machines is
/// worth a warning on every start.
async fn log_auth_state(authenticator: &Authenticator, listen: SocketAddr) -> anyhow::Result<()> {
    match authenticator.state().await? {
        AuthState::Required => tracing::info!("auth: keys required (auth.mode = \"required\")"),
        AuthState::Closed => tracing::info!("auth: keys required"),
        AuthState::Open => {
            tracing::warn!("auth: open (no API key has been created)");
            if !listen.ip().is_loopback() {
                tracing::warn!(
                    %listen,
                    "auth: the API is open to every client that can reach {listen}: create a key \
                     (`orchestrator keys create`) or set auth.mode = \"required\""
                );
            }
        }
    }
    Ok(())
}

/// Makes the database's configuration schedules those of `[[schedules]]`: new ones made,
/// changed ones updated (their next fire time kept when their timing did not change, so a
/// restart catches up), removed ones deleted. Every instance does it at start; the result is
/// the same whichever goes first.
async fn sync_config_schedules(
    store: &crate::store::Store,
    schedules: &[crate::schedules::ScheduleConfig],
) -> anyhow::Result<()> {
    let operator = crate::model::Principal {
        name: "configuration".into(),
        operator: true,
        ..Default::default()
    };
    for s in schedules {
        let timetable = crate::schedules::Timetable::parse(&s.cron, &s.timezone)?;
        let upserted = store
            .upsert_config_schedule(&crate::store::NewSchedule {
                name: &s.name,
                intent: &s.intent,
                mode: s.mode.unwrap_or(Mode::Auto),
                inputs: &s.inputs,
                cron: &s.cron,
                timezone: &s.timezone,
                overlap: s.overlap.as_str(),
                catch_up: s.catch_up.as_str(),
                catch_up_max: s.catch_up_max,
                paused: s.paused,
                source: crate::store::FROM_CONFIG,
                next_fire_at: timetable.next_after(chrono::Utc::now()),
                by: &operator,
            })
            .await?;
        if upserted.is_none() {
            anyhow::bail!(
                "schedules: `{}` is the name of a schedule made through the API; rename one",
                s.name
            );
        }
    }
    let names: Vec<String> = schedules.iter().map(|s| s.name.clone()).collect();
    for gone in store.drop_config_schedules_except(&names).await? {
        tracing::info!(schedule = %gone, "schedule removed from the configuration: deleted");
    }
    if !schedules.is_empty() {
        tracing::info!(
            schedules = schedules.len(),
            "schedules from the configuration"
        );
    }
    Ok(())
}
