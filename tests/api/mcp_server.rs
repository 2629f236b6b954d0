//! `/mcp`: this server as an MCP server, driven by real clients — rmcp's (both the session
//! revision 2025-11-25 and the stateless 2026-07-28), raw JSON-RPC over HTTP for what clients
//! would never send, and (in `mcp_clients`) the official TypeScript and Python SDKs.

use std::{sync::Arc, time::Duration};

use orchestrator::{
    catalog::{Intent, Registry},
    model::Mode,
    tools::{Tool, system},
};
use reqwest::StatusCode;
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        ProtocolVersion,
    },
    service::{NotificationContext, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::helpers::{Spawn, TestApp, eventually, spawn, spawn_with};

#[derive(Clone)]
pub struct TestClient {
    protocol: ProtocolVersion,
    pub tools_changed: Arc<Notify>,
}

impl ClientHandler for TestClient {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("orchestrator-tests", "1"),
        )
        .with_protocol_version(self.protocol.clone())
    }
}

impl TestClient {
    pub fn new(protocol: ProtocolVersion) -> Self {
        Self {
            protocol,
            tools_changed: Arc::new(Notify::new()),
        }
    }
}

pub type Client = RunningService<RoleClient, TestClient>;

/// An rmcp client of `app`'s `/mcp` with `token` as its bearer token.
pub async fn connect(app: &TestApp, token: &str, protocol: ProtocolVersion) -> Client {
    connect_to(&format!("{}/mcp", app.base), token, protocol)
        .await
        .expect("MCP client connects")
}

pub async fn connect_to(
    url: &str,
    token: &str,
    protocol: ProtocolVersion,
) -> Result<Client, rmcp::service::ClientInitializeError> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token),
    );
    TestClient {
        protocol,
        tools_changed: Arc::new(Notify::new()),
    }
    .serve(transport)
    .await
}

pub fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => panic!("arguments are an object"),
    }
}

pub async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(arguments)))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

pub fn structured(r: &CallToolResult) -> &Value {
    r.structured_content.as_ref().expect("structuredContent")
}

pub const SESSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;
pub const STATELESS: ProtocolVersion = ProtocolVersion::V_2026_07_28;

#[tokio::test]
async fn every_listed_tool_has_a_valid_name_and_all_four_annotations() {
    let app = spawn_with(|c| {
        c.tools.overrides.insert(
            "memory.write".into(),
            orchestrator::catalog::IntentOverride {
                destructive: Some(true),
                ..Default::default()
            },
        );
    })
    .await;
    let key = app.key("all", &["*"]).await;
    for protocol in [SESSION, STATELESS] {
        let client = connect(&app, &key, protocol.clone()).await;
        let tools = client.list_all_tools().await.unwrap();
        assert!(tools.len() >= 8, "{tools:?}");
        let name_ok = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        for t in &tools {
            assert!(name_ok(&t.name), "{}", t.name);
            let a = t
                .annotations
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no annotations", t.name));
            for (hint, value) in [
                ("readOnlyHint", a.read_only_hint),
                ("destructiveHint", a.destructive_hint),
                ("idempotentHint", a.idempotent_hint),
                ("openWorldHint", a.open_world_hint),
            ] {
                assert!(value.is_some(), "{} leaves {hint} unset", t.name);
            }
        }
        let by_name = |n: &str| {
            tools
                .iter()
                .find(|t| t.name == n)
                .unwrap_or_else(|| panic!("{n} is listed"))
        };
        let search = by_name("memory_search");
        assert_eq!(search.title.as_deref(), Some("memory.search"));
        assert_eq!(
            search.meta.as_ref().unwrap()["orchestrator/intent"],
            "memory.search"
        );
        let a = search.annotations.clone().unwrap();
        assert_eq!(
            (a.read_only_hint, a.open_world_hint),
            (Some(true), Some(false))
        );
        let delete = by_name("memory_delete").annotations.clone().unwrap();
        assert_eq!(
            (delete.read_only_hint, delete.destructive_hint),
            (Some(false), Some(true))
        );
        let write = by_name("memory_write").annotations.clone().unwrap();
        assert_eq!(
            write.destructive_hint,
            Some(true),
            "the per-intent override in config"
        );
        assert_eq!(
            by_name("system_echo")
                .annotations
                .clone()
                .unwrap()
                .open_world_hint,
            Some(false)
        );
        by_name("job_status");
        by_name("job_cancel");
        client.cancel().await.ok();
    }
}

#[tokio::test]
async fn a_call_is_a_job_with_the_callers_identity_and_its_result_is_structured() {
    let app = spawn_app_with_key().await;
    let (app, key) = (app.0, app.1);
    for protocol in [SESSION, STATELESS] {
        let client = connect(&app, &key, protocol.clone()).await;
        let note = format!("the deploy window is Tuesday ({protocol})");
        let written = call(
            &client,
            "memory_write",
            json!({"text": note, "tags": ["ops"]}),
        )
        .await;
        assert_eq!(written.is_error, Some(false), "{written:?}");
        let s = structured(&written);
        assert_eq!(s["status"], "success");
        assert_eq!(s["intent"], "memory.write");
        let job_id = s["job_id"].as_str().unwrap().to_owned();
        let found = call(&client, "memory_search", json!({"query": "deploy window"})).await;
        let text = serde_json::to_string(structured(&found)).unwrap();
        assert!(text.contains(&note), "{text}");
        // The same job as any other: who asked is on it, and on its audit trail.
        let (principal, created_events): (Option<String>, i64) = sqlx::query_as(
            "SELECT j.principal, (SELECT count(*) FROM audit_events a WHERE a.job_id = j.id)
             FROM jobs j WHERE j.id = $1::uuid",
        )
        .bind(job_id.trim_start_matches("job_"))
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(principal.as_deref(), Some("model"));
        assert!(created_events >= 2, "{created_events}");
        // A retried write answers with the first job (the key derived from its inputs).
        let again = call(
            &client,
            "memory_write",
            json!({"text": note, "tags": ["ops"]}),
        )
        .await;
        assert_eq!(structured(&again)["job_id"], job_id.as_str());
        client.cancel().await.ok();
    }
}

async fn spawn_app_with_key() -> (TestApp, String) {
    let app = crate::helpers::spawn_app().await;
    let key = app.key("model", &["*"]).await;
    (app, key)
}

#[tokio::test]
async fn a_long_call_answers_with_a_job_handle_and_job_status_gives_the_result() {
    let app = spawn_with(|c| c.mcp.call_wait = Duration::from_millis(300)).await;
    let key = app.key("model", &["*"]).await;
    let client = connect(&app, &key, SESSION).await;
    let handle = call(&client, "system_sleep", json!({"ms": 1500})).await;
    assert_eq!(handle.is_error, Some(false));
    let s = structured(&handle).clone();
    assert_eq!(s["status"], "accepted", "{s}");
    let job_id = s["job_id"].as_str().unwrap().to_owned();
    let lead = serde_json::to_value(&handle.content[0]).unwrap();
    assert!(
        lead["text"].as_str().unwrap().contains("job_status"),
        "the model is told what to call: {lead}"
    );
    // Waiting is capped by mcp.call_wait: poll as a model would.
    let last = std::sync::Mutex::new(Value::Null);
    let finished = eventually(Duration::from_secs(20), || async {
        let r = call(
            &client,
            "job_status",
            json!({"job_id": job_id, "wait_ms": 300}),
        )
        .await;
        let s = structured(&r).clone();
        let finished = s["status"] == "success";
        *last.lock().unwrap() = s;
        finished
    })
    .await;
    let done = last.into_inner().unwrap();
    assert!(finished, "{done}");
    assert_eq!(done["job_status"], "succeeded");
    assert_eq!(done["job_id"], job_id.as_str());
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_key_holding_memory_scopes_sees_and_calls_only_memory_tools() {
    let app = crate::helpers::spawn_app().await;
    let key = app.key("notes-only", &["memory.*"]).await;
    for protocol in [SESSION, STATELESS] {
        let client = connect(&app, &key, protocol).await;
        let names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("memory_") || n == "job_status" || n == "job_cancel"),
            "{names:?}"
        );
        assert!(names.contains(&"memory_write".to_owned()));
        for forbidden in ["ssh_exec", "system_echo"] {
            let err = client
                .call_tool(CallToolRequestParams::new(forbidden).with_arguments(args(json!({}))))
                .await
                .expect_err("not callable even by name");
            assert!(err.to_string().contains("unknown tool"), "{err}");
        }
        client.cancel().await.ok();
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 0, "nothing ran");
}

#[tokio::test]
async fn invalid_arguments_are_a_tool_error_the_model_can_read() {
    let (app, key) = spawn_app_with_key().await;
    let client = connect(&app, &key, SESSION).await;
    let r = call(&client, "memory_write", json!({"tags": "not-a-list"})).await;
    assert_eq!(r.is_error, Some(true));
    let s = structured(&r);
    assert_eq!(s["error"]["code"], "invalid_inputs", "{s}");
    let fields: Vec<&str> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"inputs.text"), "{fields:?}");
    let r = call(&client, "job_status", json!({"job_id": "job_nope"})).await;
    assert_eq!(structured(&r)["error"]["code"], "invalid_request");
    client.cancel().await.ok();
}

#[tokio::test]
async fn changes_to_the_catalog_are_announced_to_sessions() {
    let (app, key) = spawn_app_with_key().await;
    let client = connect(&app, &key, SESSION).await;
    let before = client.list_all_tools().await.unwrap().len();
    let changed = client.service().tools_changed.clone();
    let notified = changed.notified();
    add_intent(&app.registry, "extra.echo");
    tokio::time::timeout(Duration::from_secs(10), notified)
        .await
        .expect("notifications/tools/list_changed");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), before + 1);
    assert!(tools.iter().any(|t| t.name == "extra_echo"));
    client.cancel().await.ok();
}

/// `system.echo` under another name, as a new source of the catalog.
fn add_intent(registry: &Registry, name: &str) {
    let echo = system::tools()
        .into_iter()
        .find(|t| t.spec().name == "system.echo")
        .unwrap();
    struct Renamed(orchestrator::tools::ToolSpec, Arc<dyn Tool>);
    impl Tool for Renamed {
        fn spec(&self) -> &orchestrator::tools::ToolSpec {
            &self.0
        }
        fn call<'a>(
            &'a self,
            ctx: &'a orchestrator::tools::ToolContext,
            inputs: &'a Value,
        ) -> futures::future::BoxFuture<'a, orchestrator::tools::ToolResult> {
            self.1.call(ctx, inputs)
        }
    }
    let mut spec = echo.spec().clone();
    spec.name = name.into();
    let intent = Intent::new(Mode::Agent, Arc::new(Renamed(spec, echo)), None).unwrap();
    registry.set_source("test", vec![Arc::new(intent)]).unwrap();
}

#[tokio::test]
async fn a_session_opened_on_one_instance_is_served_by_another() {
    let (a, key) = spawn_app_with_key().await;
    let b = spawn(Spawn {
        db: Some(a.db.clone()),
        ..Default::default()
    })
    .await;
    let init = rpc(
        &a,
        &key,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}
        }}),
    )
    .await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let session = init.session.expect("a session id");
    let ack = rpc(
        &a,
        &key,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    // Instance b never saw this session: it restores it from the database.
    let listed = rpc(
        &b,
        &key,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert!(
        listed.body["result"]["tools"].as_array().unwrap().len() > 5,
        "{}",
        listed.body
    );
    let unknown = rpc(
        &b,
        &key,
        Some("no-such-session"),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

pub struct RpcAnswer {
    pub status: StatusCode,
    pub session: Option<String>,
    pub body: Value,
    pub raw: String,
}

/// One JSON-RPC message POSTed to `/mcp`; an SSE answer is read for its last data event.
pub async fn rpc(app: &TestApp, key: &str, session: Option<&str>, message: Value) -> RpcAnswer {
    post_raw(app, key, session, message.to_string(), &[]).await
}

pub async fn post_raw(
    app: &TestApp,
    key: &str,
    session: Option<&str>,
    body: String,
    headers: &[(&str, &str)],
) -> RpcAnswer {
    let mut req = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    // 2026-07-28 repeats the method (and a tool's name) in headers, for proxies.
    if headers
        .iter()
        .any(|(n, v)| *n == "mcp-protocol-version" && *v >= "2026-07-28")
        && let Ok(message) = serde_json::from_str::<Value>(&body)
    {
        if let Some(method) = message["method"].as_str() {
            req = req.header("mcp-method", method);
        }
        let params = &message["params"];
        if let Some(name) = params["name"].as_str().or(params["taskId"].as_str()) {
            req = req.header("mcp-name", name);
        }
    }
    let mut req = req.body(body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = resp.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or_else(|_| {
        raw.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .unwrap_or(Value::Null)
    });
    RpcAnswer {
        status,
        session,
        body,
        raw,
    }
}

/// The request `_meta` of the stateless revision.
pub fn stateless_meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

#[tokio::test]
async fn bad_requests_get_json_rpc_errors_never_a_500() {
    let (app, key) = spawn_app_with_key().await;
    let stateless = [("mcp-protocol-version", "2026-07-28")];
    let malformed = post_raw(&app, &key, None, "{not json".into(), &stateless).await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.raw
    );
    let unknown_method = post_raw(
        &app,
        &key,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/explode",
               "params": {"_meta": stateless_meta(json!({}))}})
        .to_string(),
        &stateless,
    )
    .await;
    assert!(
        unknown_method.status.is_client_error(),
        "{}",
        unknown_method.raw
    );
    let unknown_tool = post_raw(
        &app,
        &key,
        None,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "no_such_tool", "arguments": {},
                          "_meta": stateless_meta(json!({}))}})
        .to_string(),
        &stateless,
    )
    .await;
    assert_eq!(
        unknown_tool.body["error"]["code"], -32602,
        "{}",
        unknown_tool.raw
    );
    let not_an_object = post_raw(
        &app,
        &key,
        None,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "memory_write", "arguments": [1, 2],
                          "_meta": stateless_meta(json!({}))}})
        .to_string(),
        &stateless,
    )
    .await;
    assert!(
        not_an_object.status.is_client_error() || not_an_object.body["error"].is_object(),
        "{} {}",
        not_an_object.status,
        not_an_object.raw
    );
    for answer in [&malformed, &unknown_method, &unknown_tool, &not_an_object] {
        assert!(!answer.status.is_server_error(), "{}", answer.raw);
    }
}

#[tokio::test]
async fn host_and_origin_must_be_ours() {
    let (app, key) = spawn_app_with_key().await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                      "params": {"_meta": stateless_meta(json!({}))}})
    .to_string();
    let v = [("mcp-protocol-version", "2026-07-28")];
    for (extra, want) in [
        (None, StatusCode::OK),
        (Some(("host", "attacker.example")), StatusCode::FORBIDDEN),
        (
            Some(("origin", "https://attacker.example")),
            StatusCode::FORBIDDEN,
        ),
        // public_url's origin (the harness keeps the default) is ours; another port is not.
        (Some(("origin", "http://127.0.0.1:8080")), StatusCode::OK),
        (Some(("origin", app.base.as_str())), StatusCode::FORBIDDEN),
    ] {
        let headers: Vec<(&str, &str)> = v.iter().copied().chain(extra).collect();
        let answer = post_raw(&app, &key, None, list.clone(), &headers).await;
        assert_eq!(answer.status, want, "{extra:?}: {}", answer.raw);
    }
}

#[tokio::test]
async fn without_a_valid_token_mcp_answers_401() {
    let (app, _key) = spawn_app_with_key().await;
    let err = connect_to(&format!("{}/mcp", app.base), "orch_wrong", SESSION).await;
    assert!(err.is_err());
    let resp = app
        .client
        .post(format!("{}/mcp", app.base))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn clients_of_the_tasks_extension_get_a_task_for_a_long_call() {
    let app = spawn_with(|c| c.mcp.call_wait = Duration::from_millis(200)).await;
    let key = app.key("model", &["*"]).await;
    let v = [("mcp-protocol-version", "2026-07-28")];
    let caps = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let started = post_raw(
        &app,
        &key,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "system_sleep", "arguments": {"ms": 800},
                          "_meta": stateless_meta(caps.clone())}})
        .to_string(),
        &v,
    )
    .await;
    let result = &started.body["result"];
    assert_eq!(result["resultType"], "task", "{}", started.raw);
    let task_id = result["taskId"].as_str().unwrap().to_owned();
    assert!(task_id.starts_with("job_"));
    let last = std::sync::Mutex::new(Value::Null);
    let done = eventually(Duration::from_secs(20), || async {
        let got = post_raw(
            &app,
            &key,
            None,
            json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get",
                   "params": {"taskId": task_id, "_meta": stateless_meta(caps.clone())}})
            .to_string(),
            &v,
        )
        .await;
        *last.lock().unwrap() = got.body.clone();
        got.body["result"]["status"] == "completed"
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(done, "{last}");
    assert_eq!(
        last["result"]["result"]["structuredContent"]["job_status"], "succeeded",
        "{last}"
    );
}

#[tokio::test]
async fn a_stateless_client_hears_of_changes_through_subscriptions_listen() {
    use futures::StreamExt;
    let (app, key) = spawn_app_with_key().await;
    let listen = json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": true},
                   "_meta": stateless_meta(json!({}))}});
    let resp = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(listen.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    let mut changed = false;
    let read = async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if !changed && seen.contains("notifications/subscriptions/acknowledged") {
                // Subscribed: now change the catalog.
                add_intent(&app.registry, "extra.echo");
                changed = true;
            }
            if seen.contains("notifications/tools/list_changed") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no list_changed on the subscription: {seen}"));
}
