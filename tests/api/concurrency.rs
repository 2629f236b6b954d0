//! Concurrency keys: jobs sharing a key never run at the same time beyond its limit, on one
//! instance or two, while jobs of other keys run beside them; none fails for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::helpers::{Spawn, TestApp, eventually, job_id, spawn};

/// `system.sleep` keyed by its `ms`: jobs with the same `ms` share a key.
fn keyed_by_ms(limit: i32) -> Box<dyn FnOnce(&mut orchestrator::config::Config) + Send> {
    Box::new(move |c| {
        c.workers.concurrency = 16;
        c.tools.overrides.insert(
            "system.sleep".into(),
            serde_json::from_value(json!({"concurrency": {"key": "inputs.ms", "limit": limit}}))
                .unwrap(),
        );
    })
}

async fn sleep_job(app: &TestApp, ms: u64) -> String {
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.sleep", "inputs": {"ms": ms}, "async": true}))
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    job_id(&body)
}

/// When each job ran, from the audit trail: (claimed at, finished at, final status).
async fn runs(app: &TestApp, jobs: &[String]) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    let mut out = Vec::new();
    for job in jobs {
        let (started, ended, status): (DateTime<Utc>, DateTime<Utc>, String) = sqlx::query_as(
            "SELECT min(at) FILTER (WHERE kind = 'claimed'), \
                    max(at) FILTER (WHERE to_status IN ('succeeded', 'failed', 'timed_out')), \
                    (array_agg(to_status::text ORDER BY id DESC))[1] \
             FROM audit_events WHERE job_id = $1::text::uuid",
        )
        .bind(job.trim_start_matches("job_"))
        .fetch_one(app.pool())
        .await
        .unwrap();
        out.push((started, ended, status));
    }
    out.sort();
    out
}

async fn all_succeed(app: &TestApp, jobs: &[String]) {
    for job in jobs {
        app.wait_for_status_within(job, "succeeded", Duration::from_secs(60))
            .await;
    }
}

fn overlapping(runs: &[(DateTime<Utc>, DateTime<Utc>, String)]) -> usize {
    runs.windows(2).filter(|w| w[1].0 < w[0].1).count()
}

#[tokio::test]
async fn jobs_of_one_key_never_overlap_while_other_keys_run_beside_them() {
    let app = spawn(Spawn {
        configure: keyed_by_ms(1),
        ..Default::default()
    })
    .await;
    let mut serial = Vec::new();
    for _ in 0..20 {
        serial.push(sleep_job(&app, 60).await);
    }
    let mut parallel = Vec::new();
    for ms in 300..306 {
        parallel.push(sleep_job(&app, ms).await);
    }
    all_succeed(&app, &serial).await;
    all_succeed(&app, &parallel).await;

    let one_key = runs(&app, &serial).await;
    assert_eq!(overlapping(&one_key), 0, "one at a time: {one_key:?}");
    assert!(one_key.iter().all(|r| r.2 == "succeeded"));
    // The other keys ran at the same time as each other (six 300 ms sleeps well within 1.8 s).
    let others = runs(&app, &parallel).await;
    assert!(
        overlapping(&others) >= 3,
        "other keys in parallel: {others:?}"
    );
    // Waiting for a place costs no attempt.
    for job in &serial {
        assert_eq!(app.job(job).await["attempts"], 1);
    }
    // Every place is free again.
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM concurrency_slots WHERE job_id IS NOT NULL")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn two_instances_share_a_keys_limit() {
    let first = spawn(Spawn {
        configure: keyed_by_ms(2),
        ..Default::default()
    })
    .await;
    let second = spawn(Spawn {
        db: Some(first.db.clone()),
        configure: keyed_by_ms(2),
        ..Default::default()
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..16 {
        let app = if i % 2 == 0 { &first } else { &second };
        jobs.push(sleep_job(app, 80).await);
    }
    all_succeed(&first, &jobs).await;
    let ran = runs(&first, &jobs).await;
    // At every job's start, at most two of the key's jobs were running (itself included).
    for (start, _, _) in &ran {
        let running = ran
            .iter()
            .filter(|(s, e, _)| s <= start && e > start)
            .count();
        assert!(
            running <= 2,
            "at most two at once across instances: {ran:?}"
        );
    }
    // Both instances ran some: the limit is shared, not each instance's own.
    let by_instance: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT instance_id) FROM audit_events \
         WHERE kind = 'claimed' AND job_id = ANY($1::text[]::uuid[])",
    )
    .bind(
        jobs.iter()
            .map(|j| j.trim_start_matches("job_").to_owned())
            .collect::<Vec<_>>(),
    )
    .fetch_one(first.pool())
    .await
    .unwrap();
    assert_eq!(by_instance, 2);
    let reached = eventually(Duration::from_secs(5), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM concurrency_slots WHERE job_id IS NOT NULL",
        )
        .fetch_one(first.pool())
        .await
        .unwrap()
            == 0
    })
    .await;
    assert!(reached, "every place freed");
    drop(second);
}
