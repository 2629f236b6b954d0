//! Malformed and hostile input never gets a 500, and nothing accepted is lost.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn hostile_bodies_get_4xx_never_5xx() {
    let app = spawn_app().await;
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_inputs = format!(
        r#"{{"intent":"system.echo","inputs":{{"a":{}1{}}}}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    let bodies: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("application/json"), b"".to_vec()),
        (Some("application/json"), b"null".to_vec()),
        (Some("application/json"), b"\"just a string\"".to_vec()),
        (Some("application/json"), b"{\"intent\":".to_vec()),
        (Some("application/json"), vec![0xff, 0xfe, 0x00, 0x7b]),
        (Some("application/json"), deep.into_bytes()),
        (Some("application/json"), deep_inputs.into_bytes()),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{"n":1e400}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{"s":"a\u0000b"}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{"k\u0000":1}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo\u0000","inputs":{}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{},"idempotency_key":"a\u0000"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{},"callback_url":"javascript:alert(1)"}"#
                .to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{},"callback_url":"http://169.254.169.254/"}"#
                .to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{},"timeout_ms":18446744073709551616}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.echo","inputs":{},"max_attempts":2147483648}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"","inputs":{}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            format!(r#"{{"intent":"{}","inputs":{{}}}}"#, "x".repeat(5000)).into_bytes(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.sleep","inputs":{"ms":-1}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"system.sleep","inputs":{"ms":1e300}}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"intent":"memory.search","inputs":{"query":"!!! & | ( :* <->"}}"#.to_vec(),
        ),
        (
            Some("text/plain"),
            br#"{"intent":"system.echo","inputs":{}}"#.to_vec(),
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"intent=system.echo".to_vec(),
        ),
        (
            None,
            br#"{"intent":"system.echo","inputs":{},"mode":null}"#.to_vec(),
        ),
    ];
    for (content_type, body) in bodies {
        let mut req = app
            .client
            .post(format!("{}/orchestrate", app.base))
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success() || status.is_client_error(),
            "{} → {status}: {text}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        if status.is_client_error() {
            let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(problem["code"].is_string(), "{text}");
        }
    }
}

#[tokio::test]
async fn hostile_headers_and_paths_get_4xx() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"intent": "system.echo", "inputs": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header(
            "Prefer",
            "wait=99999999999999999999999, respond-async=maybe",
        )
        .json(&json!({"intent": "system.echo", "inputs": {}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    for path in [
        "/jobs/%00",
        "/jobs/job_%27%20OR%201=1--",
        "/jobs?limit=1&limit=2",
        "/jobs?status=",
    ] {
        let (status, body) = app.get_json(path).await;
        assert!(
            status.is_client_error() || status.is_success(),
            "{path} → {status}: {body}"
        );
    }
    let resp = app
        .client
        .delete(format!("{}/orchestrate", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}
