//! The claim's prefetch: cheap calls are claimed ahead of the free slots, the slots still bound
//! what runs at once, and a job claimed ahead of slow calls goes back to the queue.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use orchestrator::store::Store;
use serde_json::json;

use crate::{
    helpers::{Spawn, TestDb, eventually, spawn},
    queue::enqueue_intent,
    test_tools::{Recorder, Recording},
};

async fn finished(db: &TestDb) -> i64 {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs WHERE status = 'succeeded'"#)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Jobs one claim statement took: they share its transaction's `now()` as `started_at`.
async fn biggest_claim(db: &TestDb) -> i64 {
    sqlx::query_scalar!(
        r#"SELECT max(n) AS "n!" FROM (SELECT count(*) AS n FROM jobs GROUP BY started_at) c"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// An instance running `test.record` with these slots and prefetch.
fn worker(db: &TestDb, recorder: &Arc<Recorder>, concurrency: usize, prefetch: usize) -> Spawn {
    Spawn {
        db: Some(db.clone()),
        tools: vec![Recording::new(recorder.clone())],
        configure: Box::new(move |c| {
            c.workers.concurrency = concurrency;
            c.workers.prefetch = prefetch;
        }),
        ..Default::default()
    }
}

/// Runs `n` queued `test.record` jobs with `inputs` on one instance until all have finished.
async fn drain(
    inputs: serde_json::Value,
    n: i64,
    concurrency: usize,
    prefetch: usize,
) -> (TestDb, Arc<Recorder>) {
    let db = TestDb::new().await;
    enqueue_intent(
        &Store::new(db.pool.clone()),
        "test.record",
        &inputs,
        5000,
        n as usize,
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let _app = spawn(worker(&db, &recorder, concurrency, prefetch)).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            finished(&db).await == n
        })
        .await,
        "all {n} jobs finished"
    );
    (db, recorder)
}

#[tokio::test]
async fn cheap_calls_are_claimed_ahead_of_the_slots_which_still_bound_what_runs() {
    let (db, recorder) = drain(json!({"ms": 2}), 400, 8, 50).await;
    assert_eq!(recorder.total(), 400);
    assert_eq!(recorder.max_runs(), 1, "no job ran twice");
    let at_once = recorder.most_at_once.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&at_once),
        "at most workers.concurrency calls at once, saw {at_once}"
    );
    // 2 ms calls on 8 slots: several end during one claim round trip, so claims bring more
    // than the free slots, but never more than slots + prefetch.
    let claim = biggest_claim(&db).await;
    assert!(
        (9..=58).contains(&claim),
        "a claim took {claim} jobs: more than the 8 slots, at most 8 + 50"
    );
}

#[tokio::test]
async fn no_prefetch_when_switched_off() {
    let (db, _) = drain(json!({}), 200, 4, 0).await;
    let claim = biggest_claim(&db).await;
    assert!(claim <= 4, "claims take only the free slots: {claim}");
}

#[tokio::test]
async fn a_job_claimed_ahead_of_slow_calls_goes_back_to_the_queue() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    // Cheap calls first (the instance learns that calls end at once), then slow ones that the
    // same claims take ahead: one starts, the others find the only slot taken for a minute.
    enqueue_intent(&store, "test.record", &json!({}), 5000, 30).await;
    let slow = enqueue_intent(&store, "test.record", &json!({"ms": 60_000}), 120_000, 5).await;
    let recorder = Arc::new(Recorder::default());
    let a = spawn(worker(&db, &recorder, 1, 10)).await;

    let given_back = || async {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM audit_events
               WHERE kind = 'released' AND instance_id = $1
                 AND detail->>'reason' = 'not_started'"#,
            a.instance_id
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            given_back().await >= 1
        })
        .await,
        "a job waiting behind a minute-long call went back to the queue"
    );
    // Another instance runs them now; without the hand-back they would wait a minute for A.
    let _b = spawn(worker(&db, &recorder, 4, 10)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            slow.iter().all(|id| recorder.runs_of(*id) == 1)
        })
        .await,
        "every slow job started, once"
    );
    let attempts: Vec<i32> = sqlx::query_scalar!(
        r#"SELECT attempts AS "n!" FROM jobs WHERE id = ANY($1)"#,
        &slow.iter().map(|id| id.uuid()).collect::<Vec<_>>()
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        vec![1; 5],
        "a hand-back does not count an attempt"
    );
}

#[tokio::test]
async fn a_shutdown_hands_the_jobs_waiting_for_a_slot_back_together_at_once() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    // Cheap calls teach the instance to claim ahead; the 300-ms ones those claims take ahead
    // then wait for the only slot (calls keep ending, so none goes back as not_started).
    enqueue_intent(&store, "test.record", &json!({}), 5000, 30).await;
    let slow = enqueue_intent(&store, "test.record", &json!({"ms": 300}), 5000, 20).await;
    let recorder = Arc::new(Recorder::default());
    let mut a = spawn(worker(&db, &recorder, 1, 10)).await;
    let held_ahead = || async {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM jobs WHERE status = 'running' AND id = ANY($1)"#,
            &slow.iter().map(|id| id.uuid()).collect::<Vec<_>>()
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            held_ahead().await >= 3
        })
        .await,
        "slow jobs were claimed ahead of the slot"
    );
    a.stop().await.unwrap();

    // Every slow job is back in the queue or finished: none is left to a lease.
    let left_running = held_ahead().await;
    assert_eq!(left_running, 0, "no job left held by the stopped instance");
    let released: Vec<i64> = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_events
           WHERE kind = 'released' AND instance_id = $1 AND detail->>'reason' = 'shutdown'
           GROUP BY xact"#,
        a.instance_id
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        released.len(),
        1,
        "the waiting jobs went back in one statement: {released:?}"
    );
    assert!(released[0] >= 2, "{released:?}");
    // A second instance runs what went back; no slow job ran twice.
    let _b = spawn(worker(&db, &recorder, 4, 10)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            slow.iter().all(|id| recorder.runs_of(*id) == 1)
        })
        .await,
        "every slow job ran, once"
    );
}
