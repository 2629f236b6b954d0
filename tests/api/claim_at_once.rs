//! Queued jobs whose call runs no statement and reaches nothing outside the database
//! (`system.echo`, `memory.write`) are run and finished during their claim, in the claim's
//! transaction: one update per job instead of a lease and a completion, the same history, and
//! a crash before the commit leaves them queued with nothing of their run.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestDb, eventually, job_id, spawn_app},
    process::{Invocation, free_port, ready_within},
};

/// Each event of the job: kind, and whether it was written by the transaction that wrote the
/// job row as it is now.
async fn history(pool: &sqlx::PgPool, id: &str) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT e.kind, e.xact % 4294967296 = j.xmin::text::bigint
         FROM audit_events e JOIN jobs j ON j.id = e.job_id
         WHERE e.job_id = $1::uuid ORDER BY e.id",
    )
    .bind(id.trim_start_matches("job_"))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn queue(app: &crate::helpers::TestApp, body: Value) -> String {
    let (status, answer) = app.orchestrate_json(body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = job_id(&answer);
    let done = eventually(Duration::from_secs(30), || async {
        app.job(&id).await["finished_at"].is_string()
    })
    .await;
    assert!(done, "{id} finished");
    id
}

#[tokio::test]
async fn queued_calls_that_run_no_statement_finish_in_their_claims_transaction() {
    let app = spawn_app().await;

    let echo = queue(
        &app,
        json!({"intent": "system.echo", "inputs": {"n": 1}, "async": true}),
    )
    .await;
    assert_eq!(
        history(app.pool(), &echo).await,
        vec![
            ("created".into(), false),
            ("claimed".into(), true),
            ("succeeded".into(), true),
        ],
        "claimed and finished with the job row, in one transaction after the intake's"
    );
    let job = app.job(&echo).await;
    assert_eq!(
        (&job["status"], &job["attempts"], &job["result"]),
        (&json!("succeeded"), &json!(1), &json!({"n": 1})),
        "{job}"
    );
    assert!(job["started_at"].is_string(), "{job}");
    let lease: (Option<uuid::Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT lease_owner, lease_expires_at FROM jobs WHERE id = $1::uuid")
            .bind(echo.trim_start_matches("job_"))
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(lease, (None, None), "no lease was taken");

    let write = queue(
        &app,
        json!({"intent": "memory.write", "inputs": {"text": "queued note", "tags": ["Q"]},
               "async": true}),
    )
    .await;
    assert_eq!(
        history(app.pool(), &write).await,
        vec![
            ("created".into(), false),
            ("claimed".into(), true),
            ("succeeded".into(), true),
        ]
    );
    let item: (String, Vec<String>, bool) = sqlx::query_as(
        "SELECT m.text, m.tags, m.xmin = j.xmin
         FROM memory_items m JOIN jobs j ON j.id = m.source_job_id WHERE j.id = $1::uuid",
    )
    .bind(write.trim_start_matches("job_"))
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        item,
        ("queued note".into(), vec!["q".into()], true),
        "the item, written with its job"
    );
    let answer = app.job(&write).await;
    let (_, found) = app
        .orchestrate_json(json!({"intent": "memory.get",
                                  "inputs": {"item_id": answer["result"]["item_id"]}}))
        .await;
    assert_eq!(found["result"]["text"], "queued note", "{found}");

    // A call that runs statements of its own takes a lease: claimed in one transaction,
    // finished by the completion in another.
    let get = queue(
        &app,
        json!({"intent": "memory.get",
               "inputs": {"item_id": "mem_0192f3a4b5c67d8e9f00112233445566"}, "async": true}),
    )
    .await;
    assert_eq!(
        history(app.pool(), &get).await,
        vec![
            ("created".into(), false),
            ("claimed".into(), false),
            ("failed".into(), true),
        ]
    );
}

/// The real binary drains queued `memory.write` jobs and is killed with SIGKILL mid-drain; a
/// restarted one drains the rest. Every job ran once: attempt 1, one `claimed` and one
/// `succeeded` event, one item, all in the job's own final transaction.
#[tokio::test]
async fn kill_9_mid_drain_leaves_every_job_run_once_with_one_item() {
    const N: usize = 3000;
    let db = TestDb::new().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let server = |slots: &str| {
        Invocation::default()
            .env("DATABASE_URL", &db.url)
            .env("ORCH__DATABASE__EMBEDDED", "false")
            .env("ORCH__RATE_LIMITS__PER_KEY__RATE", "0")
            .env("ORCH__WORKERS__CONCURRENCY", slots)
            .env("ORCH__WORKERS__CLAIM_BATCH", "4")
            .env("ORCH__WORKERS__PREFETCH", "0")
            .env("RUST_LOG", "warn")
    };
    let client = reqwest::Client::new();
    let up = || ready_within(&client, &base, Duration::from_secs(30));
    let succeeded = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap() as usize
    };

    // Filed by an instance that runs nothing.
    let mut filer = server("0").serve(&listen);
    assert!(up().await, "the filing server came up");
    let filed = stream::iter(0..N)
        .map(|i| {
            client
                .post(format!("{base}/orchestrate"))
                .json(
                    &json!({"intent": "memory.write", "inputs": {"text": format!("note {i}")},
                              "async": true}),
                )
                .send()
        })
        .buffer_unordered(32)
        .filter(|r| {
            let accepted = r.as_ref().is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
            async move { accepted }
        })
        .count()
        .await;
    assert_eq!(filed, N);
    filer.kill().await;

    let mut drainer = server("4").serve(&listen);
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let done = succeeded().await;
        if done >= N / 4 {
            drainer.kill().await;
            break succeeded().await;
        }
        assert!(
            Instant::now() < deadline,
            "the drain started: {done} of {N}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(at_kill < N, "killed mid-drain: {at_kill} of {N} done");

    let _restarted = server("64").serve(&listen);
    let all = eventually(Duration::from_secs(120), || async {
        succeeded().await == N
    })
    .await;
    assert!(all, "every job finished after the restart");

    let (jobs, not_once, claims, finishes, items, item_jobs, not_one_transaction): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs),
                (SELECT count(*) FROM jobs WHERE attempts <> 1 OR status <> 'succeeded'
                                              OR lease_owner IS NOT NULL),
                (SELECT count(*) FROM audit_events WHERE kind = 'claimed'),
                (SELECT count(*) FROM audit_events WHERE kind = 'succeeded'),
                (SELECT count(*) FROM memory_items),
                (SELECT count(DISTINCT source_job_id) FROM memory_items),
                (SELECT count(*) FROM jobs j
                 WHERE (SELECT count(*) FROM audit_events e
                        WHERE e.job_id = j.id AND e.kind IN ('claimed', 'succeeded')
                          AND e.xact % 4294967296 = j.xmin::text::bigint) <> 2
                    OR NOT EXISTS (SELECT 1 FROM memory_items m
                                   WHERE m.source_job_id = j.id AND m.xmin = j.xmin))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let n = N as i64;
    assert_eq!(
        (
            jobs,
            not_once,
            claims,
            finishes,
            items,
            item_jobs,
            not_one_transaction
        ),
        (n, 0, n, n, n, n, 0),
        "one attempt, claim, finish and item per job, each in the job's final transaction"
    );
}
