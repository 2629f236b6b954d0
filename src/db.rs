//! Reaching the database: the configured server, or a private cluster when nothing answers and
//! PostgreSQL is installed; the database is created when missing and migrations are applied.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions, PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{config::DatabaseConfig, embedded_pg::EmbeddedPostgres};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A connected pool, and the private cluster behind it if we had to start one (it stops when
/// dropped).
pub struct Database {
    pub pool: PgPool,
    pub embedded: Option<EmbeddedPostgres>,
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

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1") || host.starts_with('/')
}

/// The URL to use: the configured one when a server answers there, else a private cluster's.
pub async fn resolve_url(
    config: &DatabaseConfig,
) -> anyhow::Result<(String, Option<EmbeddedPostgres>)> {
    let opts = PgConnectOptions::from_str(&config.url)
        .with_context(|| format!("database.url {} is not a valid URL", redact(&config.url)))?;
    if server_answers(&opts).await {
        return Ok((config.url.clone(), None));
    }
    if !config.embedded || !is_local(opts.get_host()) {
        anyhow::bail!(
            "no PostgreSQL answers at {}. Start one (`docker compose up -d postgres`, or your \
             distribution's package, e.g. `apt-get install postgresql`) or set DATABASE_URL",
            redact(&config.url)
        );
    }
    let dir = config.embedded_data_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, false)).await??;
    let mut url = url::Url::parse(&config.url)?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(pg.port()))
        .map_err(|_| anyhow::anyhow!("cannot set port"))?;
    url.set_query(None);
    Ok((url.to_string(), Some(pg)))
}

/// Creates the URL's database if it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url).await? {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(url = %redact(url), "database created"),
            // Another instance created it meanwhile.
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    Ok(())
}

pub async fn connect(config: &DatabaseConfig, migrate: bool) -> anyhow::Result<Database> {
    let (url, embedded) = resolve_url(config).await?;
    ensure_database(&url).await?;
    let opts = PgConnectOptions::from_str(&url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500))
        .application_name("orchestrator");
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(2.min(config.max_connections))
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect_with(opts)
        .await
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    if migrate {
        MIGRATOR.run(&pool).await.context("applying migrations")?;
        tracing::info!(applied = MIGRATOR.iter().count(), "migrations up to date");
    }
    Ok(Database { pool, embedded })
}

#[cfg(test)]
mod tests {
    use super::*;

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
