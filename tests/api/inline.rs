//! Requests filed, run and finished in one transaction: a waited-for call whose whole effect is
//! SQL (the memory tools, `system.echo`) commits once, with the same history, idempotency and
//! crash guarantees as a job that takes the claim/lease path.

use std::time::Duration;

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestDb, eventually, job_id, spawn_app},
    process::{Invocation, free_port, ready_within},
};

/// The transactions that wrote the job row, its `created` event and its memory item.
async fn writers(pool: &sqlx::PgPool, id: &str) -> (i64, i64, Option<i64>) {
    sqlx::query_as(
        "SELECT j.xmin::text::bigint,
                (SELECT xact % 4294967296 FROM audit_events
                 WHERE job_id = j.id AND kind = 'created'),
                (SELECT m.xmin::text::bigint FROM memory_items m WHERE m.source_job_id = j.id)
         FROM jobs j WHERE j.id = $1::uuid",
    )
    .bind(id.trim_start_matches("job_"))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn history(pool: &sqlx::PgPool, id: &str) -> Vec<(String, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT kind, to_status::text, attempt FROM audit_events
         WHERE job_id = $1::uuid ORDER BY id",
    )
    .bind(id.trim_start_matches("job_"))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_waited_for_memory_write_is_one_commit_with_the_usual_history() {
    let app = spawn_app().await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "one commit"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let id = job_id(&body);

    let (job, created, item) = writers(app.pool(), &id).await;
    assert_eq!(
        created, job,
        "the job row and its first event: one transaction"
    );
    assert_eq!(item, Some(job), "the memory item too");
    assert_eq!(
        history(app.pool(), &id).await,
        vec![
            ("created".into(), Some("running".into()), 1),
            ("succeeded".into(), Some("succeeded".into()), 1),
        ]
    );
    let job = app.job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["result"]["status"], "stored", "{job}");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    // The same write again is answered from the first (its derived key), not stored twice.
    let (_, again) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "one commit"}}))
        .await;
    assert_eq!(job_id(&again), id);
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM memory_items")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(items, 1);
}

/// The one commit carries no NOTIFY (it would serialize commits); the instance sends the live
/// streams' `orch_events` NOTIFY right after it, so every instance's streams hear at once.
#[tokio::test]
async fn the_live_streams_notify_follows_a_one_commit_job() {
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect(&app.db.url)
        .await
        .unwrap();
    listener.listen("orch_events").await.unwrap();
    for i in 0..3 {
        let (status, body) = app
            .orchestrate_json(json!({"intent": "system.echo", "inputs": {"i": i}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
        assert!(
            matches!(heard, Ok(Ok(_))),
            "orch_events after request {i}: {heard:?}"
        );
        // Whatever else came with it is not the next request's.
        while listener.next_buffered().is_some() {}
    }
}

#[tokio::test]
async fn jobs_not_waited_for_or_with_a_callback_take_the_queue() {
    let app = spawn_app().await;
    let (status, body) = app
        .orchestrate_json(
            json!({"intent": "memory.write", "inputs": {"text": "queued"}, "async": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    app.wait_for_status(&id, "succeeded").await;
    let (job, created, _) = writers(app.pool(), &id).await;
    assert_ne!(
        created, job,
        "filed, then finished by a worker in another transaction"
    );
    let kinds: Vec<String> = history(app.pool(), &id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(kinds, ["created", "claimed", "succeeded"]);
}

#[tokio::test]
async fn a_call_that_fails_is_recorded_failed_and_leaves_nothing_else() {
    let app = spawn_app().await;
    let missing = "mem_0000000000000000000000000000abcd";
    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.get", "inputs": {"item_id": missing}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let id = job_id(&body);
    assert_eq!(
        history(app.pool(), &id).await,
        vec![
            ("created".into(), Some("running".into()), 1),
            ("failed".into(), Some("failed".into()), 1),
        ]
    );
    let detail: Value = sqlx::query_scalar(
        "SELECT detail FROM audit_events WHERE job_id = $1::uuid AND kind = 'failed'",
    )
    .bind(id.trim_start_matches("job_"))
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(detail["code"], "not_found", "{detail}");
}

#[tokio::test]
async fn the_same_write_sent_at_once_from_many_clients_is_stored_once() {
    let app = spawn_app().await;
    let ids: Vec<String> = stream::iter(0..24)
        .map(|_| {
            let app = &app;
            async move {
                let (status, body) = app
                    .orchestrate_json(
                        json!({"intent": "memory.write", "inputs": {"text": "raced write"}}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                job_id(&body)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one job answers all: {ids:?}"
    );
    let (jobs, items): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM memory_items)")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!((jobs, items), (1, 1));
}

/// The real binary, killed with SIGKILL while 32 clients write; clients then retry every
/// request with its idempotency key against a restarted server.
#[tokio::test]
async fn kill_9_mid_request_loses_nothing_and_stores_nothing_twice() {
    let db = TestDb::new().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Invocation::default()
        .env("DATABASE_URL", &db.url)
        .env("ORCH__DATABASE__EMBEDDED", "false")
        .env("ORCH__RATE_LIMITS__PER_KEY__RATE", "0")
        .env("RUST_LOG", "warn");
    let listen = format!("127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let up = || ready_within(&client, &base, Duration::from_secs(30));
    let write = |i: usize| {
        let request = client
            .post(format!("{base}/orchestrate"))
            .header("Idempotency-Key", format!("write-{i}"))
            .json(&json!({"intent": "memory.write", "inputs": {"text": format!("note {i}")}}));
        async move {
            match request.send().await {
                Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    const N: usize = 600;

    let mut first = server.serve(&listen);
    assert!(up().await, "the server came up");
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let killer = async {
        eventually(Duration::from_secs(60), || async {
            answered.load(std::sync::atomic::Ordering::SeqCst) >= N / 4
        })
        .await;
        first.kill().await;
    };
    let load = stream::iter(0..N)
        .map(|i| {
            let answered = &answered;
            let write = &write;
            async move {
                let got = write(i).await;
                if got.is_some() {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                got
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let (first_round, ()) = tokio::join!(load, killer);
    let before = first_round.iter().flatten().count();
    assert!(
        (N / 4..N).contains(&before),
        "killed mid-load: {before} of {N} answered"
    );

    let _restarted = server.serve(&listen);
    assert!(up().await, "the server came back");
    let answers: Vec<Value> = stream::iter(0..N)
        .map(&write)
        .buffer_unordered(32)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    assert_eq!(answers.len(), N, "every request answered after the restart");
    assert!(answers.iter().all(|a| a["status"] == "success"));

    let (jobs, keys, items, texts, finishes, not_once): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobs),
                    (SELECT count(*) FROM idempotency_keys),
                    (SELECT count(*) FROM memory_items),
                    (SELECT count(DISTINCT text) FROM memory_items),
                    (SELECT count(*) FROM audit_events WHERE to_status = 'succeeded'),
                    (SELECT count(*) FROM jobs WHERE attempts <> 1 OR status <> 'succeeded')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (jobs, keys, items, texts, finishes, not_once),
        (N as i64, N as i64, N as i64, N as i64, N as i64, 0),
        "one job, key, item and finish per request"
    );
}

/// A request dropped while its transaction is being begun (the client hung up) must not leave
/// the connection inside that transaction: later statements on it would join it unseen.
#[tokio::test]
async fn a_request_dropped_while_its_transaction_begins_leaves_no_transaction_open() {
    let db = crate::helpers::TestDb::new().await;
    // One connection, so every round and every check uses the same one.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let store = orchestrator::store::Store::new(pool.clone());
    for round in 0..120 {
        let mut tx = store.begin_inline();
        // Dropped after a few polls: the first sends BEGIN; the answer may or may not have
        // been read by the time the request goes away.
        {
            let call = tx.get_memory(orchestrator::ids::MemoryId::new());
            tokio::pin!(call);
            for _ in 0..=(round % 12) {
                if futures::poll!(call.as_mut()).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        // Two statements in a row get two transaction ids unless they run inside one.
        let (first, second): (String, String) = sqlx::query_as(
            "SELECT (SELECT pg_current_xact_id()::text), (SELECT pg_current_xact_id()::text)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(first, second, "one statement, one transaction");
        let again: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_ne!(
            again, first,
            "round {round}: the connection was left in a transaction"
        );
    }
}
