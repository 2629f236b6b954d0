use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchestrator::{
    app::{Application, BuildOptions},
    auth::admin::{KeyAdmin, create_key, revoke_key},
    callbacks::{SecretSource, SigningSecrets},
    config::Config,
    db,
    db::embedded::ClusterUser,
    http::openapi,
    store::Store,
    telemetry,
    tools::local_catalog,
    worker::{Waiters, maintenance_pass},
};

/// mimalloc instead of glibc's malloc: under load the server's allocations and frees (request
/// and response buffers, JSON values) took 17 % of its CPU in glibc's allocator (perf,
/// `system.echo` at 64 connections); mimalloc's thread-local free lists serve them for less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Postgres-backed intent orchestration server",
    after_help = "Environment:\n  \
        DATABASE_URL          the PostgreSQL database (postgres://user@host:port/db); wins over \
        database.url.\n                        With none configured, a private cluster is used \
        (see README).\n  \
        ORCHESTRATOR_CONFIG   the TOML configuration file (like --config)\n  \
        ORCH__SECTION__KEY    overrides one setting, e.g. ORCH__SERVER__LISTEN=0.0.0.0:8080\n  \
        RUST_LOG              the log filter (wins over log.filter)"
)]
struct Cli {
    /// TOML configuration file (see orchestrator.example.toml).
    #[arg(long, global = true, env = "ORCHESTRATOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API, the workers and maintenance (the default).
    Serve {
        /// Do not apply pending migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi {
        /// `actions`: the ChatGPT Action profile (orchestrate, getJob, listTools).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Exit 0 when the server on this configuration's listen address answers /healthz (for
    /// container health checks: the image has no shell tools).
    Healthcheck {
        /// The health URL instead of the one derived from server.listen.
        #[arg(long)]
        url: Option<String>,
    },
    /// Run one round of maintenance (lease rescue, deadlines, purges, reporting rollups) and
    /// exit; the server does this continuously.
    Maintain,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Outbound callbacks.
    Callbacks {
        #[command(subcommand)]
        command: CallbacksCommand,
    },
}

#[derive(Subcommand)]
enum CallbacksCommand {
    /// Print the secret that signs callbacks and flow requests (the configured one, else the
    /// one generated and stored in the database, generating it now if there is none yet).
    Secret,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown this once; only its hash is stored).
    Create {
        /// A name to recognise the key by (1 to 100 characters, unique among active keys).
        #[arg(long)]
        name: String,
        /// Comma-separated: intent globs (memory.*) and jobs:read:all, jobs:read:payloads,
        /// jobs:cancel, jobs:retry, callbacks:retry, schedules:admin, keys:admin, ops:read.
        #[arg(long)]
        scopes: String,
        /// The key stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id or name.
    Revoke {
        /// The key's id or name.
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: through the logs when they are on (they may be JSON for a collector), else
            // on stderr.
            if telemetry::logging_started() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("orchestrator: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve { no_migrate: false }) {
        Command::Serve { no_migrate } => {
            telemetry::init_logging(&config.log);
            let app = Application::build(
                config,
                BuildOptions {
                    migrate: !no_migrate,
                    ..Default::default()
                },
            )
            .await?;
            let token = app.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                token.cancel();
            });
            app.run_until_stopped().await
        }
        Command::Migrate => {
            telemetry::init_logging(&config.log);
            let database = open_database(&config).await?;
            database.pool.close().await;
            Ok(())
        }
        Command::Maintain => {
            telemetry::init_logging(&config.log);
            let database = open_database(&config).await?;
            let store = Store::new(database.pool.clone());
            let settings = config.maintenance();
            maintenance_pass(&store, &Waiters::default(), &settings).await;
            database.pool.close().await;
            Ok(())
        }
        Command::Keys { command } => {
            let database = open_database(&config).await?;
            let store = Store::new(database.pool.clone());
            let result = keys(&store, command).await;
            database.pool.close().await;
            result
        }
        Command::Callbacks {
            command: CallbacksCommand::Secret,
        } => {
            let database = open_database(&config).await?;
            let store = Store::new(database.pool.clone());
            let result = SigningSecrets::resolve(&config.callbacks, &store).await;
            database.pool.close().await;
            let secrets = result?;
            eprintln!(
                "signing secret ({}):",
                match secrets.source() {
                    SecretSource::Configured => "configured",
                    SecretSource::Generated => "generated, stored in the database",
                }
            );
            let lines: Vec<&str> = secrets.secrets().iter().map(|s| s.expose()).collect();
            print_stdout(&lines.join("\n"))
        }
        Command::Openapi { profile } => {
            // No database needed: the pool connects lazily and is never used.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://unused.invalid/orchestrator")?;
            let catalog = local_catalog(&config.tools, &config.ssh, &Store::new(pool))?;
            // The operator's own view: every intent this configuration has.
            let doc = match profile.as_deref() {
                None => openapi::document(&catalog, &config.server.public_url, |_| true),
                Some("actions") => {
                    openapi::actions_document(&catalog, &config.server.public_url, |_| true)
                }
                Some(other) => anyhow::bail!("--profile: `{other}` is not a profile (actions)"),
            };
            print_stdout(&serde_json::to_string_pretty(&doc)?)
        }
        Command::Healthcheck { url } => {
            let url =
                url.unwrap_or_else(|| health_url(config.server.listen, &config.server.base_path));
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            let status = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .status();
            anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
            Ok(())
        }
    }
}

/// Writes to stdout; a reader that went away (`orchestrator openapi | head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `/healthz` on the listen address (an unspecified address is reached on loopback).
fn health_url(listen: std::net::SocketAddr, base_path: &str) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "http://{}{base_path}/healthz",
        std::net::SocketAddr::new(ip, listen.port())
    )
}

/// The database for a one-shot command (migrated), saying which one it is: a command that
/// silently used another database than the server's would be worse than one that fails.
async fn open_database(config: &Config) -> anyhow::Result<db::Database> {
    let database = db::connect(&config.database, true, ClusterUser::Command).await?;
    eprintln!("database: {}", database.description);
    Ok(database)
}

async fn keys(store: &Store, command: KeysCommand) -> anyhow::Result<()> {
    let operator = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let by = KeyAdmin {
        actor_kind: orchestrator::model::ActorKind::Operator,
        actor_id: None,
        actor_name: &operator,
        request_id: None,
    };
    match command {
        KeysCommand::Create {
            name,
            scopes,
            expires_in_days,
        } => {
            let scopes: Vec<String> = scopes.split(',').map(|s| s.trim().to_owned()).collect();
            let expires_at = expires_in_days
                .map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
            let created = create_key(store, &name, &scopes, expires_at, &by).await?;
            eprintln!(
                "created key {} ({}) with scopes {}; store it now, it is not shown again:",
                created.record.name,
                created.record.id,
                created.record.scopes.join(",")
            );
            print_stdout(&created.secret)?;
        }
        KeysCommand::List => {
            use std::fmt::Write;
            let mut table = format!(
                "{:<36}  {:<20}  {:<12}  {:<10}  {:<20}  scopes",
                "id", "name", "prefix", "state", "last used"
            );
            for k in store.list_api_keys().await? {
                let state = k.state();
                let last_used = k
                    .last_used_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into());
                write!(
                    table,
                    "\n{:<36}  {:<20}  {:<12}  {:<10}  {:<20}  {}",
                    k.id,
                    k.name,
                    k.prefix,
                    state,
                    last_used,
                    k.scopes.join(",")
                )?;
            }
            print_stdout(&table)?;
        }
        KeysCommand::Revoke { key } => match revoke_key(store, &key, &by).await? {
            Some(k) => eprintln!("revoked key {} ({})", k.name, k.id),
            None => anyhow::bail!("no active key with id or name `{key}`"),
        },
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
