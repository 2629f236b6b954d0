//! `POST /orchestrate`: answers within the wait, 202 past it, and clear 4xx for bad requests.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{Spawn, job_id, spawn, spawn_app},
    test_tools::Flaky,
};

#[tokio::test]
async fn memory_write_answers_with_the_seed_shape_and_stores_the_item() {
    let app = spawn_app().await;
    let (status, body) = app
        .orchestrate_json(json!({
            "intent": "memory.write",
            "inputs": {"text": "The Eiffel Tower is in Paris", "tags": ["geography", "landmarks"]},
            "mode": "agent"
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["mode"], "agent");
    assert_eq!(body["intent"], "memory.write");
    assert!(job_id(&body).starts_with("job_"));
    assert!(body["duration_ms"].as_i64().unwrap() >= 0);
    let result = &body["result"];
    assert_eq!(result["status"], "stored");
    assert_eq!(result["text_length"], 28);
    assert_eq!(result["tags"], json!(["geography", "landmarks"]));
    let item_id = result["item_id"].as_str().unwrap();
    assert!(item_id.starts_with("mem_") && item_id.len() == 36);

    let uuid = uuid::Uuid::parse_str(&item_id[4..]).unwrap();
    let stored = sqlx::query!("SELECT text, tags FROM memory_items WHERE id = $1", uuid)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(stored.text, "The Eiffel Tower is in Paris");
    assert_eq!(stored.tags, vec!["geography", "landmarks"]);
}

#[tokio::test]
async fn memory_search_ranks_matches_and_filters_by_tags() {
    let app = spawn_app().await;
    for (text, tags) in [
        (
            "The Eiffel Tower is in Paris",
            json!(["geography", "landmarks"]),
        ),
        (
            "Paris is the capital of France; Paris has many museums",
            json!(["geography"]),
        ),
        ("Berlin has a famous tower too", json!(["landmarks"])),
        ("Bananas are rich in potassium", json!([])),
    ] {
        let (status, _) = app
            .orchestrate_json(
                json!({"intent": "memory.write", "inputs": {"text": text, "tags": tags}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.search", "inputs": {"query": "paris"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(body["result"]["count"], 2);
    // The note that says Paris twice ranks first.
    assert!(
        items[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Paris is the capital")
    );
    assert!(items[0]["score"].as_f64().unwrap() >= items[1]["score"].as_f64().unwrap());

    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.search",
                                 "inputs": {"query": "tower", "tags": ["Landmarks"]}}))
        .await;
    let texts: Vec<&str> = body["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{body}");
    assert!(texts.iter().all(|t| t.contains("ower")));

    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.search",
                                 "inputs": {"query": "tower -berlin", "limit": 5}}))
        .await;
    assert_eq!(
        body["result"]["count"], 1,
        "websearch syntax excludes -berlin: {body}"
    );
}

#[tokio::test]
async fn memory_get_and_delete_by_id_and_missing_items_fail_cleanly() {
    let app = spawn_app().await;
    let (_, written) = app
        .orchestrate_json(json!({"intent": "memory.write",
                                 "inputs": {"text": "remember me", "metadata": {"source": "test"}}}))
        .await;
    let item_id = written["result"]["item_id"].as_str().unwrap().to_owned();

    let (status, got) = app
        .orchestrate_json(json!({"intent": "memory.get", "inputs": {"item_id": item_id}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["result"]["text"], "remember me");
    assert_eq!(got["result"]["metadata"], json!({"source": "test"}));

    let (_, deleted) = app
        .orchestrate_json(json!({"intent": "memory.delete", "inputs": {"item_id": item_id}}))
        .await;
    assert_eq!(
        deleted["result"],
        json!({"item_id": item_id, "status": "deleted"})
    );

    let (status, missing) = app
        .orchestrate_json(json!({"intent": "memory.get", "inputs": {"item_id": item_id}}))
        .await;
    assert_eq!(status, StatusCode::OK, "the job ran and failed: {missing}");
    assert_eq!(missing["status"], "error");
    assert_eq!(missing["job_status"], "failed");
    assert_eq!(missing["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_job_past_the_wait_answers_202_and_finishes_in_the_background() {
    let app = spawn_app().await;
    let resp = app
        .orchestrate(json!({"intent": "system.sleep", "inputs": {"ms": 700}, "timeout_ms": 100}))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    let id = job_id(&body);
    assert_eq!(location, format!("/jobs/{id}"));
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["message"], "Job accepted for async processing");
    assert_eq!(body["mode"], "agent");
    assert_eq!(
        body["status_url"],
        format!("http://127.0.0.1:8080/jobs/{id}")
    );

    let job = app.wait_for_status(&id, "succeeded").await;
    assert_eq!(job["result"], json!({"slept_ms": 700}));
    assert_eq!(job["attempts"], 1);
    assert!(job["duration_ms"].as_i64().unwrap() >= 700);
    for field in ["created_at", "started_at", "finished_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).is_ok(),
            "{field}"
        );
    }
}

#[tokio::test]
async fn async_requests_answer_at_once_and_prefer_headers_are_honoured() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.sleep", "inputs": {"ms": 3000}, "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(started.elapsed() < Duration::from_millis(2500));
    app.wait_for_status(&job_id(&body), "succeeded").await;

    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("Prefer", "respond-async")
        .json(&json!({"intent": "system.echo", "inputs": {"a": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("Prefer", "wait=1")
        .json(&json!({"intent": "system.sleep", "inputs": {"ms": 1500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "wait=1 is shorter than the job"
    );

    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("Prefer", "wait=5")
        .json(&json!({"intent": "system.sleep", "inputs": {"ms": 300}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_wait_is_capped_by_config() {
    let app = crate::helpers::spawn_with(|c| {
        c.server.sync_timeout = Duration::from_millis(200);
        c.server.max_sync_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let (status, _) = app
        .orchestrate_json(
            json!({"intent": "system.sleep", "inputs": {"ms": 3000}, "timeout_ms": 60000}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(started.elapsed() < Duration::from_millis(2000));
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_until_success() {
    let flaky = Flaky::new("test.flaky", 2, true, 5);
    let app = spawn(Spawn {
        tools: vec![flaky.clone()],
        ..Default::default()
    })
    .await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.flaky", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["result"], json!({"attempt": 3}));
    assert_eq!(flaky.calls.load(std::sync::atomic::Ordering::SeqCst), 3);

    let id = job_id(&body);
    let job = app.job(&id).await;
    assert_eq!(job["attempts"], 3);
    let (_, events) = app.get_json(&format!("/jobs/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // The first attempt starts at intake when a slot is free, else through a claim.
    let expected: &[&str] = if kinds[1] == "claimed" {
        &[
            "created",
            "claimed",
            "retry_scheduled",
            "claimed",
            "retry_scheduled",
            "claimed",
            "succeeded",
        ]
    } else {
        &[
            "created",
            "retry_scheduled",
            "claimed",
            "retry_scheduled",
            "claimed",
            "succeeded",
        ]
    };
    assert_eq!(kinds, expected);
    let retry = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "retry_scheduled")
        .unwrap();
    assert_eq!(retry["detail"]["code"], "flaky");
    assert!(retry["detail"]["retry_at"].is_string());
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_a_request_may_lower_it() {
    let always = Flaky::new("test.always_failing", 100, true, 4);
    let app = spawn(Spawn {
        tools: vec![always.clone()],
        ..Default::default()
    })
    .await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.always_failing", "inputs": {}, "max_attempts": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["job_status"], "failed");
    assert_eq!(body["error"]["code"], "flaky");
    let job = app.job(&job_id(&body)).await;
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["max_attempts"], 2);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let broken = Flaky::new("test.broken", 100, false, 5);
    let app = spawn(Spawn {
        tools: vec![broken.clone()],
        ..Default::default()
    })
    .await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "test.broken", "inputs": {}}))
        .await;
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["code"], "broken");
    assert_eq!(broken.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_attempt_past_its_timeout_ends_timed_out() {
    let app = spawn(Spawn {
        tools: vec![crate::test_tools::Hang::new(Duration::from_millis(300))],
        ..Default::default()
    })
    .await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.hang", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["job_status"], "timed_out");
    assert_eq!(body["error"]["code"], "timed_out");
}

#[tokio::test]
async fn unknown_intents_get_404_with_suggestions() {
    let app = spawn_app().await;
    let resp = app
        .orchestrate(json!({"intent": "memory.wrte", "inputs": {"text": "x"}}))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unknown_intent");
    assert_eq!(body["status"], 404);
    assert_eq!(body["suggestions"][0], "memory.write");
}

#[tokio::test]
async fn an_explicit_mode_that_does_not_serve_the_intent_names_the_modes_that_do() {
    let app = spawn_app().await;
    let (status, body) = app
        .orchestrate_json(
            json!({"intent": "memory.write", "inputs": {"text": "x"}, "mode": "flow"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "mode_not_supported");
    assert_eq!(body["served_by"], json!(["agent"]));
}

#[tokio::test]
async fn inputs_are_validated_against_the_schema_naming_each_field() {
    let app = spawn_app().await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.write",
                                 "inputs": {"tags": ["ok", 7], "colour": "red"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_inputs");
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["inputs.colour", "inputs.tags[1]", "inputs.text"]);

    let (status, body) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "   "}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "inputs.text");

    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs"#)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "rejected requests create no job");
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"inputs": {}}), "intent"),
        (json!({"intent": "system.echo"}), "inputs"),
        (json!({"intent": "system.echo", "inputs": []}), "inputs"),
        (
            json!({"intent": "system.echo", "inputs": {}, "mode": "turbo"}),
            "mode",
        ),
        (
            json!({"intent": "system.echo", "inputs": {}, "timeout_ms": "soon"}),
            "timeout_ms",
        ),
        (
            json!({"intent": "system.echo", "inputs": {}, "inptus": {}}),
            "inptus",
        ),
    ] {
        let (status, problem) = app.orchestrate_json(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(problem["code"], "invalid_request");
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{body} → {problem}"
        );
    }
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("content-type", "application/json")
        .body("{\"intent\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = crate::helpers::spawn_with(|c| c.server.max_body_bytes = 4096).await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"blob": "x".repeat(10_000)}}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "body_too_large");
    assert_eq!(body["limit_bytes"], 4096);
}
