//! `GET /tools`, `GET /openapi.json` (and its committed copy), health and metrics.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_with};

#[tokio::test]
async fn tools_lists_every_intent_with_its_schema() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/tools").await;
    assert_eq!(status, StatusCode::OK);
    let tools = body["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for expected in [
        "memory.delete",
        "memory.get",
        "memory.search",
        "memory.write",
        "system.echo",
        "system.sleep",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let write = tools.iter().find(|t| t["name"] == "memory.write").unwrap();
    assert_eq!(write["mode"], "agent");
    assert_eq!(write["effect"], "write");
    assert_eq!(write["input_schema"]["required"][0], "text");
    let search = tools.iter().find(|t| t["name"] == "memory.search").unwrap();
    assert_eq!(search["effect"], "read");
}

#[tokio::test]
async fn openapi_is_importable_as_a_chatgpt_action() {
    let app = spawn_with(|c| c.server.public_url = "https://orch.example.com".into()).await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["servers"][0]["url"], "https://orch.example.com");
    let op = &doc["paths"]["/orchestrate"]["post"];
    assert_eq!(op["operationId"], "orchestrate");
    let req = &doc["components"]["schemas"]["OrchestrateRequest"];
    let intents: Vec<&str> = req["properties"]["intent"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(intents.contains(&"memory.write") && intents.contains(&"memory.search"));
    assert_eq!(
        doc["components"]["schemas"]["inputs.memory.write"]["required"][0],
        "text"
    );
    assert!(
        req["properties"]["inputs"]["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["$ref"] == "#/components/schemas/inputs.memory.write")
    );
    // Every operation can be called by an action.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
    assert!(
        req["properties"]["async"].is_object(),
        "the body field is named async"
    );
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json is committed"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("openapi")
        .env_remove("ORCHESTRATOR_CONFIG")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        generated == committed,
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["migrations"], "ok");

    app.orchestrate_json(serde_json::json!({"intent": "system.echo", "inputs": {}}))
        .await;
    let text = app.get_text("/metrics").await;
    assert!(text.contains("orchestrator_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/orchestrate\""));
    assert!(text.contains("orchestrator_jobs_finished_total"));
}

#[tokio::test]
async fn readiness_fails_and_intake_answers_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    let name: String = sqlx::query_scalar!(r#"SELECT current_database() AS "n!""#)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let admin_url = app.db.url.replace(&format!("/{name}"), "/postgres");
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    // Closed, then renamed away rather than dropped: DROP DATABASE waits for a checkpoint,
    // which takes minutes on a busy machine while other tests fill the buffers.
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    assert_unavailable(&app, "closed to connections").await;

    sqlx::query(&format!("ALTER DATABASE {name} RENAME TO {name}_gone"))
        .execute(&admin)
        .await
        .unwrap();
    assert_unavailable(&app, "gone").await;
}

#[tokio::test]
async fn pooled_connections_the_database_dropped_while_idle_are_replaced_before_use() {
    // Checked whenever idle at all, so the check's wiring is what is tested (the default
    // lends a connection used within the last second without a round trip).
    let app = spawn_with(|c| c.database.check_idle_after = Duration::ZERO).await;
    let (status, body) = app
        .orchestrate_json(serde_json::json!({"intent": "system.echo", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let name: String = sqlx::query_scalar!(r#"SELECT current_database() AS "n!""#)
        .fetch_one(app.pool())
        .await
        .unwrap();
    // Every session of the server's ends, as in a restart; the database stays open.
    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'orchestrator'",
    )
    .bind(&name)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the server has pooled sessions");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&killed)
        .execute(app.pool())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
            )
            .bind(&killed)
            .fetch_one(app.pool())
            .await
            .unwrap()
                == 0
        })
        .await,
        "the server's sessions ended"
    );
    // The next request is served on a fresh connection, not failed on a dead one.
    let (status, body) = app
        .orchestrate_json(serde_json::json!({"intent": "system.echo", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn assert_unavailable(app: &TestApp, why: &str) {
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}: {body}");
    assert_eq!(body["checks"]["database"], "failed", "{why}");
    let (status, body) = app
        .orchestrate_json(serde_json::json!({"intent": "system.echo", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}: {body}");
    assert_eq!(body["code"], "unavailable", "{why}");
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{why}: the process itself is fine");
}

#[tokio::test]
async fn public_endpoints_reveal_no_configuration_without_a_key() {
    let keys = tempfile::tempdir().unwrap();
    let user_key = keys.path().join("id_ed25519");
    let host_key = crate::sshd::keygen(&keys.path().join("host"), "");
    crate::sshd::keygen(&user_key, "");
    const FLOW_URL: &str = "http://127.0.0.1:9/webhook/ap-secret-token-9f2c";
    let app = spawn_with(move |c| {
        let mut host = orchestrator::tools::ssh::HostConfig::new("127.0.0.1", 22, "ops");
        host.key_file = Some(user_key);
        host.host_key = Some(host_key);
        c.ssh.hosts.insert("db-primary-internal".into(), host);
        c.flows.insert(
            "gmail.triage".into(),
            serde_json::from_value(serde_json::json!({"engine": "generic", "url": FLOW_URL}))
                .unwrap(),
        );
    })
    .await;
    let revealing = [
        "db-primary-internal",
        "ap-secret-token",
        "gmail.triage",
        "ssh.exec",
    ];

    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let text = doc.to_string();
    for secret in revealing {
        assert!(!text.contains(secret), "{secret} in the public document");
    }
    assert!(
        text.contains("inputs.memory.write"),
        "built-in intents stay"
    );
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})
    );

    let everything = app.key("everything", &["*"]).await;
    let (_, doc) = app.get_json_as(&everything, "/openapi.json").await;
    let text = doc.to_string();
    for shown in ["db-primary-internal", "gmail.triage", "ssh.exec"] {
        assert!(text.contains(shown), "a key sees what it may run: {shown}");
    }
    let memory_only = app.key("memory", &["memory.*"]).await;
    let (_, doc) = app.get_json_as(&memory_only, "/openapi.json").await;
    assert!(!doc.to_string().contains("gmail.triage"));
    let (_, ready) = app.get_json_as(&everything, "/readyz").await;
    assert!(
        ready.get("flows").is_none(),
        "intent scopes are not ops:read"
    );

    let ops = app.key("ops", &["ops:read"]).await;
    let (_, ready) = app.get_json_as(&ops, "/readyz").await;
    assert_eq!(ready["flows"][0]["url"], FLOW_URL, "{ready}");
    assert!(ready["instance_id"].is_string());
    let (status, _) = app
        .get_json_as("orch_notarealkeynotarealkeynotarealkeynotarea", "/readyz")
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a key that is sent is checked"
    );
}

/// Runs openapi-spec-validator over `doc`; its complaint if it has one.
fn validate(doc: &Value) -> Result<(), String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = std::process::Command::new(crate::checkers::checker("openapi-spec-validator"))
        .arg(file.path())
        .output()
        .unwrap();
    out.status.success().then_some(()).ok_or_else(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every `description` in the document, with where it is: operations apart from the rest.
fn descriptions(v: &Value, path: &str, out: &mut Vec<(String, usize)>) {
    match v {
        Value::Object(map) => {
            for (k, item) in map {
                let here = format!("{path}/{k}");
                if k == "description"
                    && let Some(text) = item.as_str()
                {
                    out.push((here.clone(), text.chars().count()));
                }
                descriptions(item, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descriptions(item, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn is_operation(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 5 && parts[1] == "paths" && parts[4] == "description"
}

#[tokio::test]
async fn the_served_documents_are_valid_and_fit_chatgpt_actions() {
    let app = spawn_with(|c| {
        c.server.public_url = "https://orch.example.com/".into();
        c.flows.insert(
            "gmail.triage".into(),
            serde_json::from_value(serde_json::json!({
                "engine": "n8n", "url": "http://127.0.0.1:9/webhook/x",
                "description": "Triage the inbox. ".repeat(80)
            }))
            .unwrap(),
        );
    })
    .await;
    let key = app.key("everything", &["*"]).await;
    let (_, anonymous) = app.get_json("/openapi.json").await;
    let (_, full) = app.get_json_as(&key, "/openapi.json").await;
    let (_, actions) = app.get_json_as(&key, "/openapi.json?profile=actions").await;
    for (what, doc) in [
        ("anonymous", &anonymous),
        ("keyed", &full),
        ("actions", &actions),
    ] {
        validate(doc).unwrap_or_else(|e| panic!("the {what} document is not valid: {e}"));
        assert_eq!(
            doc["servers"][0]["url"], "https://orch.example.com",
            "{what}"
        );
        let mut found = Vec::new();
        descriptions(doc, "", &mut found);
        for (at, chars) in found {
            let limit = if is_operation(&at) { 300 } else { 700 };
            assert!(
                chars <= limit,
                "{what}: {at} is {chars} characters (> {limit})"
            );
        }
        assert!(doc.to_string().len() < 100_000 || what != "actions");
    }
    let operations: Vec<&str> = actions["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(operations.len(), 3);
    for id in ["orchestrate", "getJob", "listTools"] {
        assert!(operations.contains(&id), "{id} in the actions profile");
    }
    let timeout =
        &actions["components"]["schemas"]["OrchestrateRequest"]["properties"]["timeout_ms"];
    assert_eq!(timeout["maximum"], 40_000);
    let (status, problem) = app.get_json_as(&key, "/openapi.json?profile=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "profile");
}

#[tokio::test]
async fn action_answers_stay_under_100000_characters() {
    let app = spawn_app().await;
    let big = "x\"".repeat(80_000);
    let resp = app
        .client
        .post(format!("{}/actions/orchestrate", app.base))
        .json(&serde_json::json!({"intent": "system.echo", "inputs": {"text": big}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.chars().count() <= 100_000, "{} characters", text.len());
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["result"]["truncated"], true);
    let id = answer["job_id"].as_str().unwrap();
    assert!(
        answer["result"]["full_at"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/jobs/{id}"))
    );

    let job = app
        .client
        .get(format!("{}/actions/jobs/{id}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(job.chars().count() <= 100_000, "{} characters", job.len());
    let job: Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["status"], "succeeded");
    // The REST API still answers in full.
    let full = app.job(id).await;
    assert_eq!(full["result"]["text"].as_str().unwrap().len(), big.len());

    let (status, tools) = app.get_json("/actions/tools").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "memory.write")
    );
}
