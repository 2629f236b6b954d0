//! Reaching the database: the configured URL, or — only when no URL is configured at all — the
//! private cluster. A configured URL that does not answer is an error naming it (after the
//! connect retries), never a fallback to a second database. The database is created when
//! missing and migrations are applied.

use std::{
    path::PathBuf,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sqlx::{
    ConnectOptions, Connection, Executor, PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions},
};

use serde::{Deserialize, Serialize};

pub mod embedded;

use embedded::{ClusterUser, EmbeddedPostgres, default_data_dir};

use crate::model::ConfigProblem;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[database]`.
pub struct DatabaseConfig {
    /// `postgres://…`; `DATABASE_URL` wins. Unset: the private cluster (if `embedded`).
    pub url: Option<String>,
    /// A streaming replica of that database for reads that may lag a little: job listings and
    /// the dashboard's overview and lists. Reads that must see the caller's own writes (a job
    /// by id, anything that acts on jobs) stay on the primary. Unset: everything on `url`.
    pub read_url: Option<String>,
    /// A direct connection to the same database, not through a pooler, for what needs a
    /// session of its own: LISTEN (how instances wake each other), migrations (which hold a
    /// session advisory lock) and creating the database. Set it when `url` goes through
    /// PgBouncer in transaction pooling mode, where a session is lent only for a transaction.
    /// Unset: `url`.
    pub listen_url: Option<String>,
    pub max_connections: u32,
    #[serde(with = "crate::duration::human")]
    pub acquire_timeout: Duration,
    /// A pool connection unused for longer than this is checked with a round trip before it is
    /// lent out, so one the database dropped meanwhile (a restart, `idle_session_timeout`, a
    /// pooler's timeout) is replaced instead of failing a statement. One in steady use is
    /// lent as it is: checking every lending cost a round trip per statement (measured:
    /// `system.echo` at 16 connections does 1.18x the requests/s without it; docs/scaling.md).
    #[serde(with = "crate::duration::human")]
    pub check_idle_after: Duration,
    /// How long start-up keeps retrying a database that does not answer before giving up.
    #[serde(with = "crate::duration::human")]
    pub connect_timeout: Duration,
    /// With no URL configured at all, run a private cluster (PostgreSQL's server binaries
    /// must be installed). Never used when a URL is configured.
    pub embedded: bool,
    /// The private cluster's data directory (absolute). Default: `/var/lib/orchestrator/pgdata`
    /// for root, else `$XDG_DATA_HOME/orchestrator/pgdata` (`~/.local/share/…`).
    pub embedded_data_dir: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            read_url: None,
            listen_url: None,
            max_connections: 32,
            acquire_timeout: Duration::from_secs(3),
            check_idle_after: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            embedded: true,
            embedded_data_dir: None,
        }
    }
}

impl DatabaseConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Some(url) = &self.url
            && let Err(e) = check_url(url)
        {
            out.push(ConfigProblem::new("database.url", format!("{e:#}")));
        }
        for (field, url) in [
            ("database.read_url", &self.read_url),
            ("database.listen_url", &self.listen_url),
        ] {
            if let Some(url) = url
                && let Err(e) = check_url(url)
            {
                out.push(ConfigProblem::new(field, format!("{e:#}")));
            }
        }
        if let Some(dir) = &self.embedded_data_dir
            && !dir.is_absolute()
        {
            out.push(ConfigProblem::new(
                "database.embedded_data_dir",
                format!(
                    "must be an absolute path (so every command reaches the same cluster), not {}",
                    dir.display()
                ),
            ));
        }
        out
    }
}

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The database name used in the private cluster.
const EMBEDDED_DATABASE: &str = "orchestrator";

/// A connected pool, and the private cluster behind it if we use one (stopped when dropped,
/// if we started or adopted it).
pub struct Database {
    pub pool: PgPool,
    /// The replica's pool (`database.read_url`), connected lazily: a replica down at start
    /// fails only the reads sent to it.
    pub read_pool: Option<PgPool>,
    /// The direct connection's pool (`database.listen_url`), for the LISTEN session.
    pub listen_pool: Option<PgPool>,
    pub embedded: Option<EmbeddedPostgres>,
    /// Which database this is, for people: the URL (password hidden), and for the private
    /// cluster where it lives.
    pub description: String,
}

/// The URL with any password hidden, for logs and messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable database URL>".into(),
    }
}

/// Whether a PostgreSQL server answers at the URL's address (a TCP or socket connect).
pub async fn server_answers(opts: &PgConnectOptions) -> bool {
    let attempt = async {
        let host = opts.get_host();
        if host.starts_with('/') {
            let path = format!("{host}/.s.PGSQL.{}", opts.get_port());
            tokio::net::UnixStream::connect(path).await.is_ok()
        } else {
            tokio::net::TcpStream::connect((host, opts.get_port()))
                .await
                .is_ok()
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or(false)
}

/// Checks a configured URL before anything connects: a PostgreSQL URL that parses.
pub fn check_url(url: &str) -> anyhow::Result<PgConnectOptions> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    if !matches!(scheme, "postgres" | "postgresql") {
        bail!(
            "database URL {}: the scheme `{scheme}` is not PostgreSQL's (postgres://user@host:port/database)",
            redact(url)
        );
    }
    PgConnectOptions::from_str(url)
        .with_context(|| format!("database URL {} is not valid", redact(url)))
}

/// Creates the URL's database if it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(url = %redact(url), "database created"),
            // Another instance created it meanwhile.
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Errors that may pass if we wait: nothing listening yet, the server starting or shutting
/// down, too many connections. A wrong password or role is not one of them.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .map(|pg| {
                let code = pg.code();
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            })
            .unwrap_or(false),
        _ => false,
    }
}

/// Connects (creating the database if needed, through `direct_url`), retrying transient
/// failures until `database.connect_timeout` has passed.
async fn connect_with_retries(
    url: &str,
    direct_url: &str,
    config: &DatabaseConfig,
) -> anyhow::Result<PgPool> {
    let opts = check_url(url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500))
        .application_name("orchestrator");
    let give_up = Instant::now() + config.connect_timeout;
    let mut pause = Duration::from_millis(250);
    loop {
        let attempt = async {
            ensure_database(direct_url).await?;
            pool_options(config)
                .max_connections(config.max_connections)
                .min_connections(2.min(config.max_connections))
                .acquire_timeout(config.acquire_timeout)
                .connect_with(opts.clone())
                .await
        };
        // A peer that accepts and never answers (a firewall, a port reused by something
        // that is not PostgreSQL) must not hold start-up past the budget: each attempt gets
        // what is left of it, and at least one acquire timeout.
        let budget = give_up
            .saturating_duration_since(Instant::now())
            .max(config.acquire_timeout.min(config.connect_timeout));
        let outcome = match tokio::time::timeout(budget, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {budget:?}"),
            ))),
        };
        match outcome {
            Ok(pool) => return Ok(pool),
            Err(e) if is_transient(&e) && Instant::now() + pause < give_up => {
                tracing::warn!(url = %redact(url), error = %e, "the database does not answer yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("connecting to {}", redact(url)));
            }
        }
    }
}

/// Every pool's connections: without JIT, checked before lending only after being idle.
fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    let check_after = config.check_idle_after;
    without_jit(PgPoolOptions::new())
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= check_after {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Sessions that never compile statements with LLVM. Every statement the server sends is
/// short; with PostgreSQL's default `jit = on`, a batch statement whose estimated cost passes
/// `jit_above_cost` (a claim finishing 1,024 jobs) spent 496 of its 517 ms compiling, on
/// every call: the queue drained at 7-9k jobs/s instead of 43-45k. Set once a session opens,
/// not as a start-up option, which PgBouncer refuses; behind PgBouncer in transaction mode
/// this reaches only the server sessions it runs on (README, "Behind PgBouncer": its
/// `connect_query` covers all of them).
fn without_jit(pool: PgPoolOptions) -> PgPoolOptions {
    pool.after_connect(|conn, _| {
        Box::pin(async move {
            conn.execute("SET jit = off").await?;
            Ok(())
        })
    })
}

/// A pool for a second URL of the same database (a replica, a direct connection), connected
/// when first used: one that is down at start fails only what is sent to it.
fn lazy_pool(
    url: &str,
    max_connections: u32,
    config: &DatabaseConfig,
    application_name: &str,
) -> anyhow::Result<PgPool> {
    Ok(pool_options(config)
        .max_connections(max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(check_url(url)?.application_name(application_name)))
}

/// The configured database, or the private cluster when none is configured (and
/// `database.embedded` allows it).
pub async fn connect(
    config: &DatabaseConfig,
    migrate: bool,
    user: ClusterUser,
) -> anyhow::Result<Database> {
    let (url, embedded, description) = match &config.url {
        Some(url) => (url.clone(), None, redact(url)),
        None if config.embedded => {
            let dir = match &config.embedded_data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir()?,
            };
            let pg =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::open(&dir, user)).await??;
            let url = format!(
                "postgres://postgres@127.0.0.1:{}/{EMBEDDED_DATABASE}",
                pg.port()
            );
            let description = format!("the private cluster in {} ({url})", pg.data_dir().display());
            (url, Some(pg), description)
        }
        None => bail!(
            "no database is configured: set DATABASE_URL (or database.url), or allow the private \
             cluster with database.embedded = true"
        ),
    };
    let pool =
        connect_with_retries(&url, config.listen_url.as_deref().unwrap_or(&url), config).await?;
    let listen_pool = match &config.listen_url {
        Some(listen_url) => {
            tracing::info!(
                "direct connection (LISTEN, migrations): {}",
                redact(listen_url)
            );
            // One session for LISTEN, one for migrations at start.
            Some(lazy_pool(listen_url, 2, config, "orchestrator-listen")?)
        }
        None => None,
    };
    if migrate {
        // The migrator holds a session advisory lock across its transactions, which a pooler
        // in transaction mode would hand to whichever session ran that statement.
        MIGRATOR
            .run(listen_pool.as_ref().unwrap_or(&pool))
            .await
            .context("applying migrations")?;
        tracing::info!(applied = MIGRATOR.iter().count(), "migrations up to date");
    }
    let read_pool = match &config.read_url {
        Some(read_url) => {
            tracing::info!("read replica: {}", redact(read_url));
            Some(lazy_pool(
                read_url,
                config.max_connections,
                config,
                "orchestrator-reads",
            )?)
        }
        None => None,
    };
    Ok(Database {
        pool,
        read_pool,
        listen_pool,
        embedded,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_accepted() {
        assert!(check_url("postgres://u@h/db").is_ok());
        assert!(check_url("postgresql://u@h:5433/db").is_ok());
        let e = check_url("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(e.contains("`mysql`") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn the_private_clusters_directory_must_be_absolute() {
        let with = |dir: &str| DatabaseConfig {
            embedded_data_dir: Some(PathBuf::from(dir)),
            ..DatabaseConfig::default()
        };
        let problems = with(".orchestrator/pgdata").problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(format!("{problems:?}").contains("database.embedded_data_dir"));
        assert!(with("/var/lib/orchestrator/pgdata").problems().is_empty());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orch"),
            "postgres://app:***@db:5432/orch"
        );
        assert_eq!(
            redact("postgres://postgres@localhost/orch"),
            "postgres://postgres@localhost/orch"
        );
    }
}
