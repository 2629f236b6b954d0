//! Flow mode against loopback servers that answer like n8n and ActivePieces, and the inbound
//! `/callbacks/ingest` an async flow reports through.

use std::time::Duration;

use orchestrator::tools::flow::{Completion, FlowAuth, FlowConfig, FlowEngine};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    callbacks::{callbacks_of, delivery_reaches},
    helpers::{INGEST_SECRET, SIGNING_SECRET, TestApp, eventually, job_id, spawn_with},
    mock_http::{MockServer, Recorded, Reply, signature_is_valid},
};

fn flow(engine: FlowEngine, url: String, completion: Completion) -> FlowConfig {
    FlowConfig {
        engine,
        url,
        method: "POST".into(),
        timeout: Duration::from_secs(2),
        completion,
        callback_deadline: Duration::from_secs(60),
        auth: None,
        description: Some("Triage the inbox".into()),
        input_schema: Some(json!({
            "type": "object",
            "properties": {"since": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}}},
            "required": ["since"],
            "additionalProperties": false
        })),
        read_only: false,
        destructive: None,
        max_attempts: 3,
        breaker_threshold: 5,
        breaker_open: Duration::from_secs(60),
        rate_limit: None,
        concurrency: None,
    }
}

async fn app_with_flows(flows: Vec<(&str, FlowConfig)>) -> TestApp {
    let flows: Vec<(String, FlowConfig)> =
        flows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    spawn_with(move |c| c.flows.extend(flows)).await
}

fn triage(inputs_since: &str) -> Value {
    json!({"intent": "gmail.triage", "inputs": {"since": inputs_since, "labels": ["inbox"]}})
}

fn token_of(request: &Recorded) -> String {
    request.json()["callback"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn ingest(app: &TestApp, bearer: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(format!("{}/callbacks/ingest", app.base))
        .json(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{KeyInit, Mac};
    let key = STANDARD.decode(&secret["whsec_".len()..]).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn ingest_signed(
    app: &TestApp,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
) -> StatusCode {
    app.client
        .post(format!("{}/callbacks/ingest", app.base))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn an_n8n_flow_answering_when_the_last_node_finishes_returns_its_result() {
    let n8n = MockServer::start().await;
    n8n.otherwise(
        "/webhook/gmail-triage",
        Reply::json(200, json!({"processed": 15, "archived": 8})),
    );
    // SAFETY: tests in this binary only read this variable.
    unsafe { std::env::set_var("TEST_N8N_TOKEN", "n8n-secret-token") };
    let mut config = flow(
        FlowEngine::N8n,
        n8n.url("/webhook/gmail-triage"),
        Completion::Sync,
    );
    config.auth = Some(FlowAuth::Bearer {
        token_env: "TEST_N8N_TOKEN".into(),
    });
    let app = app_with_flows(vec![("gmail.triage", config)]).await;

    let (status, body) = app.orchestrate_json(triage("1 hour ago")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "flow");
    assert_eq!(body["status"], "success");
    assert_eq!(body["result"], json!({"processed": 15, "archived": 8}));

    let sent = &n8n.requests("/webhook/gmail-triage")[0];
    assert_eq!(sent.method.as_str(), "POST");
    assert!(
        signature_is_valid(SIGNING_SECRET, sent),
        "flow requests are signed"
    );
    assert_eq!(sent.header("authorization"), "Bearer n8n-secret-token");
    let request = sent.json();
    assert_eq!(request["job_id"], body["job_id"]);
    assert_eq!(request["intent"], "gmail.triage");
    assert_eq!(
        request["inputs"],
        json!({"since": "1 hour ago", "labels": ["inbox"]})
    );
    assert_eq!(
        request["callback"]["url"],
        "http://127.0.0.1:8080/callbacks/ingest"
    );
    assert!(token_of(sent).len() >= 43, "at least 32 random bytes");

    // The token is kept only as a hash: it appears in no column of the job.
    let stored: String =
        sqlx::query_scalar!("SELECT row_to_json(jobs)::text AS \"row!\" FROM jobs")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(!stored.contains(&token_of(sent)));
    assert!(!stored.contains("n8n-secret-token"));
}

#[tokio::test]
async fn an_n8n_respond_to_webhook_answer_is_the_result_and_inputs_are_validated() {
    let n8n = MockServer::start().await;
    n8n.otherwise(
        "/webhook/respond",
        Reply::json(200, json!([{"label": "urgent"}, {"label": "later"}])),
    );
    let app = app_with_flows(vec![(
        "gmail.triage",
        flow(
            FlowEngine::N8n,
            n8n.url("/webhook/respond"),
            Completion::Sync,
        ),
    )])
    .await;
    let (_, body) = app.orchestrate_json(triage("today")).await;
    assert_eq!(body["result"][1]["label"], "later");

    let (status, problem) = app
        .orchestrate_json(json!({"intent": "gmail.triage", "inputs": {"labels": "inbox"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"inputs.since") && fields.contains(&"inputs.labels"),
        "{problem}"
    );

    let (_, tools) = app.get_json("/tools").await;
    let listed = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gmail.triage")
        .unwrap()
        .clone();
    assert_eq!(listed["mode"], "flow");
    assert_eq!(listed["description"], "Triage the inbox");
    assert_eq!(listed["input_schema"]["required"][0], "since");
    let key = app.key("reader", &["gmail.*"]).await;
    let (_, doc) = app.get_json_as(&key, "/openapi.json").await;
    assert_eq!(
        doc["components"]["schemas"]["inputs.gmail.triage"]["required"][0],
        "since"
    );
}

#[tokio::test]
async fn an_async_flow_reports_through_ingest_and_wakes_the_waiting_request() {
    let n8n = MockServer::start().await;
    n8n.otherwise(
        "/webhook/started",
        Reply::json(200, json!({"message": "Workflow was started"})),
    );
    let receiver = MockServer::start().await;
    let app = app_with_flows(vec![(
        "gmail.triage",
        flow(
            FlowEngine::N8n,
            n8n.url("/webhook/started"),
            Completion::Async,
        ),
    )])
    .await;

    // The client waits; the flow calls back while it does.
    let mut request = triage("1 hour ago");
    request["callback_url"] = json!(receiver.url("/results"));
    request["timeout_ms"] = json!(10_000);
    let waiting = {
        let client = app.client.clone();
        let url = format!("{}/orchestrate", app.base);
        tokio::spawn(async move {
            let resp = client.post(url).json(&request).send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        })
    };
    let sent = n8n.wait_for("/webhook/started", 1).await;
    let id = sent[0].json()["job_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.job(&id).await["status"] == "awaiting_callback"
        })
        .await
    );

    let report =
        json!({"job_id": id, "status": "success", "result": {"processed": 15, "flagged": 4}});
    let (status, answer) = ingest(&app, Some(&token_of(&sent[0])), &report).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "accepted");

    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"processed": 15, "flagged": 4}));
    assert_eq!(app.job(&id).await["status"], "succeeded");

    // The job's own callback goes out.
    let delivered = receiver.wait_for("/results", 1).await;
    assert_eq!(delivered[0].json()["result"]["flagged"], 4);

    // The same report again changes nothing; another outcome is a conflict.
    let (status, again) = ingest(&app, Some(&token_of(&sent[0])), &report).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "duplicate");
    let other = json!({"job_id": id, "status": "error", "error": {"code": "late", "message": "changed my mind"}});
    let (status, problem) = ingest(&app, Some(&token_of(&sent[0])), &other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "job_finished");
    delivery_reaches(&app, &id, "delivered").await;
    assert_eq!(
        receiver.requests("/results").len(),
        1,
        "one outbound callback"
    );
}

#[tokio::test]
async fn ingest_refuses_what_it_cannot_trust_or_read_and_audits_every_attempt() {
    let n8n = MockServer::start().await;
    n8n.otherwise("/webhook/started", Reply::status(202));
    let app = app_with_flows(vec![(
        "gmail.triage",
        flow(
            FlowEngine::N8n,
            n8n.url("/webhook/started"),
            Completion::Async,
        ),
    )])
    .await;
    let (status, accepted) = app
        .orchestrate_json(
            json!({"intent": "gmail.triage", "inputs": {"since": "now"}, "async": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job_id(&accepted);
    let sent = n8n.wait_for("/webhook/started", 1).await;
    let token = token_of(&sent[0]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.job(&id).await["status"] == "awaiting_callback"
        })
        .await
    );

    let report = json!({"job_id": id, "status": "error", "error": {"code": "quota", "message": "over quota"}});
    // No credentials, a wrong token, a malformed body, an unknown job.
    assert_eq!(
        ingest(&app, None, &report).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ingest(&app, Some("not-the-token"), &report).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, problem) = ingest(
        &app,
        Some(&token),
        &json!({"job_id": id, "status": "finished"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "status");
    let (status, _) = ingest(&app, Some(&token), &json!(["not", "an", "object"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown = orchestrator::ids::JobId::new().to_string();
    let (status, _) = ingest(
        &app,
        Some(&token),
        &json!({"job_id": unknown, "status": "success"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Signed with the ingest secret: a bad signature, a stale timestamp, then the real one.
    let body = serde_json::to_vec(&report).unwrap();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        ingest_signed(
            &app,
            "msg_a",
            now,
            &sign(SIGNING_SECRET, "msg_a", now, &body),
            &body
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ingest_signed(
            &app,
            "msg_a",
            now - 600,
            &sign(INGEST_SECRET, "msg_a", now - 600, &body),
            &body
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ingest_signed(
            &app,
            "msg_a",
            now,
            &sign(INGEST_SECRET, "msg_a", now, &body),
            &body
        )
        .await,
        StatusCode::OK
    );
    // The same webhook-id again is a no-op.
    assert_eq!(
        ingest_signed(
            &app,
            "msg_a",
            now,
            &sign(INGEST_SECRET, "msg_a", now, &body),
            &body
        )
        .await,
        StatusCode::OK
    );

    let job = app.job(&id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(
        job["error"],
        json!({"code": "quota", "message": "over quota"})
    );

    let audits = callbacks_of(&app, &id).await;
    let inbound: Vec<(i64, String)> = audits["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["direction"] == "in")
        .map(|a| {
            (
                a["status_code"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Every attempt that named this job, refused or not.
    let expected: Vec<(i64, String)> = [
        (401, "rejected"),
        (401, "rejected"),
        (400, "rejected"),
        (401, "rejected"),
        (401, "rejected"),
        (200, "accepted"),
        (200, "duplicate"),
    ]
    .into_iter()
    .map(|(code, outcome)| (code, outcome.to_owned()))
    .collect();
    assert_eq!(inbound, expected, "{audits}");
    let all: String = sqlx::query_scalar!("SELECT coalesce(string_agg(row_to_json(a)::text, ''), '') AS \"all!\" FROM callback_audits a")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(!all.contains(&token), "no token in the audit");
    let unauthenticated = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM callback_audits WHERE direction = 'in' AND job_id IS NULL"#
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        unauthenticated, 1,
        "the unreadable body is audited without a job"
    );
}

#[tokio::test]
async fn a_flow_that_never_calls_back_times_out_at_its_deadline() {
    let n8n = MockServer::start().await;
    n8n.otherwise("/webhook/started", Reply::status(200));
    let mut config = flow(
        FlowEngine::N8n,
        n8n.url("/webhook/started"),
        Completion::Async,
    );
    config.callback_deadline = Duration::from_millis(300);
    let app = app_with_flows(vec![("gmail.triage", config)]).await;
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "gmail.triage", "inputs": {"since": "now"}, "timeout_ms": 5000}),
        )
        .await;
    assert_eq!(
        body["job_status"], "timed_out",
        "the waiting request learns of it: {body}"
    );
    assert_eq!(body["error"]["code"], "callback_deadline");
}

#[tokio::test]
async fn activepieces_sync_timeouts_are_retried_per_policy() {
    let ap = MockServer::start().await;
    let path = "/api/v1/webhooks/abc123/sync";
    ap.script(path, vec![Reply::status(204), Reply::status(408)]);
    ap.otherwise(path, Reply::json(200, json!({"scheduled": true})));
    let app = app_with_flows(vec![(
        "calendar.schedule",
        FlowConfig {
            input_schema: None,
            ..flow(FlowEngine::Activepieces, ap.url(path), Completion::Sync)
        },
    )])
    .await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "calendar.schedule", "inputs": {"title": "standup"}}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"], json!({"scheduled": true}));
    let job = app.job(&job_id(&body)).await;
    assert_eq!(job["attempts"], 3);
    let (_, events) = app
        .get_json(&format!("/jobs/{}/events", job_id(&body)))
        .await;
    let retries: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "retry_scheduled")
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(retries.iter().all(|e| e["detail"]["code"] == "timed_out"));
}

#[tokio::test]
async fn client_errors_fail_at_once_and_server_errors_are_retried() {
    let flows = MockServer::start().await;
    flows.otherwise(
        "/webhook/missing",
        Reply::json(
            404,
            json!({"message": "The requested webhook is not registered."}),
        ),
    );
    flows.script(
        "/webhook/flaky",
        vec![
            Reply::status(502),
            Reply::status(429).header("retry-after", "1"),
        ],
    );
    flows.otherwise("/webhook/flaky", Reply::json(200, json!({"ok": true})));
    let plain = |url| FlowConfig {
        input_schema: None,
        ..flow(FlowEngine::Generic, url, Completion::Sync)
    };
    let (missing, flaky) = (
        plain(flows.url("/webhook/missing")),
        plain(flows.url("/webhook/flaky")),
    );
    let app = spawn_with(move |c| {
        // Retry-After is honoured up to the retry cap.
        c.workers.retry_max = Duration::from_secs(5);
        c.flows.insert("slack.missing".into(), missing);
        c.flows.insert("slack.summarize".into(), flaky);
    })
    .await;

    let (_, body) = app
        .orchestrate_json(json!({"intent": "slack.missing", "inputs": {}}))
        .await;
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["code"], "flow_rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{body}"
    );
    assert_eq!(flows.requests("/webhook/missing").len(), 1, "not retried");

    let (_, body) = app
        .orchestrate_json(json!({"intent": "slack.summarize", "inputs": {}}))
        .await;
    assert_eq!(body["status"], "success", "{body}");
    let got = flows.requests("/webhook/flaky");
    assert_eq!(got.len(), 3);
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    // Every attempt is the same message.
    assert_eq!(got[0].header("webhook-id"), got[2].header("webhook-id"));
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_after_repeated_failures() {
    let flows = MockServer::start().await;
    flows.otherwise("/webhook/down", Reply::status(500));
    let app = app_with_flows(vec![(
        "slack.summarize",
        FlowConfig {
            input_schema: None,
            max_attempts: 1,
            breaker_threshold: 2,
            ..flow(
                FlowEngine::Generic,
                flows.url("/webhook/down"),
                Completion::Sync,
            )
        },
    )])
    .await;
    for n in 0..2 {
        let (_, body) = app
            .orchestrate_json(json!({"intent": "slack.summarize", "inputs": {"n": n}}))
            .await;
        assert_eq!(body["error"]["code"], "flow_error", "{body}");
    }
    let (_, body) = app
        .orchestrate_json(json!({"intent": "slack.summarize", "inputs": {"n": 3}}))
        .await;
    assert_eq!(body["error"]["code"], "flow_unavailable", "{body}");
    assert_eq!(
        flows.requests("/webhook/down").len(),
        2,
        "the third never reached the flow"
    );
    let ops = app.key("ops", &["ops:read"]).await;
    let (_, ready) = app.get_json_as(&ops, "/readyz").await;
    assert_eq!(ready["flows"][0]["state"], "open");
    assert_eq!(ready["degraded"], true);
}

#[tokio::test]
async fn a_flow_url_resolving_to_a_refused_address_fails_without_a_request() {
    let flows = MockServer::start().await;
    let url = flows.url("/webhook/x");
    let app = spawn_with(move |c| {
        c.callbacks.allow_networks = vec![];
        c.flows.insert(
            "slack.summarize".into(),
            FlowConfig {
                input_schema: None,
                ..flow(FlowEngine::Generic, url, Completion::Sync)
            },
        );
    })
    .await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "slack.summarize", "inputs": {}}))
        .await;
    assert_eq!(body["error"]["code"], "url_refused", "{body}");
    assert!(flows.requests("/webhook/x").is_empty());
}
