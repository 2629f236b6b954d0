//! Four server instances on one database: every job runs exactly once, the work spreads over
//! the instances that run workers, and a request waiting on an instance that runs none is woken
//! by the instance that finished its job (NOTIFY fan-out), well before the fallback poll.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Spawn, TestApp, eventually, job_id, spawn};

async fn instance(db: Option<crate::helpers::TestDb>, workers: usize) -> TestApp {
    spawn(one_of_several(db, workers, |_| {})).await
}

/// `n` synchronous requests to `app` (which runs no workers) for a tool that runs outside the
/// database, 4 at a time: each must be answered as soon as another instance finished it (a
/// missed wake-up, of the other's workers or of `app`'s waiter, would wait for the 5 s poll).
pub async fn answered_when_others_finish(app: &TestApp, n: u64) {
    let waited: Vec<Duration> = stream::iter(0..n)
        .map(|i| async move {
            let started = Instant::now();
            let (status, body) = app
                .orchestrate_json(json!({"intent": "system.sleep", "inputs": {"ms": i}}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["status"], "success", "{body}");
            assert_eq!(body["result"]["slept_ms"], i, "{body}");
            started.elapsed()
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let slowest = waited.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(3),
        "woken by another instance, not by a poll: slowest {slowest:?}"
    );
}

/// One of several instances on one database, with `workers` job slots (0: it only files jobs
/// and answers), whose waiters and workers must be woken by the others' notifications.
pub fn one_of_several(
    db: Option<crate::helpers::TestDb>,
    workers: usize,
    also: impl FnOnce(&mut orchestrator::config::Config) + Send + 'static,
) -> Spawn {
    Spawn {
        db,
        configure: Box::new(move |c| {
            c.workers.concurrency = workers;
            // Small claims, so that every instance with workers gets a share.
            c.workers.claim_batch = 8;
            // The fallback poll is far above what a woken waiter needs (see the tests).
            c.workers.poll_interval = Duration::from_secs(5);
            c.rate_limits.per_key = orchestrator::limits::Rate::OFF;
            also(c);
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn four_instances_run_every_job_once_and_wake_each_others_waiters() {
    let a = instance(None, 8).await;
    let db = a.db.clone();
    let b = instance(Some(db.clone()), 8).await;
    let c = instance(Some(db.clone()), 8).await;
    // D only files jobs and answers: whatever it waits for, another instance runs.
    let d = instance(Some(db), 0).await;
    let apps = [&a, &b, &c, &d];

    // 400 async jobs (echo and memory writes with unique text) filed through all four.
    let filed: Vec<String> = stream::iter(0..400)
        .map(|i| {
            let app = apps[i % 4];
            async move {
                let body = if i % 2 == 0 {
                    json!({"intent": "system.echo", "inputs": {"text": format!("e{i}")}, "async": true})
                } else {
                    json!({"intent": "memory.write", "inputs": {"text": format!("note {i} of many")}, "async": true})
                };
                let (status, body) = app.orchestrate_json(body).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                job_id(&body)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // Meanwhile, synchronous requests to D for a tool that runs outside the database (echo
    // and the memory tools would run inline on D, in the request's transaction): each is
    // answered as soon as another instance finishes it (a missed wake-up would wait for the
    // 5 s poll or answer 202).
    answered_when_others_finish(&d, 20).await;

    let done = eventually(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status <> 'succeeded'")
            .fetch_one(a.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(done, "every job succeeded");
    assert_eq!(filed.len(), 400);

    // Exactly once: one claim and one finish per job, one attempt, one memory item per write.
    let (jobs, claims, finishes, retried): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs),
                (SELECT count(*) FROM audit_events WHERE kind = 'claimed'),
                (SELECT count(*) FROM audit_events WHERE to_status = 'succeeded'),
                (SELECT count(*) FROM jobs WHERE attempts <> 1)",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(jobs, 420);
    assert_eq!(finishes, 420, "one finish per job");
    assert_eq!(retried, 0);
    // Jobs run inline by the instance that took the request have no claim event.
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM audit_events WHERE kind = 'claimed'
                               GROUP BY job_id HAVING count(*) > 1) t",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(twice, 0, "no job claimed twice ({claims} claims)");
    let items: i64 = sqlx::query_scalar("SELECT count(DISTINCT text) FROM memory_items")
        .fetch_one(a.pool())
        .await
        .unwrap();
    let all_items: i64 = sqlx::query_scalar("SELECT count(*) FROM memory_items")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!((items, all_items), (200, 200), "one memory item per write");

    // The work spread over the three instances with workers; D ran nothing.
    let by_instance: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT instance_id, count(*) FROM audit_events
         WHERE to_status = 'running' GROUP BY instance_id",
    )
    .fetch_all(a.pool())
    .await
    .unwrap();
    assert_eq!(by_instance.len(), 3, "{by_instance:?}");
    assert!(
        by_instance.iter().all(|(_, n)| *n >= 20),
        "each worker instance ran a share: {by_instance:?}"
    );
}
