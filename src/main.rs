use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use orchestrator::{
    app::{Application, BuildOptions},
    auth::admin::{KeyAdmin, create_key, revoke_key},
    config::Config,
    db,
    dispatch::local_catalog,
    embedded_pg::ClusterUser,
    http::openapi,
    store::Store,
    telemetry,
    webhook::{SecretSource, SigningSecrets},
    worker::{MaintenanceSettings, Waiters, maintenance_pass},
};

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Postgres-backed intent orchestration server"
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
    Openapi,
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
        #[arg(long)]
        name: String,
        /// Comma-separated: intent globs (memory.*) and jobs:read:all, jobs:cancel,
        /// callbacks:retry, keys:admin.
        #[arg(long)]
        scopes: String,
        /// The key stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id or name.
    Revoke { key: String },
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
            tracing::error!("{e:#}");
            eprintln!("orchestrator: {e:#}");
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
            let settings = MaintenanceSettings::from_config(&config);
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
            for secret in secrets.secrets() {
                println!("{}", secret.expose());
            }
            Ok(())
        }
        Command::Openapi => {
            // No database needed: the pool connects lazily and is never used.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://unused.invalid/orchestrator")?;
            let catalog = local_catalog(&config, &Store::new(pool)).map_err(anyhow::Error::msg)?;
            // The operator's own view: every intent this configuration has.
            let doc = openapi::document(&catalog, &config.server.public_url, |_| true);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
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
        actor_kind: "operator",
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
            println!("{}", created.secret);
        }
        KeysCommand::List => {
            println!(
                "{:<36}  {:<20}  {:<12}  {:<10}  {:<20}  scopes",
                "id", "name", "prefix", "state", "last used"
            );
            for k in store.list_api_keys().await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                let last_used = k
                    .last_used_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<36}  {:<20}  {:<12}  {:<10}  {:<20}  {}",
                    k.id,
                    k.name,
                    k.prefix,
                    state,
                    last_used,
                    k.scopes.join(",")
                );
            }
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
