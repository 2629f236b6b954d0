//! Idempotency: replays, mismatches, in-flight retries, races, derived keys and expiry.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{eventually, job_id, spawn_app};

async fn with_key(
    app: &crate::helpers::TestApp,
    key: &str,
    body: Value,
) -> (StatusCode, Value, bool) {
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, resp.json().await.unwrap(), replayed)
}

async fn job_count(app: &crate::helpers::TestApp) -> i64 {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs"#)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_key_and_request_replays_the_stored_answer() {
    let app = spawn_app().await;
    let body = json!({"intent": "system.echo", "inputs": {"n": 1}});
    let (s1, first, replayed1) = with_key(&app, "order-1", body.clone()).await;
    assert_eq!(s1, StatusCode::OK);
    assert!(!replayed1);
    assert!(first.get("idempotent_replay").is_none());

    let (s2, second, replayed2) = with_key(&app, "order-1", body.clone()).await;
    assert_eq!(s2, StatusCode::OK);
    assert!(replayed2);
    assert_eq!(second["idempotent_replay"], true);
    assert_eq!(second["job_id"], first["job_id"]);
    assert_eq!(second["result"], first["result"]);
    assert_eq!(job_count(&app).await, 1);

    // The body field works like the header (ChatGPT Actions cannot send headers).
    let mut in_body = body.clone();
    in_body["idempotency_key"] = json!("order-1");
    let (_, third) = app.orchestrate_json(in_body).await;
    assert_eq!(third["job_id"], first["job_id"]);
    assert_eq!(third["idempotent_replay"], true);
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_refused() {
    let app = spawn_app().await;
    with_key(
        &app,
        "k-1",
        json!({"intent": "system.echo", "inputs": {"n": 1}}),
    )
    .await;
    let (status, problem, _) = with_key(
        &app,
        "k-1",
        json!({"intent": "system.echo", "inputs": {"n": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "idempotency_key_reused");

    let (status, problem) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {}, "idempotency_key": ""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "idempotency_key");
}

#[tokio::test]
async fn a_failed_job_replays_its_failure() {
    let app = spawn_app().await;
    let missing = "mem_00000000000070008000000000000000";
    let body = json!({"intent": "memory.get", "inputs": {"item_id": missing}});
    let (_, first, _) = with_key(&app, "get-missing", body.clone()).await;
    assert_eq!(first["status"], "error");
    let (status, again, replayed) = with_key(&app, "get-missing", body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(replayed);
    assert_eq!(again["error"], first["error"]);
    assert_eq!(again["job_id"], first["job_id"]);
}

#[tokio::test]
async fn a_retry_while_the_first_is_in_flight_gets_the_same_job() {
    let app = spawn_app().await;
    let body = json!({"intent": "system.sleep", "inputs": {"ms": 1200}, "timeout_ms": 100});
    let (s1, first, _) = with_key(&app, "slow-1", body.clone()).await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    let (s2, second, replayed) = with_key(&app, "slow-1", body.clone()).await;
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert!(replayed);
    assert_eq!(second["job_id"], first["job_id"]);
    assert_eq!(second["idempotent_replay"], true);

    // A retry that waits long enough gets the result of that same job.
    let mut patient = body;
    patient["timeout_ms"] = json!(5000);
    let (s3, third, replayed) = with_key(&app, "slow-1", patient).await;
    assert_eq!(s3, StatusCode::OK, "{third}");
    assert!(replayed);
    assert_eq!(third["job_id"], first["job_id"]);
    assert_eq!(third["result"], json!({"slept_ms": 1200}));
    assert_eq!(job_count(&app).await, 1);
}

#[tokio::test]
async fn a_hundred_identical_requests_at_once_create_one_job() {
    let app = spawn_app().await;
    let body = json!({"intent": "memory.write", "inputs": {"text": "exactly once"}});
    let requests = (0..100).map(|_| {
        let app = &app;
        let body = body.clone();
        async move {
            let resp = app
                .client
                .post(format!("{}/orchestrate", app.base))
                .header("Idempotency-Key", "race-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap();
            (status, v)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, v)| {
            assert!(status.is_success(), "{status}: {v}");
            job_id(v)
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same job");
    assert_eq!(job_count(&app).await, 1);
    let items = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM memory_items"#)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(items, 1);
    let replays = answers
        .iter()
        .filter(|(_, v)| v["idempotent_replay"] == true)
        .count();
    assert_eq!(replays, 99);
}

#[tokio::test]
async fn write_intents_derive_a_key_from_their_inputs_and_read_intents_do_not() {
    let app = spawn_app().await;
    let write = json!({"intent": "memory.write", "inputs": {"text": "same note", "tags": ["a"]}});
    let (_, a) = app.orchestrate_json(write.clone()).await;
    // Same inputs with keys in another order: the same canonical request.
    let reordered =
        json!({"inputs": {"tags": ["a"], "text": "same note"}, "intent": "memory.write"});
    let (_, b) = app.orchestrate_json(reordered).await;
    assert_eq!(a["job_id"], b["job_id"]);
    assert_eq!(b["idempotent_replay"], true);
    let (_, c) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "another note"}}))
        .await;
    assert_ne!(c["job_id"], a["job_id"]);

    let read = json!({"intent": "memory.search", "inputs": {"query": "note"}});
    let (_, r1) = app.orchestrate_json(read.clone()).await;
    let (_, r2) = app.orchestrate_json(read).await;
    assert_ne!(r1["job_id"], r2["job_id"], "read intents run every time");
    assert!(r2.get("idempotent_replay").is_none());
}

#[tokio::test]
async fn expired_keys_start_afresh_and_maintenance_purges_them() {
    let app = spawn_app().await;
    let body = json!({"intent": "system.echo", "inputs": {"v": 1}});
    let (_, first, _) = with_key(&app, "old-key", body.clone()).await;
    sqlx::query!(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old-key'"
    )
    .execute(app.pool())
    .await
    .unwrap();
    // Either the request wins (a new job under the key) or maintenance purges first; both
    // mean the key no longer answers with the old job.
    let (status, second, replayed) = with_key(&app, "old-key", body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!replayed);
    assert_ne!(second["job_id"], first["job_id"]);

    sqlx::query!("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
        .execute(app.pool())
        .await
        .unwrap();
    let purged = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM idempotency_keys"#)
            .fetch_one(app.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(purged, "maintenance purges expired keys");
    assert_eq!(job_count(&app).await, 2, "purging keys keeps the jobs");
}
