//! `GET /jobs` filters and pagination, and job histories.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{job_id, spawn_app};

#[tokio::test]
async fn jobs_are_listed_newest_first_with_filters_and_cursor_pages() {
    let app = spawn_app().await;
    let mut echo_ids = Vec::new();
    for i in 0..5 {
        let (_, body) = app
            .orchestrate_json(json!({"intent": "system.echo", "inputs": {"i": i}}))
            .await;
        echo_ids.push(job_id(&body));
    }
    let (_, failed) = app
        .orchestrate_json(json!({"intent": "memory.get",
                                 "inputs": {"item_id": "mem_00000000000070008000000000000000"}}))
        .await;
    let failed_id = job_id(&failed);

    let (status, all) = app.get_json("/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["jobs"].as_array().unwrap().len(), 6);
    assert_eq!(all["jobs"][0]["job_id"], failed_id.as_str(), "newest first");
    assert!(all["next_cursor"].is_null());

    let (_, echoes) = app.get_json("/jobs?intent=system.echo&limit=2").await;
    let page1: Vec<String> = echoes["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page1, [echo_ids[4].clone(), echo_ids[3].clone()]);
    let cursor = echoes["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get_json(&format!("/jobs?intent=system.echo&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["jobs"][0]["job_id"], echo_ids[2].as_str());
    assert_eq!(page2["jobs"][1]["job_id"], echo_ids[1].as_str());
    let cursor = page2["next_cursor"].as_str().unwrap();
    let (_, page3) = app
        .get_json(&format!("/jobs?intent=system.echo&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page3["jobs"].as_array().unwrap().len(), 1);
    assert!(page3["next_cursor"].is_null());

    // Succeeded jobs are listed along the primary key (they are not in the status index),
    // newest first, in cursor pages, and merged with another status.
    let (_, done) = app.get_json("/jobs?status=succeeded&limit=3").await;
    let ids: Vec<&str> = done["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&echo_ids[4], &echo_ids[3], &echo_ids[2]]);
    let cursor = done["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get_json(&format!("/jobs?status=succeeded&limit=3&cursor={cursor}"))
        .await;
    let ids: Vec<&str> = rest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&echo_ids[1], &echo_ids[0]]);
    assert!(rest["next_cursor"].is_null());
    let (_, merged) = app.get_json("/jobs?status=succeeded,failed&limit=2").await;
    assert_eq!(merged["jobs"][0]["job_id"], failed_id.as_str());
    assert_eq!(merged["jobs"][1]["job_id"], echo_ids[4].as_str());

    let (_, failures) = app.get_json("/jobs?status=failed,timed_out").await;
    assert_eq!(failures["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(failures["jobs"][0]["error"]["code"], "not_found");

    let (_, both) = app
        .get_json("/jobs?intent=memory.get&status=succeeded")
        .await;
    assert_eq!(both["jobs"].as_array().unwrap().len(), 0);

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, none) = app
        .get_json(&format!("/jobs?since={}", urlencode(&future)))
        .await;
    assert_eq!(none["jobs"].as_array().unwrap().len(), 0);
    let (_, until) = app
        .get_json(&format!("/jobs?until={}", urlencode(&future)))
        .await;
    assert_eq!(until["jobs"].as_array().unwrap().len(), 6);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn bad_list_parameters_get_400_naming_them() {
    let app = spawn_app().await;
    for (query, field) in [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("since=yesterday", "since"),
        ("cursor=%%%", "cursor"),
    ] {
        let (status, problem) = app.get_json(&format!("/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["code"], "invalid_request");
        assert!(
            problem["errors"][0]["field"] == field || problem["errors"][0]["field"] == "query",
            "{query}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_job_records_every_state_change() {
    let app = spawn_app().await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"x": 1}, "async": true}))
        .await;
    let id = job_id(&body);
    app.wait_for_status(&id, "succeeded").await;
    let (status, history) = app.get_json(&format!("/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let events = history["events"].as_array().unwrap();
    let transitions: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["to_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            ("created".to_owned(), "queued".to_owned()),
            ("claimed".to_owned(), "running".to_owned()),
            ("succeeded".to_owned(), "succeeded".to_owned())
        ]
    );
    assert_eq!(events[1]["from_status"], "queued");
    assert_eq!(events[1]["instance_id"], app.instance_id.to_string());
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);

    let (status, _) = app
        .get_json(&format!("/jobs/{}/events", orchestrator::ids::JobId::new()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
