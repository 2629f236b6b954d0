//! `GET /jobs` filters and pagination, and job histories.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, job_id, spawn_app, spawn_with};

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
    let ids = job_ids(&done);
    assert_eq!(ids, [&echo_ids[4], &echo_ids[3], &echo_ids[2]]);
    let cursor = done["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get_json(&format!("/jobs?status=succeeded&limit=3&cursor={cursor}"))
        .await;
    let ids = job_ids(&rest);
    assert_eq!(ids, [&echo_ids[1], &echo_ids[0]]);
    assert!(rest["next_cursor"].is_null());
    let (_, merged) = app.get_json("/jobs?status=succeeded,failed&limit=2").await;
    assert_eq!(merged["jobs"][0]["job_id"], failed_id.as_str());
    assert_eq!(merged["jobs"][1]["job_id"], echo_ids[4].as_str());
    // A status named again lists its jobs once.
    let (_, repeated) = app
        .get_json("/jobs?status=failed,succeeded,failed,failed&limit=100")
        .await;
    assert_eq!(repeated["jobs"].as_array().unwrap().len(), 6);

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

/// `created_at` is the database's time of the intake's commit and an id the instance's time of
/// the request, so the two orders can disagree. Every listing goes by id: paging through
/// succeeded and failed jobs together (succeeded ones are found along the primary key, failed
/// ones through the status index) gives each job once, in the order of the unfiltered listing,
/// and `since`/`until` bound the ids' time.
#[tokio::test]
async fn every_listing_pages_in_id_order_even_where_creation_times_disagree() {
    let app = spawn_app().await;
    // Ids a millisecond apart, creation times running the other way: 12 jobs, every third failed.
    sqlx::query(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                           attempt_timeout_ms, inputs, principal, client_addr, created_at,
                           finished_at, attempts)
         SELECT uuid_v7(now() - interval '1 minute' + i * interval '1 millisecond'),
                'system.echo', 'agent', 'auto',
                CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'succeeded' END::job_status, 0, 1, 1000,
                '{}', 'anonymous', '127.0.0.1', now() - i * interval '1 second', now(), 1
         FROM generate_series(1, 12) i",
    )
    .execute(app.pool())
    .await
    .unwrap();

    let all = every_page(&app, "limit=100").await;
    assert_eq!(all.len(), 12);
    let mut by_id = all.clone();
    by_id.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, by_id, "newest id first");
    for limit in [1, 2, 5] {
        let query = format!("status=succeeded,failed&limit={limit}");
        assert_eq!(every_page(&app, &query).await, all, "pages of {limit}");
    }
    let intent = every_page(&app, "intent=system.echo&limit=5").await;
    assert_eq!(intent, all);
    let failed = every_page(&app, "status=failed&limit=2").await;
    let every_third: Vec<String> = all.iter().step_by(3).cloned().collect();
    assert_eq!(
        failed, every_third,
        "the newest (i = 12) and every third before it"
    );

    // The ids' times: the 5th to the 8th millisecond.
    let (_, page) = app
        .get_json(&format!(
            "/jobs?since={}&until={}",
            urlencode(&job_time(&all[7]).to_rfc3339()),
            urlencode(&job_time(&all[3]).to_rfc3339())
        ))
        .await;
    let ids = job_ids(&page);
    assert_eq!(ids, [&all[4], &all[5], &all[6], &all[7]]);
}

/// Every combination of key, intent, status and mode lists exactly the jobs a plain filter finds,
/// newest first, in pages: the statuses a job ends in without success go through indexes of
/// their own (by key and by intent), including for a key or an intent that has none of them.
#[tokio::test]
async fn listings_by_key_intent_status_and_mode_agree_with_a_plain_filter() {
    // Nothing claims the queued jobs while the listings are read.
    let app = spawn_with(|c| c.workers.concurrency = 0).await;
    let (busy, calm) = (Uuid::now_v7(), Uuid::now_v7());
    // 60 jobs over two intents: `busy` has every status, `calm` only succeeded and cancelled
    // jobs (so a key without failed jobs is asked for its failed ones).
    sqlx::query(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                           attempt_timeout_ms, inputs, principal, client_addr, finished_at,
                           attempts, api_key_id)
         SELECT uuid_v7(now() - interval '1 minute' + i * interval '1 millisecond'),
                CASE WHEN i % 2 = 0 THEN 'system.echo' ELSE 'memory.get' END,
                CASE WHEN i % 7 = 0 THEN 'flow' ELSE 'agent' END::job_mode, 'auto',
                st, 0, 1, 1000, '{}', 'anonymous', '127.0.0.1',
                CASE WHEN st <> 'queued' THEN now() END, 1,
                CASE WHEN i % 3 = 0 THEN $2 ELSE $1 END
         FROM generate_series(1, 60) i,
              LATERAL (SELECT CASE WHEN i % 3 = 0
                                   THEN CASE WHEN i % 4 = 0 THEN 'cancelled' ELSE 'succeeded' END
                                   ELSE (ARRAY['succeeded', 'failed', 'cancelled', 'timed_out',
                                               'queued'])[1 + i % 5] END::job_status AS st) s",
    )
    .bind(busy)
    .bind(calm)
    .execute(app.pool())
    .await
    .unwrap();

    let statuses = ["succeeded", "failed", "cancelled", "timed_out", "queued"];
    let mut empty = 0;
    for key in [None, Some(busy), Some(calm)] {
        for intent in [None, Some("system.echo"), Some("memory.get")] {
            for status in statuses.into_iter().map(Some).chain([None]) {
                for mode in [None, Some("flow")] {
                    let expected: Vec<String> = sqlx::query_scalar(
                        "SELECT 'job_' || replace(id::text, '-', '') FROM jobs
                         WHERE ($1::uuid IS NULL OR api_key_id = $1)
                           AND ($2::text IS NULL OR intent = $2)
                           AND ($3::text IS NULL OR status::text = $3)
                           AND ($4::text IS NULL OR mode::text = $4)
                         ORDER BY id DESC",
                    )
                    .bind(key)
                    .bind(intent)
                    .bind(status)
                    .bind(mode)
                    .fetch_all(app.pool())
                    .await
                    .unwrap();
                    let mut query = String::from("limit=4");
                    if let Some(k) = key {
                        query += &format!("&api_key_id={k}");
                    }
                    for (name, value) in [("intent", intent), ("status", status), ("mode", mode)] {
                        if let Some(v) = value {
                            query += &format!("&{name}={v}");
                        }
                    }
                    assert_eq!(every_page(&app, &query).await, expected, "{query}");
                    empty += usize::from(expected.is_empty());
                }
            }
        }
    }
    assert!(empty >= 4, "some combinations have no jobs: {empty}");
}

/// The job ids of one page of `/jobs`, in its order.
fn job_ids(page: &serde_json::Value) -> Vec<&str> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect()
}

/// The ids of every page of `/jobs?{query}`, following `next_cursor`.
async fn every_page(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    // A cursor that does not move past its page would go round for ever (the listings in two
    // orders did: a job's page came back again and again).
    for _ in 0..50 {
        let (status, page) = app.get_json(&format!("/jobs?{query}{cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        ids.extend(job_ids(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
    panic!("/jobs?{query} had no last page: {} ids so far", ids.len());
}

/// The time in a `job_…` id (UUIDv7: its first 48 bits are Unix milliseconds).
fn job_time(job_id: &str) -> chrono::DateTime<chrono::Utc> {
    let ms = i64::from_str_radix(&job_id["job_".len().."job_".len() + 12], 16).unwrap();
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
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
