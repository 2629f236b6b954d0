//! Behind a real PgBouncer (1.24, built by `.ci/install-pgbouncer`) in transaction pooling
//! mode: many client connections share a few server sessions, each lent for one transaction.
//! sqlx's prepared statements pass through (PgBouncer's `max_prepared_statements`); LISTEN and
//! the migrations, which need a session of their own, take the direct `database.listen_url`;
//! an instance without one says that it hears no notifications.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{Spawn, TestApp, TestDb, eventually, installed_by, spawn},
    process::{Invocation, free_port},
};

/// Server sessions PgBouncer keeps per database: far fewer than the clients' connections.
const SERVER_SESSIONS: u32 = 4;

fn bouncer_dir() -> PathBuf {
    std::env::var_os("PGBOUNCER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pgbouncer"))
}

struct PgBouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// A PgBouncer in front of `db`'s server, on a port of its own.
    async fn start(db: &TestDb) -> Self {
        let dir = bouncer_dir();
        let binary = installed_by(
            ".ci/install-pgbouncer",
            "PGBOUNCER_DIR",
            &dir,
            dir.join("bin/pgbouncer"),
        );
        let server = url::Url::parse(&db.url).unwrap();
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(work.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let ini = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             default_pool_size = {SERVER_SESSIONS}\n\
             max_client_conn = 500\n\
             max_prepared_statements = 500\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n",
            host = server.host_str().unwrap(),
            server_port = server.port().unwrap_or(5432),
            users = work.path().join("users.txt").display(),
            log = work.path().join("pgbouncer.log").display(),
        );
        let config = work.path().join("pgbouncer.ini");
        std::fs::write(&config, ini).unwrap();
        let mut command = Command::new(binary);
        // PgBouncer refuses to run as root: as root, it switches to postgres, which must be
        // able to write its log.
        if nix::unistd::Uid::effective().is_root() {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(work.path())
                .status()
                .unwrap();
            assert!(chowned.success());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "pgbouncer listens on {port}");
        Self {
            child,
            port,
            _dir: work,
        }
    }

    /// `db` through this PgBouncer.
    fn url(&self, db: &TestDb) -> String {
        let mut u = url::Url::parse(&db.url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An instance whose pool goes through `bouncer`, with a direct connection for LISTEN and
/// migrations; `workers` 0 only files jobs and answers.
async fn behind(bouncer: &PgBouncer, db: &TestDb, workers: usize) -> TestApp {
    let (url, direct) = (bouncer.url(db), db.url.clone());
    let instance = crate::instances::one_of_several(Some(db.clone()), workers, move |c| {
        c.database.url = Some(url);
        c.database.listen_url = Some(direct);
        c.database.max_connections = 16;
    });
    spawn(Spawn {
        migrate: true,
        ..instance
    })
    .await
}

#[tokio::test]
async fn the_server_runs_behind_pgbouncer_in_transaction_mode() {
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(&db).await;
    // A files and answers; B runs what A files. Both migrate at start (B finds nothing left
    // to do), through the direct connection.
    let a = behind(&bouncer, &db, 0).await;
    let b = behind(&bouncer, &db, 8).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(applied, orchestrator::db::MIGRATOR.iter().count() as i64);

    // 200 synchronous requests, 32 at a time over both instances' 32 connections, which
    // share 4 server sessions: every statement prepared on one session and run on another
    // works (without PgBouncer's prepared-statement support they fail).
    let answers: Vec<(StatusCode, serde_json::Value)> = stream::iter(0..200)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            async move {
                let body = if i % 4 < 2 {
                    json!({"intent": "memory.write", "inputs": {"text": format!("note {i}")}})
                } else {
                    json!({"intent": "system.echo", "inputs": {"text": format!("e{i}")}})
                };
                app.orchestrate_json(body).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    let items: i64 = sqlx::query_scalar("SELECT count(DISTINCT text) FROM memory_items")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(items, 100);

    // Work A files (for a tool that runs outside the database, so it is queued) wakes B's
    // workers, and B finishing it wakes A's waiting request: both through LISTEN on the
    // direct connections, well before the 5 s polls.
    crate::instances::answered_when_others_finish(&a, 12).await;
    let by_b: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE kind = 'claimed' AND instance_id = $1",
    )
    .bind(b.instance_id)
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(by_b, 12, "B ran every queued job");
    drop((a, b));
}

#[tokio::test]
async fn an_instance_whose_listen_goes_through_pgbouncer_says_it_hears_nothing() {
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(&db).await;
    let serve = |direct: Option<&str>| {
        let mut run = Invocation::default()
            .env("DATABASE_URL", bouncer.url(&db))
            .env("ORCH__DATABASE__EMBEDDED", "false")
            .env("RUST_LOG", "orchestrator=debug");
        if let Some(direct) = direct {
            run = run.env("ORCH__DATABASE__LISTEN_URL", direct);
        }
        run.serve(&format!("127.0.0.1:{}", free_port()))
    };
    // With the direct connection it hears its own probe. (This one first: the other one's
    // migrator takes its session advisory lock through PgBouncer, where the lock stays with
    // whichever server session ran the statement — the reason migrations take the direct
    // connection.)
    let mut served = serve(Some(&db.url));
    assert!(
        served
            .printed("heard its own probe", Duration::from_secs(30))
            .await,
        "{}",
        served.logs()
    );
    served.stop().await;

    // Without it, the instance says so and what to do: that it does not hear its probe, or —
    // when the session that ran LISTEN was lent to another of its connections first — that a
    // statement received a notification meant for the LISTEN.
    let mut served = serve(None);
    assert!(
        served
            .printed(
                "Set database.listen_url to a direct connection",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        served.logs()
    );
    served.stop().await;
    assert!(!served.logs().contains("heard its own probe"));
}
