//! Outbound callbacks: signed, retried on a schedule, audited, refused where they may not go,
//! and durable across a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{
        SIGNING_SECRET, Spawn, TestApp, TestDb, eventually, job_id, prerequisite, spawn, spawn_app,
        spawn_with,
    },
    mock_http::{MockServer, Reply, signature_is_valid},
};

const HOOK: &str = "/hooks/results";

async fn echo_with_callback(app: &TestApp, url: &str) -> String {
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"n": 7}, "callback_url": url}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    job_id(&body)
}

pub async fn callbacks_of(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get_json(&format!("/jobs/{id}/callbacks")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the job's delivery reaches `status`.
pub async fn delivery_reaches(app: &TestApp, id: &str, status: &str) -> Value {
    let reached = eventually(Duration::from_secs(20), || async {
        callbacks_of(app, id).await["delivery"]["status"] == status
    })
    .await;
    let last = callbacks_of(app, id).await;
    assert!(reached, "delivery of {id} never reached {status}: {last}");
    last
}

#[tokio::test]
async fn a_finished_job_is_called_back_with_a_signed_body() {
    let receiver = MockServer::start().await;
    let app = spawn_with(|_| {}).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    let got = receiver.wait_for(HOOK, 1).await;
    let request = &got[0];

    assert!(
        signature_is_valid(SIGNING_SECRET, request),
        "signature verifies"
    );
    assert!(request.header("webhook-id").starts_with("msg_"));
    let sent_at: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["job_id"], id.as_str());
    assert_eq!(body["intent"], "system.echo");
    assert_eq!(body["status"], "success");
    assert_eq!(body["result"], json!({"n": 7}));
    assert!(body["duration_ms"].is_i64());
    assert!(chrono::DateTime::parse_from_rfc3339(body["finished_at"].as_str().unwrap()).is_ok());
    assert!(body.get("error").is_none());

    let record = delivery_reaches(&app, &id, "delivered").await;
    assert_eq!(record["delivery"]["attempts"], 1);
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["direction"], "out");
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["webhook_id"], request.header("webhook-id"));
}

#[tokio::test]
async fn failed_jobs_are_called_back_with_their_error() {
    let receiver = MockServer::start().await;
    let app = spawn_with(|_| {}).await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.get",
            "inputs": {"item_id": "mem_00000000000070008000000000000000"},
            "callback_url": receiver.url(HOOK)}))
        .await;
    let got = receiver.wait_for(HOOK, 1).await;
    let sent = got[0].json();
    assert_eq!(sent["job_id"], body["job_id"]);
    assert_eq!(sent["status"], "error");
    assert_eq!(sent["error"]["code"], "not_found");
    assert!(sent.get("result").is_none());
}

#[tokio::test]
async fn every_rotation_secret_signs() {
    const NEXT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = MockServer::start().await;
    let app = spawn_with(|c| c.callbacks.signing_secrets = vec![NEXT.into()]).await;
    echo_with_callback(&app, &receiver.url(HOOK)).await;
    let got = receiver.wait_for(HOOK, 1).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    assert!(signature_is_valid(SIGNING_SECRET, &got[0]));
    assert!(signature_is_valid(NEXT, &got[0]));
}

#[tokio::test]
async fn failures_are_retried_with_the_same_webhook_id_until_delivered() {
    let receiver = MockServer::start().await;
    receiver.script(HOOK, vec![Reply::status(500), Reply::status(503)]);
    let app = spawn_with(|_| {}).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;

    let record = delivery_reaches(&app, &id, "delivered").await;
    let got = receiver.requests(HOOK);
    assert_eq!(got.len(), 3);
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one message, one id");
    assert!(got.iter().all(|r| signature_is_valid(SIGNING_SECRET, r)));
    let attempts = record["attempts"].as_array().unwrap();
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 200]);
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "delivered"]);
    assert!(attempts[0]["next_attempt_at"].is_string());
    let numbers: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
}

#[tokio::test]
async fn a_410_stops_the_delivery() {
    let receiver = MockServer::start().await;
    receiver.otherwise(HOOK, Reply::status(410));
    let app = spawn_with(|_| {}).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    let record = delivery_reaches(&app, &id, "gone").await;
    assert_eq!(record["delivery"]["attempts"], 1);
    assert_eq!(receiver.requests(HOOK).len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = MockServer::start().await;
    receiver.otherwise(
        HOOK,
        Reply::status(302).header("location", receiver.url("/elsewhere")),
    );
    let app = spawn_with(|c| c.callbacks.retry_schedule = vec![Duration::from_millis(50)]).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    let record = delivery_reaches(&app, &id, "exhausted").await;
    assert!(receiver.requests("/elsewhere").is_empty(), "never followed");
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("redirect"),
        "{record}"
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_tried_again() {
    let receiver = MockServer::start().await;
    receiver.script(HOOK, vec![Reply::status(200).after(Duration::from_secs(3))]);
    let app = spawn_with(|c| c.callbacks.timeout = Duration::from_millis(300)).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    let record = delivery_reaches(&app, &id, "delivered").await;
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{record}");
    assert!(attempts[0]["status_code"].is_null());
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("300 ms"),
        "{record}"
    );
    assert_eq!(attempts[1]["outcome"], "delivered");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = MockServer::start().await;
    receiver.script(HOOK, vec![Reply::status(429).header("retry-after", "2")]);
    let app = spawn_with(|_| {}).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    delivery_reaches(&app, &id, "delivered").await;
    let got = receiver.requests(HOOK);
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn an_exhausted_delivery_can_be_sent_again() {
    let receiver = MockServer::start().await;
    receiver.script(HOOK, vec![Reply::status(500), Reply::status(500)]);
    let app = spawn_with(|c| c.callbacks.retry_schedule = vec![Duration::from_millis(50)]).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    delivery_reaches(&app, &id, "exhausted").await;

    let (status, delivery) = app
        .post_json(&format!("/jobs/{id}/callbacks/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{delivery}");
    let record = delivery_reaches(&app, &id, "delivered").await;
    assert_eq!(record["delivery"]["attempts"], 3);
    assert_eq!(receiver.requests(HOOK).len(), 3);

    let (status, problem) = app
        .post_json(&format!("/jobs/{id}/callbacks/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "delivery_not_exhausted");
    let (_, no_callback) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {}}))
        .await;
    let (status, _) = app
        .post_json(
            &format!("/jobs/{}/callbacks/retry", job_id(&no_callback)),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn private_addresses_are_refused_at_intake_unless_allowed() {
    let app = spawn_with(|c| c.callbacks.allow_networks = vec![]).await;
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let (status, problem) = app
            .orchestrate_json(json!({"intent": "system.echo", "inputs": {}, "callback_url": url}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(problem["code"], "invalid_callback_url");
        assert_eq!(problem["errors"][0]["field"], "callback_url");
    }
}

/// A name (not an IP literal, not `localhost` or `localhost.`, both refused at intake) that
/// resolves only to loopback here.
fn loopback_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let mut candidates: Vec<String> = ["vm", "runsc", "localhost.localdomain", "ip6-localhost"]
        .map(String::from)
        .to_vec();
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        candidates.insert(0, h.trim().to_owned());
    }
    candidates.into_iter().find(|name| {
        (name.as_str(), 80)
            .to_socket_addrs()
            .map(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
            })
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_when_connecting() {
    let name = loopback_name();
    if !prerequisite(
        name.is_some(),
        "a host name (not `localhost`) that resolves to loopback only",
    ) {
        return;
    }
    let name = name.expect("present");
    let receiver = MockServer::start().await;
    let app = spawn_with(|c| c.callbacks.allow_networks = vec![]).await;
    let url = format!("http://{name}:{}{HOOK}", receiver.addr.port());
    let id = echo_with_callback(&app, &url).await;
    let record = delivery_reaches(&app, &id, "exhausted").await;
    let attempt = &record["attempts"][0];
    assert_eq!(attempt["outcome"], "refused");
    assert!(
        attempt["error"].as_str().unwrap().contains("loopback"),
        "{record}"
    );
    assert!(receiver.requests(HOOK).is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_restart_between_finishing_and_delivering_still_delivers_once() {
    let db = TestDb::new().await;
    let receiver = MockServer::start().await;
    // This instance finishes the job but delivers nothing, then vanishes.
    let mut first = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(|c| c.callbacks.delivery_concurrency = 0),
        ..Default::default()
    })
    .await;
    let id = echo_with_callback(&first, &receiver.url(HOOK)).await;
    let (_, pending) = first.get_json(&format!("/jobs/{id}/callbacks")).await;
    assert_eq!(
        pending["delivery"]["status"], "pending",
        "written with the job's completion"
    );
    first.kill();

    let second = spawn(Spawn {
        db: Some(db.clone()),
        ..Default::default()
    })
    .await;
    delivery_reaches(&second, &id, "delivered").await;
    let got = receiver.requests(HOOK);
    assert_eq!(got.len(), 1, "delivered exactly once");
    assert_eq!(got[0].json()["job_id"], id.as_str());
    let audits = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM callback_audits WHERE direction = 'out'"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audits, 1);
}

#[tokio::test]
async fn the_signing_secret_is_never_shown_without_a_key_even_while_the_api_is_open() {
    let app = spawn_app().await;
    // No key exists: the API is open, yet the secret stays behind a keys:admin key.
    let (status, problem) = app.get_json("/callbacks/secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["missing_scope"], "keys:admin", "{problem}");
    let admin = app.key("ops", &["keys:admin"]).await;
    let (status, shown) = app.get_json_as(&admin, "/callbacks/secret").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(shown["secret"].as_str().unwrap().starts_with("whsec_"));
}

#[tokio::test]
async fn without_a_configured_secret_a_generated_one_signs_and_every_instance_shares_it() {
    let receiver = MockServer::start().await;
    let unconfigured = |c: &mut orchestrator::config::Config| {
        c.callbacks.signing_secret = Default::default();
    };
    let app = spawn_with(unconfigured).await;
    let id = echo_with_callback(&app, &receiver.url(HOOK)).await;
    let got = receiver.wait_for(HOOK, 1).await;
    assert!(
        !got[0].header("webhook-signature").is_empty(),
        "never sent unsigned"
    );

    let admin = app.key("ops", &["keys:admin"]).await;
    let read_secret = |app: &TestApp| {
        let request = app
            .client
            .get(format!("{}/callbacks/secret", app.base))
            .bearer_auth(&admin);
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["cache-control"], "no-store");
            resp.json::<Value>().await.unwrap()
        }
    };
    let shown = read_secret(&app).await;
    assert_eq!(shown["source"], "generated");
    let secret = shown["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert!(
        signature_is_valid(&secret, &got[0]),
        "the generated secret signed the callback of {id}"
    );

    let second = spawn(Spawn {
        db: Some(app.db.clone()),
        configure: Box::new(unconfigured),
        ..Default::default()
    })
    .await;
    assert_eq!(read_secret(&second).await["secret"], secret.as_str());

    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM audit_events WHERE kind LIKE 'callbacks.secret%' ORDER BY id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [
            "callbacks.secret_generated",
            "callbacks.secret_read",
            "callbacks.secret_read"
        ]
    );
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(detail::text, '') FROM audit_events WHERE kind LIKE 'callbacks.secret%'",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(details.iter().all(|d| !d.contains(&secret[6..])));
}

#[tokio::test]
async fn the_signing_secret_needs_keys_admin_and_configured_secrets_win() {
    let app = spawn_with(|_| {}).await;
    let reader = app.key("reader", &["jobs:read:all"]).await;
    let admin = app.key("ops", &["keys:admin"]).await;
    let get = |key: String| {
        app.client
            .get(format!("{}/callbacks/secret", app.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(get(reader).await.unwrap().status(), StatusCode::FORBIDDEN);
    let shown: Value = get(admin).await.unwrap().json().await.unwrap();
    assert_eq!(shown["source"], "configured");
    assert_eq!(shown["secret"], SIGNING_SECRET);
    let generated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM server_settings WHERE name = 'callbacks.signing_secret'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(generated, 0, "nothing generated when one is configured");
}
