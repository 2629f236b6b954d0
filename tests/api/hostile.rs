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

#[tokio::test]
async fn nul_characters_in_tool_output_are_dropped_not_fatal() {
    let app = crate::helpers::spawn(crate::helpers::Spawn {
        tools: vec![crate::test_tools::NulOutput::new()],
        ..Default::default()
    })
    .await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.nul", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"], json!({"out": "ab", "k": ["x"]}));
    let stored = app.job(body["job_id"].as_str().unwrap()).await;
    assert_eq!(stored["result"]["out"], "ab");

    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.nul", "inputs": {"fail": true}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["message"], "badoutput");
    assert_eq!(body["error"]["code"], "broken");
}

/// The sample value of a parameter that is not under test.
fn sample(name: &str) -> &'static str {
    match name {
        "job_id" => "job_0190b6a0b8e07c3a9d6b1a2b3c4d5e6f",
        _ => "x",
    }
}

fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    }
}

#[tokio::test]
async fn every_string_parameter_holding_a_nul_gets_a_4xx_naming_it() {
    let app = spawn_app().await;
    let (_, doc) = app.get_json("/openapi.json").await;
    let mut tried = 0;
    // A 400 names the field: in `errors` (problem+json), in `error_description` (the OAuth
    // endpoints answer as RFC 6749/7591 say), or on the page (the consent page).
    let check = |what: String, status: StatusCode, body: String, field: &str| {
        assert!(status.is_client_error(), "{what} → {status}: {body}");
        if status != StatusCode::BAD_REQUEST {
            return;
        }
        let base = field.split('[').next().unwrap();
        match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(json) if json.get("errors").is_some() => {
                assert_eq!(json["errors"][0]["field"], field, "{what}: {json}")
            }
            Ok(json) => assert!(
                json["error_description"]
                    .as_str()
                    .is_some_and(|d| d.contains(base)),
                "{what}: {json}"
            ),
            Err(_) => assert!(body.contains(base), "{what}: {body}"),
        }
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let fill = |nul_in: Option<&str>| {
                params
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .fold(path.clone(), |url, p| {
                        let name = p["name"].as_str().unwrap();
                        let value = if Some(name) == nul_in {
                            "a%00b"
                        } else {
                            sample(name)
                        };
                        url.replace(&format!("{{{name}}}"), value)
                    })
            };
            let send = |url: String, body: Option<serde_json::Value>| {
                let req = app.client.request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{url}", app.base),
                );
                let req = match body {
                    Some(b) => req.json(&b),
                    None => req,
                };
                async move {
                    let resp = req.send().await.unwrap();
                    (resp.status(), resp.text().await.unwrap_or_default())
                }
            };
            for p in &params {
                let name = p["name"].as_str().unwrap();
                let url = match p["in"].as_str().unwrap() {
                    "path" => fill(Some(name)),
                    "query" => format!("{}?{name}=a%00b", fill(None)),
                    _ => continue,
                };
                let (status, problem) = send(url.clone(), None).await;
                check(format!("{method} {url}"), status, problem, name);
                tried += 1;
            }
            let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let schema = resolve(&doc, body_schema);
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                let prop = resolve(&doc, prop);
                let (value, field) = match prop["type"].as_str() {
                    Some("string") => (json!("a\u{0}b"), name.clone()),
                    Some("array") => (json!(["a\u{0}b"]), format!("{name}[0]")),
                    _ if prop["type"] == json!(["string", "null"]) => {
                        (json!("a\u{0}b"), name.clone())
                    }
                    _ => continue,
                };
                // Every operation's required fields, valid, so the NUL is what is refused.
                let body = json!({"intent": "system.echo", "inputs": {}, "name": "n",
                                  "scopes": ["*"], "redirect_uris": ["http://127.0.0.1/cb"],
                                  name.as_str(): value});
                let (status, problem) = send(fill(None), Some(body)).await;
                check(
                    format!("{method} {path} body.{field}"),
                    status,
                    problem,
                    &field,
                );
                tried += 1;
            }
        }
    }
    assert!(tried >= 15, "walked only {tried} parameters");
}
