//! What the real binary does by default, as an operator (or an attacker) meets it: the auth
//! mode it announces, the one database it uses, the signing secret it keeps.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{TestDb, prerequisite},
    process::{Invocation, free_port, text},
};

const STARTED: &str = "listening";
const START_DEADLINE: Duration = Duration::from_secs(60);

fn on_test_db(db: &TestDb) -> Invocation {
    Invocation::default().env("DATABASE_URL", &db.url)
}

#[tokio::test]
async fn the_auth_mode_is_announced_at_every_start() {
    let db = TestDb::new().await;
    let run = on_test_db(&db);

    let mut served = run.serve(&format!("127.0.0.1:{}", free_port()));
    assert!(
        served.printed(STARTED, START_DEADLINE).await,
        "{}",
        served.logs()
    );
    let logs = served.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("auth: open (no API key has been created)"))
        .unwrap_or_else(|| panic!("no auth line in:\n{logs}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(!logs.contains("open to every client"), "loopback only");
    served.stop().await;

    let mut served = run.serve(&format!("0.0.0.0:{}", free_port()));
    assert!(served.printed(STARTED, START_DEADLINE).await);
    let logs = served.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("open to every client")),
        "an open API on every interface is worth a warning:\n{logs}"
    );
    served.stop().await;

    let created = run.run(&["keys", "create", "--name", "ops", "--scopes", "*"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    run.run(&["keys", "revoke", "ops"]);
    let mut served = run.serve(&format!("127.0.0.1:{}", free_port()));
    assert!(served.printed(STARTED, START_DEADLINE).await);
    let logs = served.logs();
    assert!(
        logs.contains("auth: keys required") && !logs.contains("auth: open"),
        "the revoked last key keeps the API closed:\n{logs}"
    );
    served.stop().await;
}

/// A directory the `postgres` user can enter (the private cluster runs as it under root).
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("orch-secure-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn a_configured_database_that_does_not_answer_is_an_error_never_a_second_database() {
    let scratch = scratch_dir();
    let data = scratch.path().join("pgdata");
    // Nothing listening on one port; on the other, a peer that accepts and never answers
    // (a port reused by something that is not PostgreSQL): both are errors within the
    // connect budget, never a hang.
    let closed_port = free_port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let url_of = |port: u16| format!("postgres://postgres:hunter2@127.0.0.1:{port}/orchestrator");
    let base = Invocation::default()
        .env("ORCH__DATABASE__CONNECT_TIMEOUT_MS", "600")
        .env("ORCH__DATABASE__EMBEDDED_DATA_DIR", data.to_str().unwrap());

    for (port, run) in [
        (
            closed_port,
            base.clone().env("DATABASE_URL", url_of(closed_port)),
        ),
        (
            closed_port,
            base.clone().env("ORCH__DATABASE__URL", url_of(closed_port)),
        ),
        (
            silent_port,
            base.clone().env("DATABASE_URL", url_of(silent_port)),
        ),
    ] {
        let named = format!("127.0.0.1:{port}");
        let out = run.run(&["keys", "create", "--name", "x", "--scopes", "*"]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(out.stdout.is_empty(), "no key printed");
        assert!(stderr.contains(&named), "names the database: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password stays hidden");

        let mut served = run.serve(&format!("127.0.0.1:{}", free_port()));
        let status = served
            .exited(Duration::from_secs(30))
            .await
            .expect("exits on its own");
        assert!(!status.success());
        assert!(served.logs().contains(&named), "{}", served.logs());
    }
    drop(silent);
    assert!(!data.exists(), "no private cluster was started");
}

fn cluster_running(data: &Path) -> bool {
    data.join("postmaster.pid").exists()
}

#[tokio::test]
async fn the_private_cluster_is_the_same_from_any_directory_and_has_one_server() {
    if !prerequisite(
        orchestrator::db::embedded::EmbeddedPostgres::find_binaries().is_some(),
        "PostgreSQL's server binaries (initdb, pg_ctl)",
    ) {
        return;
    }
    let scratch = scratch_dir();
    let data = scratch.path().join("pgdata");
    let dirs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|d| {
            let dir = scratch.path().join(d);
            std::fs::create_dir(&dir).unwrap();
            dir
        })
        .collect();
    let run =
        Invocation::default().env("ORCH__DATABASE__EMBEDDED_DATA_DIR", data.to_str().unwrap());

    // A command with no server running starts the cluster, says so, and stops it after.
    let out = run
        .clone()
        .cwd(&dirs[0])
        .run(&["keys", "create", "--name", "ops", "--scopes", "*"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "database: the private cluster in {}",
            data.display()
        )),
        "{stderr}"
    );
    let key = text(&out.stdout).trim().to_owned();
    assert!(
        !cluster_running(&data),
        "the command stopped what it started"
    );
    assert!(!dirs[0].join(".orchestrator").exists());

    // The server, from another directory, finds the same cluster: the key works there.
    let port = free_port();
    let mut server = run
        .clone()
        .cwd(&dirs[1])
        .serve(&format!("127.0.0.1:{port}"));
    assert!(
        server.printed(STARTED, START_DEADLINE).await,
        "{}",
        server.logs()
    );
    assert!(server.logs().contains(&data.display().to_string()));
    let client = reqwest::Client::new();
    let orchestrate = |key: Option<&str>| {
        let mut req = client
            .post(format!("http://127.0.0.1:{port}/orchestrate"))
            .json(&json!({"intent": "system.echo", "inputs": {}}));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(
        orchestrate(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        orchestrate(Some(&key)).await.unwrap().status(),
        StatusCode::OK
    );

    // A command while the server runs uses its cluster and leaves it running.
    let listed = run.clone().cwd(&dirs[2]).run(&["keys", "list"]);
    assert!(
        text(&listed.stdout).contains("ops"),
        "{}",
        text(&listed.stderr)
    );
    assert_eq!(
        orchestrate(Some(&key)).await.unwrap().status(),
        StatusCode::OK
    );

    // A second server on the same cluster is refused, clearly.
    let mut second = run
        .clone()
        .cwd(&dirs[2])
        .serve(&format!("127.0.0.1:{}", free_port()));
    let status = second
        .exited(Duration::from_secs(30))
        .await
        .expect("the second server exits");
    assert!(!status.success());
    assert!(
        second.logs().contains("already running"),
        "{}",
        second.logs()
    );
    assert_eq!(
        orchestrate(Some(&key)).await.unwrap().status(),
        StatusCode::OK
    );

    // Stopping the server stops the cluster.
    assert!(server.stop().await.success());
    assert!(!cluster_running(&data));

    // A crash leaves the cluster running; the next server adopts it and stops it on exit.
    let mut crashed = run.clone().serve(&format!("127.0.0.1:{}", free_port()));
    assert!(crashed.printed(STARTED, START_DEADLINE).await);
    crashed.kill().await;
    assert!(cluster_running(&data), "left running by the crash");
    let mut next = run.clone().serve(&format!("127.0.0.1:{port}"));
    assert!(
        next.printed(STARTED, START_DEADLINE).await,
        "{}",
        next.logs()
    );
    assert_eq!(
        orchestrate(Some(&key)).await.unwrap().status(),
        StatusCode::OK
    );
    assert!(next.stop().await.success());
    assert!(!cluster_running(&data), "the adopted cluster was stopped");
}

#[tokio::test]
async fn the_cli_prints_the_signing_secret_every_instance_uses() {
    let db = TestDb::new().await;
    let run = on_test_db(&db);
    let first = run.run(&["callbacks", "secret"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let secret = text(&first.stdout).trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(text(&first.stderr).contains("generated"));
    assert_eq!(
        text(&run.run(&["callbacks", "secret"]).stdout).trim(),
        secret,
        "generated once"
    );
    let stored: String = sqlx::query_scalar(
        "SELECT value FROM server_settings WHERE name = 'callbacks.signing_secret'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, secret);

    let configured = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let out = run
        .clone()
        .env("ORCH__CALLBACKS__SIGNING_SECRET", configured)
        .run(&["callbacks", "secret"]);
    assert_eq!(text(&out.stdout).trim(), configured, "configured wins");
    assert!(text(&out.stderr).contains("configured"));
}
