//! `database.read_url`: listings and the dashboard read from a real streaming replica (a second
//! cluster made with `pg_basebackup` from a private primary), while a job by id — the caller's
//! own write, right after its 202 — is read from the primary.

use std::{path::Path, process::Command, time::Duration};

use orchestrator::db::embedded::EmbeddedPostgres;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::{
    helpers::{Spawn, TestApp, eventually, job_id, prerequisite, spawn},
    process::free_port,
};

/// Runs a PostgreSQL program as the `postgres` OS user when we are root (it refuses root).
fn as_postgres(bin: &Path, program: &str, args: &[&str]) {
    let root = nix::unistd::Uid::effective().is_root();
    // The server's directory may hold only initdb and pg_ctl: the rest from Debian's layout.
    let bin = if bin.join(program).is_file() {
        bin.to_owned()
    } else {
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|v| v.path().join("bin"))
            .find(|b| b.join(program).is_file())
            .unwrap_or_else(|| panic!("{program} is not installed"))
    };
    let bin = bin.as_path();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let out = cmd.args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A standby of the cluster on `primary_port`, stopped when dropped.
struct Replica {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Replica {
    fn start(bin: &Path, primary_port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("orch-replica-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("pgdata");
        if nix::unistd::Uid::effective().is_root() {
            Command::new("chown")
                .args(["postgres:", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
        }
        let data = data.to_str().unwrap();
        let primary_port = primary_port.to_string();
        as_postgres(
            bin,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        let port = free_port();
        as_postgres(
            bin,
            "pg_ctl",
            &[
                "-D",
                data,
                "-w",
                "-l",
                &format!("{data}/server.log"),
                "-o",
                // A hot standby needs at least the primary's max_connections.
                &format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
                     -c max_connections=300"
                ),
                "start",
            ],
        );
        Self {
            bin: bin.to_owned(),
            dir,
            port,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let data = self.dir.path().join("pgdata");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

async fn listed(app: &TestApp, id: &str) -> bool {
    let (status, page) = app.get_json("/jobs?limit=50").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["job_id"] == id)
}

#[tokio::test]
async fn listings_read_the_replica_and_a_job_by_id_reads_the_primary() {
    let Some(bin) = EmbeddedPostgres::find_binaries() else {
        prerequisite(
            false,
            "PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup)",
        );
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("orch-primary-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("pgdata");
    let mut primary = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data, true))
        .await
        .unwrap()
        .expect("the primary starts");
    let primary_url = format!("postgres://postgres@127.0.0.1:{}", primary.port());
    let mut admin = sqlx::PgConnection::connect(&format!("{primary_url}/postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE orch")
        .execute(&mut admin)
        .await
        .unwrap();
    let primary_port = primary.port();
    let replica = tokio::task::spawn_blocking(move || Replica::start(&bin, primary_port))
        .await
        .unwrap();
    let replica_url = format!("postgres://postgres@127.0.0.1:{}/orch", replica.port);

    let db = crate::helpers::TestDb {
        url: format!("{primary_url}/orch"),
        pool: sqlx::PgPool::connect(&format!("{primary_url}/orch"))
            .await
            .unwrap(),
    };
    orchestrator::db::MIGRATOR.run(&db.pool).await.unwrap();
    let read_url = replica_url.clone();
    let app = spawn(Spawn {
        db: Some(db),
        configure: Box::new(move |c| c.database.read_url = Some(read_url)),
        ..Default::default()
    })
    .await;
    let mut standby = sqlx::PgConnection::connect(&replica_url).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut standby)
        .await
        .unwrap();
    assert!(in_recovery, "a real standby");

    // The replica has replayed the migrations (a listing before that would read a standby
    // without the tables: answered by the primary, see below, but not what this part tests).
    let primary_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let replayed = |standby_url: String, lsn: String| async move {
        let mut standby = sqlx::PgConnection::connect(&standby_url).await.unwrap();
        sqlx::query_scalar::<_, bool>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(lsn)
            .fetch_one(&mut standby)
            .await
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(30), || replayed(
            replica_url.clone(),
            primary_lsn.clone()
        ))
        .await,
        "the replica replays the migrations"
    );

    // Replay paused: the replica stops at what it has.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut standby)
        .await
        .unwrap();
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"n": 1}, "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    // Its own write, at once: from the primary.
    let (status, job) = app.get_json(&format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert!(
        !listed(&app, &id).await,
        "the listing reads the paused replica"
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut standby)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || listed(&app, &id)).await,
        "the listing shows the job once the replica replayed it"
    );

    // The replica goes down: listings are answered by the primary, not failed.
    drop(standby);
    drop(replica);
    assert!(listed(&app, &id).await, "the primary answers the listing");
    assert!(
        listed(&app, &id).await,
        "and the next one, skipping the replica"
    );
    let metrics = app.get_text("/metrics").await;
    let fallbacks: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orchestrator_replica_fallbacks_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the fallback is counted: {metrics}"));
    assert!(fallbacks >= 1.0, "{fallbacks}");
    drop(app);
    tokio::task::spawn_blocking(move || primary.stop())
        .await
        .unwrap();
}
