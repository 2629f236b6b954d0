//! Concurrency keys: jobs sharing a key never run at the same time beyond its limit, on one
//! instance or two, while jobs of other keys run beside them; none fails for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator::tools::flow::FlowConfig;
use serde_json::json;

use crate::{
    helpers::{Spawn, TestApp, eventually, job_id, spawn, spawn_with},
    mock_http::{MockServer, Reply},
};

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

async fn keyed_app(limit: i32) -> TestApp {
    spawn(Spawn {
        configure: keyed_by_ms(limit),
        ..Default::default()
    })
    .await
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
    let app = keyed_app(1).await;
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

async fn parked(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND parked")
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn jobs_waiting_for_a_place_are_parked_and_run_in_order_as_places_free() {
    let app = keyed_app(1).await;
    // Each job holds the key's only place (the key is `inputs.ms`, so all sleep as long) long
    // enough for every check below, 22 requests and queries: at 300 ms the first ended before
    // the last of them on a loaded 2-core CI machine, and one job was already unparked.
    const MS: u64 = 1_000;
    let first = sleep_job(&app, MS).await;
    app.wait_for_status(&first, "running").await;
    // Filed while the key's only place is taken: parked at once, outside the claim's index.
    let mut waiting = Vec::new();
    for _ in 0..10 {
        waiting.push(sleep_job(&app, MS).await);
    }
    assert_eq!(parked(&app).await, 10);
    for job in &waiting {
        assert_eq!(
            app.job(job).await["status"],
            "queued",
            "parked is still queued"
        );
    }
    // Operators see them as parked, and they do not count as queue lag.
    let gauges = orchestrator::store::Store::new(app.pool().clone())
        .queue_gauges()
        .await
        .unwrap();
    assert_eq!((gauges.queued, gauges.parked), (10, 10));
    assert_eq!(gauges.oldest_queued_seconds, 0.0);
    let mut all = vec![first];
    all.extend(waiting.iter().cloned());
    all_succeed(&app, &all).await;
    let ran = runs(&app, &all).await;
    assert_eq!(overlapping(&ran), 0, "{ran:?}");
    // Each freed place unparked the next job in claim order: they ran in the order filed.
    let mut by_start = Vec::new();
    for job in &all {
        let started: DateTime<Utc> = sqlx::query_scalar(
            "SELECT min(at) FROM audit_events WHERE kind = 'claimed' AND job_id = $1::text::uuid",
        )
        .bind(job.trim_start_matches("job_"))
        .fetch_one(app.pool())
        .await
        .unwrap();
        by_start.push((started, job.clone()));
    }
    by_start.sort();
    let order: Vec<String> = by_start.into_iter().map(|(_, j)| j).collect();
    assert_eq!(order, all, "run in the order filed");
    assert_eq!(parked(&app).await, 0);
}

#[tokio::test]
async fn a_parked_job_whose_key_has_a_free_place_is_unparked_by_the_sweep() {
    let app = keyed_app(1).await;
    // The key's place exists and is free.
    let done = sleep_job(&app, 5).await;
    app.wait_for_status(&done, "succeeded").await;
    // A job parked although its key has a free place (what the race between a claim parking
    // it and a job freeing the place leaves behind): filed for later, parked before it is due.
    let run_at = (Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.sleep", "inputs": {"ms": 5}, "run_at": run_at}))
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let stranded = job_id(&body);
    let marked = sqlx::query(
        "UPDATE jobs SET parked = true WHERE id = $1::text::uuid AND status = 'scheduled'",
    )
    .bind(stranded.trim_start_matches("job_"))
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(marked.rows_affected(), 1);
    // No place is freed again, so only the scheduler's sweep can hand it the free one.
    app.wait_for_status_within(&stranded, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(parked(&app).await, 0);
}

#[tokio::test]
async fn a_flows_concurrency_holds_across_every_flow_that_calls_its_url() {
    let peer = MockServer::start().await;
    let hold = Duration::from_millis(250);
    peer.otherwise(
        "/webhook/report",
        Reply::json(200, json!({"ok": true})).after(hold),
    );
    let flow: FlowConfig = serde_json::from_value(json!({
        "engine": "generic", "url": peer.url("/webhook/report"), "timeout": "5s",
        "read_only": true, "max_attempts": 1, "concurrency": 2,
    }))
    .unwrap();
    let other = flow.clone();
    let app = spawn_with(move |c| {
        c.workers.concurrency = 16;
        c.flows.insert("report.daily".into(), flow);
        c.flows.insert("report.weekly".into(), other);
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        let intent = if i % 2 == 0 {
            "report.daily"
        } else {
            "report.weekly"
        };
        let (status, body) = app
            .orchestrate_json(json!({"intent": intent, "inputs": {"i": i}, "async": true}))
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
        jobs.push(job_id(&body));
    }
    all_succeed(&app, &jobs).await;
    let mut arrived: Vec<std::time::Instant> = peer
        .requests("/webhook/report")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(arrived.len(), 8);
    arrived.sort();
    // A third request can only arrive once one of the two before it was answered.
    let slack = Duration::from_millis(20);
    for w in arrived.windows(3) {
        assert!(
            w[2].duration_since(w[0]) + slack >= hold,
            "three requests open at once: {arrived:?}"
        );
    }
    // The limit was used: two at a time, not one (with one, each request comes only after the
    // one before was answered, `hold` later). Not "half of `hold`": a loaded machine files the
    // jobs slowly enough that the pairs spread out (150 ms apart, each open 250 ms).
    assert!(
        arrived.windows(2).any(|w| w[1].duration_since(w[0]) < hold),
        "two requests were open together: {arrived:?}"
    );
}

#[tokio::test]
async fn a_job_cancelled_while_parked_and_retried_is_claimable_again() {
    let app = keyed_app(1).await;
    let first = sleep_job(&app, 300).await;
    app.wait_for_status(&first, "running").await;
    let waiting = sleep_job(&app, 300).await;
    assert_eq!(parked(&app).await, 1);
    let (status, body) = app
        .post_json(&format!("/jobs/{waiting}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    app.wait_for_status(&waiting, "cancelled").await;
    app.wait_for_status(&first, "succeeded").await;
    let (status, body) = app
        .post_json(&format!("/jobs/{waiting}/retry"), json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    // Back in the claim's index at once, not left to the sweep.
    let still_parked: bool =
        sqlx::query_scalar("SELECT parked FROM jobs WHERE id = $1::text::uuid")
            .bind(waiting.trim_start_matches("job_"))
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(!still_parked);
    app.wait_for_status(&waiting, "succeeded").await;
}

#[tokio::test]
async fn the_places_of_a_key_no_job_uses_are_purged_and_come_back_when_it_is_used_again() {
    let app = keyed_app(2).await;
    let first = sleep_job(&app, 7_000).await;
    let (status, body) = app
        .post_json(&format!("/jobs/{first}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    app.wait_for_status(&first, "cancelled").await;
    let purged = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM concurrency_slots WHERE key = 'system.sleep:7000'",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
            == 0
    })
    .await;
    assert!(purged, "maintenance purges the places of a key no job uses");
    // A finished job sent back, and new jobs, find places again (without them the claim would
    // park them for good).
    let (status, body) = app
        .post_json(&format!("/jobs/{first}/retry"), json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    app.wait_for_status(&first, "running").await;
    let (status, body) = app
        .post_json(&format!("/jobs/{first}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{status}: {body}");
    app.wait_for_status(&first, "cancelled").await;
    let again = [sleep_job(&app, 7).await, sleep_job(&app, 7).await];
    all_succeed(&app, &again).await;
}

#[tokio::test]
async fn a_purge_never_takes_the_places_of_a_job_being_filed() {
    // Intake files a keyed job and its key's places in one transaction; the places already
    // exist, so its insert changes nothing and locks nothing. A purge that ran before that
    // transaction committed would find the key idle and leave the job with no place, ever.
    let db = crate::helpers::TestDb::new().await;
    let store = orchestrator::store::Store::new(db.pool.clone());
    sqlx::query("INSERT INTO concurrency_slots (key, slot) VALUES ('k', 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut intake = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO concurrency_slots (key, slot) VALUES ('k', 1) ON CONFLICT DO NOTHING")
        .execute(&mut *intake)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                           attempt_timeout_ms, inputs, principal, concurrency_key,
                           concurrency_limit)
         VALUES (uuid_v7(), 'system.sleep', 'agent', 'auto', 'queued', 0, 1, 5000,
                 '{}', 'anonymous', 'k', 1)",
    )
    .execute(&mut *intake)
    .await
    .unwrap();
    assert_eq!(
        store.purge_idle_concurrency_keys().await.unwrap(),
        0,
        "the purge waits for the filing transaction (and gives up for this pass)"
    );
    intake.commit().await.unwrap();
    assert_eq!(store.purge_idle_concurrency_keys().await.unwrap(), 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM concurrency_slots WHERE key = 'k'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the job's place is there");
}
