//! Group commit at intake: concurrent requests for the queue are filed a batch per commit, each
//! answered after its batch committed, with keys, history and replays as for one job alone.

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Spawn, TestApp, eventually, job_id, spawn};

async fn app() -> TestApp {
    spawn(Spawn {
        configure: Box::new(|c| c.rate_limits.per_key = orchestrator::limits::Rate::OFF),
        ..Default::default()
    })
    .await
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
