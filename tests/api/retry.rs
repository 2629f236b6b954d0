//! `POST /jobs/{id}/retry`, the list filters by mode and API key, and `server.base_path`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Spawn, TestApp, eventually, job_id, spawn, spawn_app, spawn_with},
    mock_http::MockServer,
    test_tools::Flaky,
};

const HOOK: &str = "/hook";

/// The job as `key` sees it once its status is `want` (keys exist: the API is closed).
async fn reached(app: &TestApp, key: &str, id: &str, want: &str) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let found = eventually(Duration::from_secs(20), || async {
        let job = app.get_json_as(key, &format!("/jobs/{id}")).await.1;
        let hit = job["status"] == want;
        *last.lock().unwrap() = job;
        hit
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(found, "{id} never reached {want}: {last}");
    last
}

#[tokio::test]
async fn a_failed_job_runs_again_when_retried_and_its_callback_goes_out_again() {
    // Fails once for good (max one attempt), then works.
    let flaky = Flaky::new("test.flaky", 1, false, 1);
    let app = spawn(Spawn {
        tools: vec![flaky.clone()],
        ..Default::default()
    })
    .await;
    let receiver = MockServer::start().await;
    let operator = app
        .key("operator", &["*", "jobs:retry", "jobs:read:all"])
        .await;
    let memory_only = app
        .key("memory-only", &["memory.*", "jobs:retry", "jobs:read:all"])
        .await;
    let no_retry = app.key("no-retry", &["*", "jobs:read:all"]).await;

    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .bearer_auth(&operator)
        .json(&json!({"intent": "test.flaky", "inputs": {}, "callback_url": receiver.url(HOOK)}))
        .send()
        .await
        .unwrap();
    let id = job_id(&resp.json().await.unwrap());
    let failed = reached(&app, &operator, &id, "failed").await;
    assert_eq!(failed["attempts"], 1);
    let first = receiver.wait_for(HOOK, 1).await;
    assert_eq!(first[0].json()["status"], "error");

    // The scope, then the intent: both are needed.
    let (status, problem) = app.post_as(&no_retry, &format!("/jobs/{id}/retry")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["missing_scope"], "jobs:retry");
    let (status, problem) = app
        .post_as(&memory_only, &format!("/jobs/{id}/retry"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    reached(&app, &operator, &id, "failed").await;

    let (status, body) = app.post_as(&operator, &format!("/jobs/{id}/retry")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job_id"], id.as_str());
    assert!(body["error"].is_null(), "the outcome is cleared: {body}");
    let done = reached(&app, &operator, &id, "succeeded").await;
    assert_eq!(done["attempts"], 2, "one more attempt: {done}");
    assert_eq!(done["max_attempts"], 2);
    assert_eq!(done["result"]["attempt"], 2);
    assert_eq!(
        flaky.calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "ran twice"
    );

    // Its callback is a new message: a second delivery with another webhook-id.
    let both = receiver.wait_for(HOOK, 2).await;
    assert_eq!(both[1].json()["status"], "success");
    assert_ne!(
        both[0].header("webhook-id"),
        both[1].header("webhook-id"),
        "a new message"
    );

    // Audited as the key that asked, from failed back to queued.
    let (_, history) = app
        .get_json_as(&operator, &format!("/jobs/{id}/events"))
        .await;
    let retried: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "retried")
        .collect();
    assert_eq!(retried.len(), 1, "{history}");
    assert_eq!(retried[0]["from_status"], "failed");
    assert_eq!(retried[0]["to_status"], "queued");
    assert_eq!(retried[0]["actor_name"], "operator");

    // A succeeded job is not retried; an unknown one is a 404.
    let (status, problem) = app.post_as(&operator, &format!("/jobs/{id}/retry")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "job_not_retryable");
    assert_eq!(problem["job_status"], "succeeded");
    let (status, problem) = app
        .post_as(
            &operator,
            "/jobs/job_0192f0c0000070008000000000000000/retry",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
}

#[tokio::test]
async fn a_job_whose_inputs_retention_removed_cannot_be_retried() {
    let app = spawn_app().await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.get",
                                 "inputs": {"item_id": "mem_00000000000070008000000000000000"}}))
        .await;
    let id = job_id(&body);
    app.wait_for_status(&id, "failed").await;
    sqlx::query(
        "UPDATE jobs SET payload_purged_at = now(), inputs = '{}' WHERE id = $1::text::uuid",
    )
    .bind(id.trim_start_matches("job_"))
    .execute(app.pool())
    .await
    .unwrap();
    let (status, problem) = app.post_json(&format!("/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "payload_purged");
    assert_eq!(app.job(&id).await["status"], "failed");
}

async fn key_id(app: &TestApp, name: &str) -> String {
    sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT id FROM api_keys WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .fetch_one(app.pool())
    .await
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn jobs_are_filtered_by_engine_and_by_api_key() {
    let app = spawn_app().await;
    let admin = app.key("admin", &["*", "jobs:read:all"]).await;
    let client = app.key("client", &["system.*"]).await;
    let mut by_client = Vec::new();
    for (key, n) in [(&admin, 2), (&client, 3)] {
        for i in 0..n {
            let resp = app
                .client
                .post(format!("{}/orchestrate", app.base))
                .bearer_auth(key)
                .json(&json!({"intent": "system.echo", "inputs": {"i": i}}))
                .send()
                .await
                .unwrap();
            let id = job_id(&resp.json().await.unwrap());
            if key == &client {
                by_client.push(id);
            }
        }
    }
    let ids = |list: &Value| -> Vec<String> {
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (admin_id, client_id) = (key_id(&app, "admin").await, key_id(&app, "client").await);

    let (status, list) = app
        .get_json_as(&admin, &format!("/jobs?api_key_id={client_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let mut listed = ids(&list);
    listed.reverse();
    assert_eq!(listed, by_client, "the client's jobs, newest first");
    let (_, list) = app
        .get_json_as(
            &admin,
            &format!("/jobs?api_key_id={client_id}&intent=system.echo&status=succeeded"),
        )
        .await;
    assert_eq!(ids(&list).len(), 3);
    // A key without jobs:read:all asking for another key's jobs gets none.
    let (status, list) = app
        .get_json_as(&client, &format!("/jobs?api_key_id={admin_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ids(&list).is_empty(), "{list}");
    let (_, list) = app
        .get_json_as(&client, &format!("/jobs?api_key_id={client_id}"))
        .await;
    assert_eq!(ids(&list).len(), 3);

    // Several statuses are read one at a time and merged: still newest first, page by page.
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .bearer_auth(&admin)
        .json(&json!({"intent": "memory.get",
                      "inputs": {"item_id": "mem_00000000000070008000000000000000"}}))
        .send()
        .await
        .unwrap();
    let failed = job_id(&resp.json().await.unwrap());
    let (_, all) = app.get_json_as(&admin, "/jobs?limit=6").await;
    let newest_first = ids(&all);
    assert_eq!(newest_first[0], failed);
    let (_, page1) = app
        .get_json_as(&admin, "/jobs?status=succeeded,failed&limit=4")
        .await;
    assert_eq!(ids(&page1), newest_first[..4], "{page1}");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get_json_as(
            &admin,
            &format!("/jobs?status=failed,succeeded&limit=4&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&page2), newest_first[4..], "{page2}");
    assert!(page2["next_cursor"].is_null());

    // system.echo runs as an agent tool.
    let (_, agents) = app.get_json_as(&admin, "/jobs?mode=agent").await;
    assert_eq!(
        ids(&agents).len(),
        6,
        "five echoes and the failed memory.get"
    );
    let (_, flows) = app
        .get_json_as(&admin, "/jobs?mode=flow&intent=system.echo")
        .await;
    assert!(ids(&flows).is_empty());
    for (query, field) in [
        ("mode=auto", "mode"),
        ("mode=x", "mode"),
        ("api_key_id=nope", "api_key_id"),
    ] {
        let (status, problem) = app.get_json_as(&admin, &format!("/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn under_a_base_path_everything_is_served_below_it_and_nothing_at_the_root() {
    let app = spawn_with(|c| c.server.base_path = "/ops".into()).await;
    assert!(app.base.ends_with("/ops"));
    let root = app.base.trim_end_matches("/ops").to_owned();
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resp = app
        .client
        .get(format!("{root}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "a problem, like every other 404"
    );
    // The dashboard's links and redirects carry the prefix.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(format!("{}/ui", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["location"], "/ops/ui/sign-in");
    let page = app.get_text("/ui/sign-in").await;
    assert!(page.contains(r#"action="/ops/ui/sign-in""#), "{page}");
    assert!(page.contains(r#"href="/ops/ui/assets/ui.css""#), "{page}");
}
