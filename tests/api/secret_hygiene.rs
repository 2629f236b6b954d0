//! Every kind of secret the server holds stays out of everything it writes or answers: a real
//! binary, a representative workload (flows with each kind of credential, signed callbacks,
//! ingests by token and by signature, SSH with an encrypted key, an MCP server behind a
//! credential header, errors), then a search of its logs, every row of the tables it writes,
//! `/metrics`, `/readyz` and its error answers.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    flows::sign,
    helpers::{TestDb, eventually},
    mcp_peers::EverythingHttp,
    mock_http::{MockServer, Reply},
    process::{Invocation, free_port, text},
    sshd::{Sshd, keygen},
};

const SIGNING: &str = "whsec_c2lnbmluZy1zZWNyZXQtb25lLTAxMjM0NTY3ODk=";
const SIGNING_NEXT: &str = "whsec_c2lnbmluZy1zZWNyZXQtdHdvLTAxMjM0NTY3ODk=";
const INGEST: &str = "whsec_aW5nZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm";
const FLOW_TOKEN: &str = "flow-bearer-token-6c1d2e";
const FLOW_HEADER: &str = "flow-header-value-9a8b7c";
const FLOW_PASSWORD: &str = "flow-basic-password-4f3e";
const MCP_AUTH: &str = "Bearer mcp-credential-77aa66bb";
const SSH_PASSPHRASE: &str = "ssh-key-passphrase-5d5d5d";

#[tokio::test]
async fn no_secret_reaches_logs_tables_metrics_or_answers() {
    let engine = MockServer::start().await;
    for path in ["/bearer", "/header", "/basic"] {
        engine.otherwise(path, Reply::json(200, json!({"ok": true})));
    }
    // An n8n workflow whose last node is its Webhook node answers with the request it got,
    // headers included: our credential comes back as the result.
    engine.otherwise(
        "/echo",
        Reply::json(
            200,
            json!({"headers": {"authorization": format!("Bearer {FLOW_TOKEN}")}}),
        ),
    );
    engine.otherwise(
        "/async",
        Reply::json(202, json!({"message": "Workflow was started"})),
    );
    engine.otherwise("/fails", Reply::json(500, json!({"error": "engine broke"})));
    engine.otherwise("/hook", Reply::status(200));
    let mcp = EverythingHttp::start().await;
    let sshd = Sshd::start().await;
    let key_file = sshd.path("encrypted_ed25519");
    let public = keygen(&key_file, SSH_PASSPHRASE);
    std::fs::write(sshd.path("authorized_keys"), public + "\n").unwrap();

    let config = sshd.path("orchestrator.toml");
    let flow = |name: &str, path: &str, extra: &str| {
        format!(
            "[flows.\"{name}\"]\nengine = \"generic\"\nurl = \"{}\"\n{extra}\n",
            engine.url(path)
        )
    };
    std::fs::write(
        &config,
        [
            format!(
                "[callbacks]\nsigning_secret = \"{SIGNING}\"\nsigning_secrets = [\"{SIGNING_NEXT}\"]\n\
                 ingest_secret = \"{INGEST}\"\nallow_networks = [\"127.0.0.0/8\"]\n\
                 retry_schedule_ms = [100]\n"
            ),
            flow(
                "test.bearer",
                "/bearer",
                "auth = { type = \"bearer\", token_env = \"FLOW_TOKEN\" }",
            ),
            flow(
                "test.header",
                "/header",
                "auth = { type = \"header\", name = \"X-Flow-Key\", value_env = \"FLOW_HEADER\" }",
            ),
            flow(
                "test.basic",
                "/basic",
                "auth = { type = \"basic\", username = \"orch\", password_env = \"FLOW_PASSWORD\" }",
            ),
            flow(
                "test.echo",
                "/echo",
                "auth = { type = \"bearer\", token_env = \"FLOW_TOKEN\" }",
            ),
            flow(
                "test.async",
                "/async",
                "completion = \"async\"\nauth = { type = \"bearer\", token_env = \"FLOW_TOKEN\" }",
            ),
            flow(
                "test.fails",
                "/fails",
                "max_attempts = 1\nauth = { type = \"bearer\", token_env = \"FLOW_TOKEN\" }",
            ),
            format!(
                "[ssh.hosts.test]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
                 key_file = \"{}\"\npassphrase_env = \"SSH_PASSPHRASE\"\nhost_key = \"{}\"\n",
                sshd.port,
                sshd.user,
                key_file.display(),
                sshd.host_key
            ),
            format!(
                "[mcp.servers.everything]\nurl = \"{}\"\nheader_env = {{ Authorization = \"MCP_AUTH\" }}\n\
                 allow_tools = [\"echo\"]\n",
                mcp.url()
            ),
        ]
        .concat(),
    )
    .unwrap();

    let db = TestDb::new().await;
    let run = Invocation::default()
        .env("DATABASE_URL", &db.url)
        .env("ORCHESTRATOR_CONFIG", config.to_str().unwrap())
        .env("RUST_LOG", "debug")
        .env("FLOW_TOKEN", FLOW_TOKEN)
        .env("FLOW_HEADER", FLOW_HEADER)
        .env("FLOW_PASSWORD", FLOW_PASSWORD)
        .env("SSH_PASSPHRASE", SSH_PASSPHRASE)
        .env("MCP_AUTH", MCP_AUTH);
    let created = run.run(&[
        "keys",
        "create",
        "--name",
        "ops",
        "--scopes",
        "*,jobs:read:all,ops:read",
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let api_key = text(&created.stdout).trim().to_owned();
    let port = free_port();
    let mut served = run.serve(&format!("127.0.0.1:{port}"));
    assert!(
        served.printed("listening", Duration::from_secs(60)).await,
        "{}",
        served.logs()
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut answers: Vec<String> = Vec::new();
    let orchestrate = |body: Value| {
        let request = client
            .post(format!("{base}/orchestrate"))
            .bearer_auth(&api_key)
            .json(&body);
        async move {
            let resp = request.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };

    let hook = engine.url("/hook");
    for intent in [
        "test.bearer",
        "test.header",
        "test.basic",
        "test.echo",
        "test.fails",
    ] {
        let (_, body) = orchestrate(json!({"intent": intent, "inputs": {}, "callback_url": hook,
                                           "timeout_ms": 20000}))
        .await;
        answers.push(body);
    }
    let (_, body) = orchestrate(json!({"intent": "ssh.exec.peek", "timeout_ms": 30000,
                                       "inputs": {"host": "test", "command": "id -un"}}))
    .await;
    assert!(body.contains("\"success\""), "{body}");
    answers.push(body);
    let (_, body) = orchestrate(json!({"intent": "mcp.everything.echo", "timeout_ms": 30000,
                                       "inputs": {"message": "hello"}}))
    .await;
    assert!(body.contains("hello"), "{body}");
    answers.push(body);

    // Two async flow jobs: one reported with the job's token, one with a signed ingest.
    let mut tokens = Vec::new();
    for n in 0..2 {
        let (status, body) =
            orchestrate(json!({"intent": "test.async", "inputs": {"n": n}, "async": true})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        answers.push(body);
    }
    let requests = engine.wait_for("/async", 2).await;
    for request in &requests {
        let sent = request.json();
        let job_id = sent["job_id"].as_str().unwrap().to_owned();
        let token = sent["callback"]["token"].as_str().unwrap().to_owned();
        let report = json!({"job_id": job_id, "status": "success", "result": {"done": true}});
        let ingest = client
            .post(format!("{base}/callbacks/ingest"))
            .header("content-type", "application/json");
        let resp = if tokens.is_empty() {
            ingest
                .bearer_auth(&token)
                .json(&report)
                .send()
                .await
                .unwrap()
        } else {
            let body = report.to_string();
            let now = chrono::Utc::now().timestamp();
            ingest
                .header("webhook-id", "msg_hygiene")
                .header("webhook-timestamp", now.to_string())
                .header(
                    "webhook-signature",
                    sign(INGEST, "msg_hygiene", now, body.as_bytes()),
                )
                .body(body)
                .send()
                .await
                .unwrap()
        };
        assert_eq!(resp.status(), StatusCode::OK);
        answers.push(resp.text().await.unwrap());
        tokens.push(token);
    }

    // Error answers: a forged ingest, a bad token, a wrong key, bad inputs.
    for resp in [
        client
            .post(format!("{base}/callbacks/ingest"))
            .bearer_auth(format!("{}x", tokens[0]))
            .json(&json!({"job_id": requests[0].json()["job_id"], "status": "error"}))
            .send()
            .await
            .unwrap(),
        client
            .post(format!("{base}/callbacks/ingest"))
            .header("webhook-id", "msg_forged")
            .header(
                "webhook-timestamp",
                chrono::Utc::now().timestamp().to_string(),
            )
            .header("webhook-signature", "v1,Zm9yZ2Vk")
            .json(&json!({"job_id": requests[1].json()["job_id"], "status": "error"}))
            .send()
            .await
            .unwrap(),
        client
            .get(format!("{base}/jobs"))
            .bearer_auth(format!("{api_key}x"))
            .send()
            .await
            .unwrap(),
    ] {
        assert!(resp.status().is_client_error());
        answers.push(resp.text().await.unwrap());
    }
    let (status, body) =
        orchestrate(json!({"intent": "ssh.exec.peek", "inputs": {"host": "test", "command": "cat /etc/shadow"}}))
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    answers.push(body);

    // Every callback delivered (or given up on) before looking.
    let settled = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM callback_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    assert!(settled);
    for path in ["/metrics", "/readyz"] {
        answers.push(
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        answers.push(
            client
                .get(format!("{base}{path}"))
                .bearer_auth(&api_key)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    served.stop().await;

    let mut rows: Vec<(String, String)> = Vec::new();
    for table in [
        "jobs",
        "audit_events",
        "callback_deliveries",
        "idempotency_keys",
        "api_keys",
        "ingest_seen",
    ] {
        let dump: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(&db.pool)
                .await
                .unwrap();
        rows.extend(dump.into_iter().map(|row| (table.to_owned(), row)));
    }
    assert!(
        rows.iter()
            .any(|(t, r)| t == "jobs" && r.contains("mcp.everything.echo")),
        "the workload ran"
    );
    assert!(
        rows.iter()
            .any(|(t, r)| t == "jobs" && r.contains("\"authorization\": \"Bearer [redacted]\"")),
        "the echoed credential was cut out of the flow's result, the rest kept"
    );

    let basic = STANDARD.encode(format!("orch:{FLOW_PASSWORD}"));
    let mut secrets: Vec<(&str, String)> = vec![
        ("signing secret", SIGNING.into()),
        ("signing secret key", SIGNING["whsec_".len()..].into()),
        ("rotation secret", SIGNING_NEXT["whsec_".len()..].into()),
        ("ingest secret", INGEST["whsec_".len()..].into()),
        ("flow bearer token", FLOW_TOKEN.into()),
        ("flow header value", FLOW_HEADER.into()),
        ("flow password", FLOW_PASSWORD.into()),
        ("flow basic credentials", basic),
        ("SSH passphrase", SSH_PASSPHRASE.into()),
        ("MCP header value", "mcp-credential-77aa66bb".into()),
        ("API key", api_key[12..].to_owned()),
    ];
    for (n, token) in tokens.iter().enumerate() {
        secrets.push((
            if n == 0 { "job token 1" } else { "job token 2" },
            token.clone(),
        ));
    }
    let logs = served.logs();
    assert!(logs.contains("DEBUG"), "debug logs were captured");
    for (what, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the {what} is in the logs");
        for (table, row) in &rows {
            assert!(
                !row.contains(secret.as_str()),
                "the {what} is in {table}: {row}"
            );
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret.as_str()),
                "the {what} is in an answer: {answer}"
            );
        }
    }
}
