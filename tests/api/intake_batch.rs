//! Group commit at intake: concurrent requests for the queue are filed a batch per commit, each
//! answered after its batch committed, with keys, history and replays as for one job alone.

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use orchestrator::{
    model::{Mode, Principal},
    store::{IntakeJob, OwnedKeyClaim, RanInline},
};

use crate::helpers::{Spawn, TestApp, eventually, job_id, spawn};

async fn app() -> TestApp {
    spawn(Spawn {
        configure: Box::new(|c| c.rate_limits.per_key = orchestrator::limits::Rate::OFF),
        ..Default::default()
    })
    .await
}

/// A `system.echo` job as the intake files it, for the store's statement called directly.
fn echo_job(inputs: Value, key: Option<OwnedKeyClaim>, ran: Option<RanInline>) -> IntakeJob {
    IntakeJob {
        id: uuid::Uuid::now_v7(),
        intent: "system.echo".into(),
        mode: Mode::Agent,
        requested_mode: Mode::Auto,
        priority: 0,
        max_attempts: 1,
        attempt_timeout_ms: 1000,
        inputs,
        callback_url: None,
        principal: Principal::anonymous(),
        run_at: None,
        schedule_id: None,
        key,
        ran,
    }
}

async fn burst(app: &TestApp, bodies: Vec<(Option<String>, Value)>) -> Vec<(StatusCode, Value)> {
    stream::iter(bodies)
        .map(|(key, body)| {
            let mut request = app.client.post(format!("{}/orchestrate", app.base));
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            async move {
                let resp = request.json(&body).send().await.unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

#[tokio::test]
async fn a_burst_of_async_requests_is_filed_in_batches_and_every_job_runs_once() {
    let app = app().await;
    let bodies = (0..300)
        .map(|i| {
            let key = (i % 3 == 0).then(|| format!("burst-{i}"));
            (
                key,
                json!({"intent": "system.echo", "inputs": {"n": i}, "async": true}),
            )
        })
        .collect();
    let answers = burst(&app, bodies).await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::ACCEPTED),
        "{:?}",
        answers.iter().find(|(s, _)| *s != StatusCode::ACCEPTED)
    );
    let done = eventually(std::time::Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            .fetch_one(app.pool())
            .await
            .unwrap()
            == 300
    })
    .await;
    assert!(done, "every job ran");
    let (jobs, keys, created, commits, finishes): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM idempotency_keys),
                (SELECT count(*) FROM audit_events WHERE kind = 'created'),
                (SELECT count(DISTINCT xact) FROM audit_events WHERE kind = 'created'),
                (SELECT count(*) FROM audit_events WHERE kind = 'succeeded')",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((jobs, keys, created, finishes), (300, 100, 300, 300));
    assert!(
        commits < jobs,
        "64 clients at once share commits: {commits} commits for {jobs} jobs"
    );
}

#[tokio::test]
async fn one_key_sent_many_times_at_once_files_one_job() {
    let app = app().await;
    let bodies = (0..40)
        .map(|_| {
            (
                Some("the-same-key".to_owned()),
                json!({"intent": "system.echo", "inputs": {"n": 1}, "async": true}),
            )
        })
        .collect();
    let answers = burst(&app, bodies).await;
    let ids: Vec<String> = answers
        .iter()
        .map(|(s, body)| {
            assert!(s.is_success(), "{s} {body}");
            job_id(body)
        })
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one job answers all: {ids:?}"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

/// Waited-for calls whose tool writes nothing (`system.echo`) are filed final in the intake's
/// batches: each answered with its result only after its batch committed, each with the history
/// of a job run at once (`created` into `running`, then `succeeded`, attempt 1) and its times.
#[tokio::test]
async fn a_burst_of_waited_for_calls_that_write_nothing_is_filed_final_in_batches() {
    let app = app().await;
    let bodies = (0..200)
        .map(|i| {
            let key = (i % 4 == 0).then(|| format!("sync-{i}"));
            (key, json!({"intent": "system.echo", "inputs": {"n": i}}))
        })
        .collect();
    let answers = burst(&app, bodies).await;
    let mut echoed: Vec<i64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(body["status"], "success", "{body}");
            body["result"]["n"].as_i64().expect("its own inputs echoed")
        })
        .collect();
    echoed.sort_unstable();
    assert_eq!(
        echoed,
        (0..200).collect::<Vec<_>>(),
        "each answer is its own"
    );
    let (jobs, finished, keys, histories, commits): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs),
                (SELECT count(*) FROM jobs
                 WHERE status = 'succeeded' AND attempts = 1 AND result IS NOT NULL
                   AND created_at <= started_at AND started_at <= finished_at
                   AND duration_ms >= 0 AND lease_owner IS NULL),
                (SELECT count(*) FROM idempotency_keys),
                (SELECT count(*) FROM jobs j
                 WHERE (SELECT array_agg(kind || ':' || to_status || ':' || attempt
                                         || ':' || (instance_id IS NOT NULL) ORDER BY id)
                        FROM audit_events e WHERE e.job_id = j.id)
                       = ARRAY['created:running:1:true', 'succeeded:succeeded:1:true']),
                (SELECT count(DISTINCT xact) FROM audit_events WHERE kind = 'created')",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((jobs, finished, keys, histories), (200, 200, 50, 200));
    assert!(
        commits < jobs,
        "64 clients at once share commits: {commits} commits for {jobs} jobs"
    );
    // Each answer is the job's stored result.
    for (_, body) in answers.iter().take(5) {
        let job = app.job(&job_id(body)).await;
        assert_eq!(job["result"], body["result"], "{job}");
    }
}

/// `memory.write` at once writes its item with its job, in the batch's statement: a burst of
/// distinct writes shares commits, and each item lands under its own finished job, in the
/// job's transaction.
#[tokio::test]
async fn a_burst_of_memory_writes_is_filed_with_their_items_in_batches() {
    let app = app().await;
    let bodies = (0..120)
        .map(|i| {
            let tags = json!(["Burst ", format!("t{}", i % 3)]);
            let inputs = json!({"text": format!("note number {i}"), "tags": tags});
            (None, json!({"intent": "memory.write", "inputs": inputs}))
        })
        .collect();
    let answers = burst(&app, bodies).await;
    let items: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(body["result"]["status"], "stored", "{body}");
            assert_eq!(body["result"]["tags"][0], "burst", "{body}");
            body["result"]["item_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let (jobs, with_item, answered, commits): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'succeeded'),
                (SELECT count(*) FROM memory_items m JOIN jobs j ON j.id = m.source_job_id
                 WHERE j.xmin = m.xmin AND j.result->>'item_id' = 'mem_' || replace(m.id::text, '-', '')
                   AND m.text LIKE 'note number %' AND m.tags[1] = 'burst'),
                (SELECT count(*) FROM memory_items
                 WHERE 'mem_' || replace(id::text, '-', '') = ANY($1)),
                (SELECT count(DISTINCT xmin::text) FROM jobs)",
    )
    .bind(&items)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((jobs, with_item, answered), (120, 120, 120));
    assert!(commits < jobs, "{commits} commits for {jobs} writes");
}

/// The intake writes two batches at once, so two of one instance's batches (like two
/// instances') can claim the same keys. Ordered by key, they wait on each other instead of
/// deadlocking (in reverse order they deadlock: checked), and each key files exactly one job.
#[tokio::test]
async fn two_batches_claiming_the_same_keys_at_once_file_one_job_per_key() {
    let db = crate::helpers::TestDb::new().await;
    let store = orchestrator::store::Store::new(db.pool.clone());
    let batch = |tag: &str| -> Vec<IntakeJob> {
        (0..50)
            .map(|k| {
                // Zero-padded: the batch is in key order, as the filer sorts it.
                let key = OwnedKeyClaim {
                    scope: String::new(),
                    key: format!("shared-{k:03}"),
                    request_hash: vec![1],
                    derived: false,
                    ttl_secs: 3600.0,
                };
                echo_job(json!({"batch": tag, "key": k}), Some(key), None)
            })
            .collect()
    };
    for round in 0..10 {
        let (first, second) = (batch("a"), batch("b"));
        let (a, b) = tokio::join!(
            store.insert_intake_jobs(&first),
            store.insert_intake_jobs(&second)
        );
        let (a, b) = (a.expect("no deadlock"), b.expect("no deadlock"));
        assert_eq!(a.len() + b.len(), 50, "round {round}: one job per key");
        sqlx::query("DELETE FROM idempotency_keys")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let (jobs, keys): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT inputs->>'key') FROM jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (jobs, keys),
        (500, 50),
        "ten rounds of one job for each of 50 keys"
    );
}

/// A batch with neither keys nor memory items is written by the statement's shorter form; one
/// key or one item anywhere in a batch must bring the full form, or that key or item would be
/// dropped while its job was filed.
#[tokio::test]
async fn one_key_or_one_memory_item_anywhere_in_a_batch_is_written_with_it() {
    let db = crate::helpers::TestDb::new().await;
    let store = orchestrator::store::Store::new(db.pool.clone());
    let key = OwnedKeyClaim {
        scope: String::new(),
        key: "the-only-key".into(),
        request_hash: vec![1],
        derived: false,
        ttl_secs: 3600.0,
    };
    let remembered = RanInline {
        instance: uuid::Uuid::now_v7(),
        outcome: orchestrator::store::InlineOutcome::Succeeded(json!({})),
        duration_ms: 0,
        memory: Some(orchestrator::store::MemoryItemWithJob {
            id: orchestrator::ids::MemoryId::new(),
            text: "the only item".into(),
            tags: vec!["batch".into()],
            metadata: json!({}),
        }),
    };
    let plain: Vec<IntakeJob> = (0..3)
        .map(|n| echo_job(json!({"n": n}), None, None))
        .collect();
    let mut keyed = plain.clone();
    keyed.iter_mut().for_each(|j| j.id = uuid::Uuid::now_v7());
    keyed[2].key = Some(key);
    let mut with_item = plain.clone();
    with_item
        .iter_mut()
        .for_each(|j| j.id = uuid::Uuid::now_v7());
    with_item[2].ran = Some(remembered);
    for batch in [&plain, &keyed, &with_item] {
        assert_eq!(store.insert_intake_jobs(batch).await.unwrap().len(), 3);
    }
    let key_job: uuid::Uuid =
        sqlx::query_scalar("SELECT job_id FROM idempotency_keys WHERE key = 'the-only-key'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(key_job, keyed[2].id, "the key names its job");
    let item_job: uuid::Uuid =
        sqlx::query_scalar("SELECT source_job_id FROM memory_items WHERE text = 'the only item'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        item_job, with_item[2].id,
        "the item is written under its job"
    );
    let (jobs, keys, items): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM idempotency_keys), \
                (SELECT count(*) FROM memory_items)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((jobs, keys, items), (9, 1, 1));
}

/// The intake's statement writes history without the live streams' NOTIFY (a notifying
/// commit holds PostgreSQL's notification-queue lock, so concurrent batches would commit one
/// after another); the filer sends it after the commit. Notifications arrive in commit order,
/// so a NOTIFY sent after the statement is heard first only if the statement sent none.
#[tokio::test]
async fn the_intake_statement_leaves_the_streams_notify_to_after_its_commit() {
    let db = crate::helpers::TestDb::new().await;
    let store = orchestrator::store::Store::new(db.pool.clone());
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("orch_events").await.unwrap();
    let finished = RanInline {
        instance: uuid::Uuid::now_v7(),
        outcome: orchestrator::store::InlineOutcome::Succeeded(json!({})),
        duration_ms: 0,
        memory: None,
    };
    let filed = store
        .insert_intake_jobs(&[
            echo_job(json!({}), None, None),
            echo_job(json!({}), None, Some(finished)),
        ])
        .await
        .unwrap();
    assert_eq!(filed.len(), 2);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 3, "created, created, succeeded");
    sqlx::query("SELECT pg_notify('orch_events', 'after')")
        .execute(&db.pool)
        .await
        .unwrap();
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("the NOTIFY sent after the statement is heard")
        .unwrap();
    assert_eq!(heard.payload(), "after", "the statement itself notified");
}

/// The sessions of the writer's pool (named `held-writer`) on the test database.
async fn writer_sessions(db: &crate::helpers::TestDb) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'held-writer' ORDER BY pid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// A batch writer keeps one connection from batch to batch (sqlx would otherwise test it with
/// a round trip on every return to the pool), gives it back when it goes idle, and a connection
/// the database closed under it fails the one statement that found out and is replaced for the
/// next.
#[tokio::test]
async fn a_batch_writer_keeps_its_connection_between_batches_and_gives_it_back_when_idle() {
    let db = crate::helpers::TestDb::new().await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone().application_name("held-writer"))
        .await
        .unwrap();
    let store = orchestrator::store::Store::new(pool.clone());
    let mut writer = store.held_connection();
    assert!(!writer.holds(), "nothing is taken before the first batch");

    let mut pids = Vec::new();
    for round in 0..5 {
        let filed = store
            .insert_intake_jobs_on(
                &mut writer,
                &[echo_job(json!({"round": round}), None, None)],
            )
            .await
            .unwrap();
        assert_eq!(filed.len(), 1);
        assert!(writer.holds());
        assert_eq!(
            pool.num_idle(),
            pool.size() as usize - 1,
            "the writer's connection is out"
        );
        pids.push(writer_sessions(&db).await);
    }
    assert_eq!(pids[0].len(), 1, "one session: {pids:?}");
    assert!(
        pids.iter().all(|p| p == &pids[0]),
        "the same session every batch: {pids:?}"
    );

    // Closed by the database: the statement that meets it fails; the next gets a new session.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pids[0][0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(killed);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            writer_sessions(&db).await.is_empty()
        })
        .await,
        "the session ended"
    );
    let met = store
        .insert_intake_jobs_on(
            &mut writer,
            &[echo_job(json!({"after": "kill"}), None, None)],
        )
        .await;
    assert!(met.is_err(), "the closed session cannot write");
    assert!(
        !writer.holds(),
        "a connection whose statement failed is given back"
    );
    store
        .insert_intake_jobs_on(
            &mut writer,
            &[echo_job(json!({"after": "kill"}), None, None)],
        )
        .await
        .expect("a new session writes");
    let now = writer_sessions(&db).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now, pids[0], "a new session");

    // Idle: the connection goes back, and the pool can close (a held one would keep it open).
    writer.release();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            pool.num_idle() == pool.size() as usize
        })
        .await,
        "the released connection is back in the pool"
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), pool.close())
        .await
        .expect("the pool closes");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 6, "five batches and the one after the kill");

    // A pool of a few connections is left to the requests: its writers hold none.
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let store = orchestrator::store::Store::new(small);
    let mut writer = store.held_connection();
    store
        .insert_intake_jobs_on(
            &mut writer,
            &[echo_job(json!({"pool": "small"}), None, None)],
        )
        .await
        .unwrap();
    assert!(
        !writer.holds(),
        "a small pool's writer gives its connection back each time"
    );
}
