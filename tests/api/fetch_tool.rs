//! `http.fetch` against real HTTP peers on loopback: reached only when loopback is allowed,
//! redirects re-checked hop by hop and capped, bodies capped, host globs enforced.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_with},
    mock_http::{MockServer, Reply},
};

/// An app with `http.fetch` on; `loopback` admits 127.0.0.0/8, `hosts` are the allowed globs.
async fn app(loopback: bool, hosts: &[&str], max_bytes: Option<usize>) -> TestApp {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    spawn_with(move |c| {
        c.tools.fetch.enabled = true;
        c.tools.fetch.allow_hosts = hosts;
        if loopback {
            c.tools.fetch.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        }
        if let Some(max) = max_bytes {
            c.tools.fetch.max_response_bytes = max;
        }
    })
    .await
}

async fn fetch(app: &TestApp, inputs: Value) -> (StatusCode, Value) {
    app.orchestrate_json(json!({"intent": "http.fetch", "inputs": inputs}))
        .await
}

/// A job that ran and failed: its error code and message.
fn failure(body: &Value) -> (&str, &str) {
    assert_eq!(body["status"], "error", "{body}");
    (
        body["error"]["code"].as_str().unwrap(),
        body["error"]["message"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn a_loopback_peer_is_fetched_only_when_loopback_is_allowed() {
    let peer = MockServer::start().await;
    peer.otherwise(
        "/doc",
        Reply::json(200, json!({"hello": "world"})).header("x-peer", "yes"),
    );
    let url = peer.url("/doc");

    // The callbacks of the test config may reach loopback; fetches have their own setting.
    let closed = app(false, &[], None).await;
    let (status, problem) = fetch(&closed, json!({"url": url})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "url_not_allowed");
    assert_eq!(problem["errors"][0]["field"], "inputs.url");
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("loopback") && message.contains("tools.fetch.allow_networks"),
        "{message}"
    );
    let (status, problem) = fetch(
        &closed,
        json!({"url": format!("http://localhost:{}/doc", peer.addr.port())}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(peer.requests("/doc").is_empty());

    let open = app(true, &[], None).await;
    let (status, body) = fetch(&open, json!({"url": url, "headers": {"x-trace": "t1"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["result"];
    assert_eq!(result["status"], 200, "{body}");
    assert_eq!(result["redirects"], 0);
    assert_eq!(result["truncated"], false);
    assert_eq!(result["body_encoding"], "text");
    assert_eq!(
        serde_json::from_str::<Value>(result["body"].as_str().unwrap()).unwrap(),
        json!({"hello": "world"})
    );
    assert_eq!(result["headers"]["x-peer"], "yes");
    let seen = peer.requests("/doc");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-trace"), "t1");

    // A failure names what went wrong, not the URL (its query may hold a token).
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_, body) = fetch(
        &open,
        json!({"url": format!("http://127.0.0.1:{closed_port}/x?token=s3cr3t")}),
    )
    .await;
    let (code, message) = failure(&body);
    assert_eq!(code, "connect_failed", "{body}");
    assert!(!message.contains("s3cr3t"), "{message}");
}

#[tokio::test]
async fn gets_run_every_time_and_a_post_is_answered_once_per_body() {
    let peer = MockServer::start().await;
    let app = app(true, &[], None).await;
    for _ in 0..2 {
        let (_, body) = fetch(&app, json!({"url": peer.url("/read")})).await;
        assert_eq!(body["result"]["status"], 200, "{body}");
    }
    assert_eq!(
        peer.requests("/read").len(),
        2,
        "GET is a read: run each time"
    );
    let post = json!({"url": peer.url("/write"), "method": "POST", "body": "{\"n\":1}",
                      "headers": {"content-type": "application/json"}});
    let (_, first) = fetch(&app, post.clone()).await;
    let (_, again) = fetch(&app, post).await;
    assert_eq!(first["result"]["status"], 200, "{first}");
    assert_eq!(again["idempotent_replay"], true, "{again}");
    let seen = peer.requests("/write");
    assert_eq!(
        seen.len(),
        1,
        "POST is a write: answered from its first job"
    );
    assert_eq!(seen[0].json(), json!({"n": 1}));
}

#[tokio::test]
async fn redirects_are_followed_up_to_five_each_hop_checked() {
    let peer = MockServer::start().await;
    for i in 0..7 {
        peer.otherwise(
            &format!("/r{i}"),
            Reply::status(302).header("location", format!("/r{}", i + 1)),
        );
    }
    peer.otherwise("/r5", Reply::json(200, json!({"end": 5})));
    let app = app(true, &[], None).await;

    // Five redirects: followed.
    let (_, body) = fetch(&app, json!({"url": peer.url("/r0")})).await;
    assert_eq!(body["result"]["status"], 200, "{body}");
    assert_eq!(body["result"]["redirects"], 5);
    assert!(body["result"]["url"].as_str().unwrap().ends_with("/r5"));

    // Six: refused, and the sixth target never asked.
    peer.otherwise("/s5", Reply::status(301).header("location", "/s6"));
    for i in 0..5 {
        peer.otherwise(
            &format!("/s{i}"),
            Reply::status(307).header("location", format!("/s{}", i + 1)),
        );
    }
    let (_, body) = fetch(&app, json!({"url": peer.url("/s0")})).await;
    assert_eq!(failure(&body).0, "too_many_redirects", "{body}");
    assert!(peer.requests("/s6").is_empty());

    // A redirect into a private network is refused before anything is sent there.
    for target in [
        "http://10.0.0.1/internal",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "file:///etc/passwd",
    ] {
        peer.otherwise("/jump", Reply::status(302).header("location", target));
        let (_, body) = fetch(&app, json!({"url": peer.url("/jump")})).await;
        let (code, message) = failure(&body);
        assert_eq!(code, "url_not_allowed", "{target}: {body}");
        assert!(message.starts_with("redirect 1:"), "{message}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_drops_the_callers_headers() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    first.otherwise(
        "/go",
        Reply::status(303).header("location", second.url("/landed")),
    );
    let app = app(true, &[], None).await;
    let (_, body) = fetch(
        &app,
        json!({"url": first.url("/go"), "method": "POST", "body": "secret payload",
               "headers": {"x-api-key": "k"}}),
    )
    .await;
    assert_eq!(body["result"]["status"], 200, "{body}");
    let landed = second.requests("/landed");
    assert_eq!(landed.len(), 1);
    // 303: the POST became a GET without its body.
    assert_eq!(landed[0].method, "GET");
    assert!(landed[0].body.is_empty());
    assert!(landed[0].headers.get("x-api-key").is_none());
    assert_eq!(first.requests("/go")[0].header("x-api-key"), "k");
}

#[tokio::test]
async fn bodies_over_the_cap_are_truncated_and_slow_peers_time_out() {
    let peer = MockServer::start().await;
    peer.otherwise("/big", Reply::json(200, json!("x".repeat(100))));
    peer.otherwise(
        "/bin",
        Reply {
            body: "a\0b".into(),
            ..Reply::status(200)
        },
    );
    peer.otherwise("/slow", Reply::status(200).after(Duration::from_secs(5)));
    let app = app(true, &[], Some(16)).await;
    let (_, body) = fetch(&app, json!({"url": peer.url("/big")})).await;
    let result = &body["result"];
    assert_eq!(result["truncated"], true, "{body}");
    assert_eq!(result["body"].as_str().unwrap().len(), 16);
    // NUL cannot sit in a stored JSON string: such a body comes back as base64.
    let (_, body) = fetch(&app, json!({"url": peer.url("/bin")})).await;
    assert_eq!(body["result"]["body_encoding"], "base64", "{body}");
    assert_eq!(body["result"]["body"], "YQBi");
    assert_eq!(body["result"]["truncated"], false);

    let (_, body) = fetch(&app, json!({"url": peer.url("/slow"), "timeout_ms": 300})).await;
    assert_eq!(body["job_status"], "timed_out", "{body}");
}

#[tokio::test]
async fn hosts_outside_the_allowed_globs_are_refused_at_every_hop() {
    let peer = MockServer::start().await;
    let port = peer.addr.port();
    let app = app(true, &["*.example.com", "127.0.0.1"], None).await;
    let (status, problem) = fetch(&app, json!({"url": format!("http://localhost:{port}/x")})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "url_not_allowed");
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("tools.fetch.allow_hosts"), "{message}");

    // Allowed itself, but its redirect names a host no glob admits.
    peer.otherwise(
        "/hop",
        Reply::status(302).header("location", format!("http://localhost:{port}/x")),
    );
    let (_, body) = fetch(&app, json!({"url": peer.url("/hop")})).await;
    let (code, message) = failure(&body);
    assert_eq!(code, "url_not_allowed", "{body}");
    assert!(
        message.contains("`localhost` is not in tools.fetch.allow_hosts"),
        "{message}"
    );
    assert!(peer.requests("/x").is_empty());
}

#[tokio::test]
async fn without_enabling_there_is_no_fetch_tool() {
    let app = spawn_with(|_| {}).await;
    let (status, problem) = fetch(&app, json!({"url": "https://example.com/"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "unknown_intent");
}

#[tokio::test]
async fn credentials_come_from_configuration_never_from_inputs_and_go_only_to_their_hosts() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    // Another host (the same loopback address): the redirect leaves the credential's host.
    first.otherwise(
        "/go",
        Reply::status(302).header(
            "location",
            format!("http://localhost:{}/landed", second.addr.port()),
        ),
    );
    let credential_host = format!("127.0.0.1:{}", first.addr.port());
    let app = spawn_with(move |c| {
        c.tools.fetch.enabled = true;
        c.tools.fetch.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.tools.fetch.credentials = serde_json::from_value(json!([
            {"hosts": [credential_host],
             "value": "Bearer configured-token", "allow_http": true},
            {"hosts": ["*.example.org"], "header": "x-api-key", "value": "other-key"}
        ]))
        .unwrap();
    })
    .await;

    // A caller's credential would be stored with the job: refused, naming the header.
    for header in ["authorization", "cookie", "x-api-key"] {
        let (status, problem) = fetch(
            &app,
            json!({"url": first.url("/go"), "headers": {header: "mine"}}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "credential_not_allowed", "{problem}");
        assert_eq!(
            problem["errors"][0]["field"],
            format!("inputs.headers.{header}")
        );
    }
    assert!(first.requests("/go").is_empty());

    let (status, body) = fetch(&app, json!({"url": first.url("/go")})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], 200, "{body}");
    let sent = first.requests("/go");
    assert_eq!(sent[0].header("authorization"), "Bearer configured-token");
    assert!(sent[0].headers.get("x-api-key").is_none(), "not its host");
    let landed = second.requests("/landed");
    assert_eq!(landed.len(), 1);
    assert!(landed[0].headers.get("authorization").is_none());
    // The same host on another port is another service: not the credential's.
    let (status, body) = fetch(&app, json!({"url": second.url("/other-port")})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other_port = second.requests("/other-port");
    assert_eq!(other_port.len(), 1);
    assert!(other_port[0].headers.get("authorization").is_none());
    // Neither the answer nor the job's row holds it.
    assert!(!body.to_string().contains("configured-token"));
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE concat(inputs::text, result::text) LIKE '%configured-token%'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_credential_goes_only_over_https_unless_its_allow_http_is_on() {
    let credentialed = MockServer::start().await;
    let other = MockServer::start().await;
    // From a host without credential, a redirect to the credential's host over http.
    other.otherwise(
        "/go",
        Reply::status(302).header(
            "location",
            format!("http://127.0.0.1:{}/secret", credentialed.addr.port()),
        ),
    );
    let credential_host = format!("127.0.0.1:{}", credentialed.addr.port());
    let app = spawn_with(move |c| {
        c.tools.fetch.enabled = true;
        c.tools.fetch.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.tools.fetch.credentials = serde_json::from_value(json!([
            {"hosts": [credential_host],
             "value": "Bearer configured-token"}
        ]))
        .unwrap();
    })
    .await;

    let (status, problem) = fetch(&app, json!({"url": credentialed.url("/secret")})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "url_not_allowed", "{problem}");
    assert_eq!(problem["errors"][0]["field"], "inputs.url");
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("only over https"), "{problem}");

    let url = format!("http://localhost:{}/go", other.addr.port());
    let (status, body) = fetch(&app, json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (code, message) = failure(&body);
    assert_eq!(code, "url_not_allowed", "{body}");
    assert!(message.contains("only over https"), "{body}");
    assert!(
        credentialed.requests("/secret").is_empty(),
        "nothing sent in the clear"
    );
}
