//! MCP mode against real MCP servers (server-everything over stdio and Streamable HTTP,
//! mcp-server-time over stdio), and auto routing across engines.

use std::{path::Path, time::Duration};

use nix::sys::signal::Signal;
use orchestrator::{
    catalog::routing::Route,
    config::Config,
    model::Mode,
    tools::mcp::{McpServerConfig, StartPolicy},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, eventually, job_id, spawn_with},
    mcp_peers::{
        EverythingHttp, everything_stdio, everything_then_time, everything_via_shell,
        group_members, marker, processes_with_marker, server_pid, signal, time_stdio,
    },
};

/// How long a test waits for a server to be restarted: starting node takes seconds on a
/// loaded 2-core machine.
const RESTART: Duration = Duration::from_secs(45);

async fn with_servers(servers: Vec<(&'static str, McpServerConfig)>) -> TestApp {
    spawn_with(move |c| {
        for (name, server) in servers {
            c.mcp.servers.insert(name.into(), server);
        }
    })
    .await
}

fn tool<'a>(tools: &'a Value, name: &str) -> Option<&'a Value> {
    tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// Runs an `echo` intent and checks that the server echoed `message`.
async fn assert_echoes(app: &TestApp, intent: &str, message: &str) -> Value {
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": intent, "inputs": {"message": message}, "timeout_ms": 20000}),
        )
        .await;
    assert_eq!(
        text(&body["result"]),
        format!("Echo: {message}"),
        "{intent}: {body}"
    );
    body
}

/// Starts server-everything's `trigger-long-running-operation` as an async job; its id.
async fn start_long_operation(app: &TestApp, server: &str, seconds: u32) -> String {
    let (status, body) = app
        .orchestrate_json(json!({
            "intent": format!("mcp.{server}.trigger-long-running-operation"),
            "inputs": {"duration": seconds, "steps": seconds},
            "async": true
        }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    job_id(&body)
}

/// Waits until the server's session is up (the gauge `orchestrator_mcp_server_up`).
async fn wait_until_up(app: &TestApp, server: &str) {
    let line = format!("orchestrator_mcp_server_up{{server=\"{server}\"}} 1");
    let up = eventually(RESTART, || async {
        app.get_text("/metrics").await.lines().any(|l| l == line)
    })
    .await;
    assert!(up, "MCP server {server} never came up");
}

async fn assert_group_gone(pgid: i32) {
    let gone = eventually(Duration::from_secs(15), || async {
        group_members(pgid).is_empty()
    })
    .await;
    assert!(
        gone,
        "process group {pgid} left behind: {:?}",
        group_members(pgid)
    );
}

#[tokio::test]
async fn tools_are_listed_with_their_own_description_and_schema() {
    let mut everything = everything_stdio(&marker());
    everything.deny_tools = vec!["get-env".into()];
    everything.aliases.insert("say".into(), "echo".into());
    let app = with_servers(vec![
        ("everything", everything),
        ("time", time_stdio(&marker())),
    ])
    .await;

    let (status, tools) = app.get_json("/tools").await;
    assert_eq!(status, StatusCode::OK);
    let echo = tool(&tools, "mcp.everything.echo").expect("echo is listed");
    assert_eq!(echo["mode"], "mcp");
    assert_eq!(echo["description"], "Echoes back the input string");
    assert_eq!(
        echo["input_schema"]["properties"]["message"]["type"],
        "string"
    );
    assert_eq!(echo["input_schema"]["required"], json!(["message"]));
    assert_eq!(echo["effect"], "read", "annotated readOnlyHint");
    assert!(tool(&tools, "mcp.everything.get-sum").is_some());
    assert!(tool(&tools, "mcp.everything.get-env").is_none(), "denied");
    assert_eq!(tool(&tools, "say").expect("the alias")["mode"], "mcp");
    let time = tool(&tools, "mcp.time.get_current_time").expect("time is listed");
    assert_eq!(
        time["description"],
        "Get current time in a specific timezone"
    );
    assert_eq!(time["input_schema"]["required"], json!(["timezone"]));
    assert!(tool(&tools, "memory.write").is_some(), "local tools stay");

    let key = app.key("reader", &["*"]).await;
    let (_, doc) = app.get_json_as(&key, "/openapi.json").await;
    let schema = &doc["components"]["schemas"]["inputs.mcp.everything.get-sum"];
    assert_eq!(schema["description"], "Returns the sum of two numbers");
    assert_eq!(schema["properties"]["a"]["type"], "number");
    let names = &doc["components"]["schemas"]["OrchestrateRequest"]["properties"]["intent"]["enum"];
    assert!(
        names
            .as_array()
            .unwrap()
            .contains(&json!("mcp.time.convert_time"))
    );
}

#[tokio::test]
async fn echo_and_get_sum_run_over_stdio() {
    let mut everything = everything_stdio(&marker());
    everything.aliases.insert("say".into(), "echo".into());
    let app = with_servers(vec![("everything", everything)]).await;

    let (status, body) = app
        .orchestrate_json(json!({"intent": "mcp.everything.echo", "inputs": {"message": "hello"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["mode"], "mcp");
    assert_eq!(
        body["result"],
        json!({"content": [{"type": "text", "text": "Echo: hello"}], "is_error": false})
    );

    let (_, body) = app
        .orchestrate_json(json!({"intent": "mcp.everything.get-sum", "inputs": {"a": 2, "b": 3.5}}))
        .await;
    assert_eq!(
        text(&body["result"]),
        "The sum of 2 and 3.5 is 5.5.",
        "{body}"
    );

    let body = assert_echoes(&app, "say", "alias").await;
    assert_eq!(body["intent"], "say");
}

#[tokio::test]
async fn both_protocol_versions_work() {
    let mut older = everything_stdio(&marker());
    older.protocol_version = "2025-06-18".into();
    let mut time = time_stdio(&marker());
    time.protocol_version = "2025-06-18".into();
    let app = with_servers(vec![
        ("older", older),
        ("newer", everything_stdio(&marker())),
        ("time", time),
    ])
    .await;
    for intent in ["mcp.older.echo", "mcp.newer.echo"] {
        assert_echoes(&app, intent, "v").await;
    }
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "mcp.time.get_current_time", "inputs": {"timezone": "UTC"}}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn get_current_time_returns_structured_content() {
    let app = with_servers(vec![("time", time_stdio(&marker()))]).await;
    let (status, body) = app
        .orchestrate_json(json!({
            "intent": "mcp.time.get_current_time",
            "inputs": {"timezone": "Europe/Paris"}
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let result = &body["result"];
    assert_eq!(result["is_error"], false);
    let structured = &result["structured_content"];
    assert_eq!(structured["timezone"], "Europe/Paris");
    assert!(structured["datetime"].as_str().unwrap().contains('T'));
    assert!(structured["is_dst"].is_boolean());
    // The same result as text, for clients that read only content.
    let as_text: Value = serde_json::from_str(text(result)).unwrap();
    assert_eq!(&as_text, structured);
}

#[tokio::test]
async fn is_error_fails_the_job_with_the_tools_text_and_is_not_retried() {
    let app = with_servers(vec![("time", time_stdio(&marker()))]).await;
    let (status, body) = app
        .orchestrate_json(json!({
            "intent": "mcp.time.get_current_time",
            "inputs": {"timezone": "Mars/Olympus_Mons"}
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["job_status"], "failed");
    assert_eq!(body["error"]["code"], "tool_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Invalid timezone"), "{message}");
    assert!(message.contains("Mars/Olympus_Mons"), "{message}");
    let job = app.job(&job_id(&body)).await;
    assert_eq!(job["attempts"], 1, "isError is not retried: {job}");
}

#[tokio::test]
async fn inputs_that_break_the_tools_schema_are_422_naming_the_fields() {
    let app = with_servers(vec![("everything", everything_stdio(&marker()))]).await;
    let (status, problem) = app
        .orchestrate_json(json!({"intent": "mcp.everything.get-sum", "inputs": {"a": "two"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "invalid_inputs");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"inputs.a"), "{problem}");
    assert!(fields.contains(&"inputs.b"), "{problem}");
    let (jobs_status, jobs) = app.get_json("/jobs").await;
    assert_eq!(jobs_status, StatusCode::OK);
    assert_eq!(jobs["jobs"], json!([]), "nothing was filed");
}

/// The JSON-RPC messages a server received and sent, as `recorded_everything` logged them.
fn received(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The id of the `tools/call` of `tool`, once the server received it.
async fn call_id(log: &Path, tool: &str) -> Value {
    let mut id = Value::Null;
    let sent = eventually(Duration::from_secs(15), || {
        id = received(log)
            .into_iter()
            .find(|m| m["method"] == "tools/call" && m["params"]["name"] == tool)
            .map(|m| m["id"].clone())
            .unwrap_or(Value::Null);
        let found = !id.is_null();
        async move { found }
    })
    .await;
    assert!(sent, "the server never received tools/call {tool}");
    id
}

async fn assert_cancelled(log: &Path, id: &Value) {
    let cancelled = eventually(Duration::from_secs(10), || {
        let seen = received(log)
            .iter()
            .any(|m| m["method"] == "notifications/cancelled" && m["params"]["requestId"] == *id);
        async move { seen }
    })
    .await;
    assert!(
        cancelled,
        "no notifications/cancelled for request {id}: {:?}",
        received(log)
    );
}

/// server-everything recording, in one file and in order, what it receives and what it
/// answers. Each line reaches the log before it is passed on (`tee` writes its stdout first),
/// so the log's order is causal: an answer is logged before the client can react to it.
fn recorded_everything(log: &Path, marker: &str) -> McpServerConfig {
    let record = format!(
        "while IFS= read -r line; do printf '%s\\n' \"$line\" >> '{}'; printf '%s\\n' \"$line\"; done",
        log.display()
    );
    everything_via_shell(marker, &format!("{record} |"), &format!("| {record}"))
}

#[tokio::test]
async fn a_slow_call_times_out_with_our_timeout_and_is_cancelled_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("received.jsonl");
    let marker = marker();
    let mut slow = recorded_everything(&log, &marker);
    slow.call_timeout = Duration::from_millis(1_500);
    slow.max_attempts = 1;
    let app = with_servers(vec![("slow", slow)]).await;
    let node = server_pid(&marker, "node").await;

    let started = std::time::Instant::now();
    let (status, body) = app
        .orchestrate_json(json!({
            "intent": "mcp.slow.trigger-long-running-operation",
            "inputs": {"duration": 30, "steps": 3},
            "timeout_ms": 20000
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job_status"], "timed_out", "{body}");
    assert_eq!(body["error"]["code"], "timed_out");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("within 1500 ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let id = call_id(&log, "trigger-long-running-operation").await;
    assert_cancelled(&log, &id).await;

    // A slow tool is not a hung server: the same process answers the next call.
    assert_echoes(&app, "mcp.slow.echo", "still here").await;
    assert_eq!(server_pid(&marker, "node").await, node, "not restarted");
}

#[tokio::test]
async fn cancelling_a_running_mcp_job_sends_notifications_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("received.jsonl");
    let app = with_servers(vec![("rec", recorded_everything(&log, &marker()))]).await;
    let id = start_long_operation(&app, "rec", 30).await;
    let request = call_id(&log, "trigger-long-running-operation").await;

    let (status, job) = app
        .post_json(&format!("/jobs/{id}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{job}");
    app.wait_for_status(&id, "cancelled").await;
    assert_cancelled(&log, &request).await;
}

#[tokio::test]
async fn a_server_killed_mid_call_is_restarted_and_the_call_retried() {
    let marker = marker();
    let app = with_servers(vec![("crashy", everything_stdio(&marker))]).await;
    let old = server_pid(&marker, "node").await;
    let id = start_long_operation(&app, "crashy", 2).await;
    app.wait_for_status(&id, "running").await;
    signal(old, Signal::SIGKILL);

    let job = app.wait_for_status_within(&id, "succeeded", RESTART).await;
    assert_eq!(
        job["attempts"], 2,
        "the interrupted attempt was retried: {job}"
    );
    assert_eq!(
        text(&job["result"]),
        "Long running operation completed. Duration: 2 seconds, Steps: 2."
    );
    let new = server_pid(&marker, "node").await;
    assert_ne!(new, old, "a new process");
    let (_, events) = app.get_json(&format!("/jobs/{id}/events")).await;
    let retried = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["detail"].to_string().contains("mcp_unavailable"));
    assert!(retried, "the first attempt failed as transient: {events}");
    assert_group_gone(old).await;

    assert_echoes(&app, "mcp.crashy.echo", "again").await;
}

#[tokio::test]
async fn a_hung_server_is_restarted() {
    let marker = marker();
    let mut hung = everything_stdio(&marker);
    hung.call_timeout = Duration::from_secs(2);
    hung.ping_timeout = Duration::from_millis(500);
    let app = with_servers(vec![("hung", hung)]).await;
    let old = server_pid(&marker, "node").await;
    signal(old, Signal::SIGSTOP);

    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "mcp.hung.echo", "inputs": {"message": "anyone?"}, "max_attempts": 1}),
        )
        .await;
    assert_eq!(body["job_status"], "timed_out", "{body}");

    let restarted = eventually(RESTART, || async {
        processes_with_marker(&marker)
            .iter()
            .any(|(pid, name)| name == "node" && *pid != old)
    })
    .await;
    assert!(restarted, "no new server process");
    assert_group_gone(old).await;
    wait_until_up(&app, "hung").await;
    assert_echoes(&app, "mcp.hung.echo", "back").await;
}

#[tokio::test]
async fn the_whole_process_group_dies_on_restart_and_on_shutdown() {
    let marker = marker();
    // The server leaves a grandchild-to-be behind in its group.
    let config = everything_via_shell(&marker, "sleep 86398 &", "");
    let mut app = with_servers(vec![("family", config)]).await;
    let first = server_pid(&marker, "node").await;
    let members: Vec<String> = group_members(first).into_iter().map(|(_, n)| n).collect();
    assert!(members.contains(&"sleep".to_owned()), "{members:?}");

    // Killing only the server orphans its child; the restart still takes the whole group.
    signal(first, Signal::SIGKILL);
    assert_group_gone(first).await;
    let second = server_pid(&marker, "node").await;
    assert_ne!(second, first);
    wait_until_up(&app, "family").await;
    assert_echoes(&app, "mcp.family.echo", "hi").await;

    app.stop().await.unwrap();
    // Signals land and init reaps the orphans asynchronously; give them a moment.
    let all_gone = eventually(Duration::from_secs(5), || async {
        group_members(second).is_empty() && processes_with_marker(&marker).is_empty()
    })
    .await;
    assert!(
        all_gone,
        "outlived the instance: {:?} {:?}",
        group_members(second),
        processes_with_marker(&marker)
    );
}

#[tokio::test]
async fn streamable_http_servers_are_called_and_reconnected_after_a_restart() {
    let mut server = EverythingHttp::start().await;
    let mut config = McpServerConfig::http(server.url());
    // server-everything answers a request for a session it does not know with an error that
    // names no request id, so the call only ends by our timeout (then a ping fails and the
    // session is opened again).
    config.call_timeout = Duration::from_secs(2);
    config.ping_timeout = Duration::from_millis(500);
    config.restart_backoff = Duration::from_millis(100);
    config.restart_backoff_max = Duration::from_secs(1);
    config
        .headers
        .insert("X-Orchestrator-Test".into(), "1".into());
    let app = with_servers(vec![("web", config)]).await;

    assert_echoes(&app, "mcp.web.echo", "over http").await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "mcp.web.get-sum", "inputs": {"a": 40, "b": 2}}))
        .await;
    assert_eq!(
        text(&body["result"]),
        "The sum of 40 and 2 is 42.",
        "{body}"
    );
    let (_, body) = app
        .orchestrate_json(json!({
            "intent": "mcp.web.get-structured-content",
            "inputs": {"location": "New York"}
        }))
        .await;
    assert!(
        body["result"]["structured_content"]["temperature"].is_number(),
        "{body}"
    );

    // A new server process knows nothing of our session: we reconnect and carry on.
    let port = server.port;
    server.kill().await;
    let _server = EverythingHttp::start_on(port).await;
    assert_echoes(&app, "mcp.web.echo", "after restart").await;
}

#[tokio::test]
async fn tools_are_listed_again_when_the_server_says_they_changed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wire.jsonl");
    // server-everything registers more tools once initialized, and says so.
    let _app = with_servers(vec![("rec", recorded_everything(&log, &marker()))]).await;
    let relisted = eventually(Duration::from_secs(15), || async {
        let wire = received(&log);
        let changed = wire
            .iter()
            .position(|m| m["method"] == "notifications/tools/list_changed");
        let lists = wire.iter().filter(|m| m["method"] == "tools/list").count();
        changed.is_some() && lists >= 2
    })
    .await;
    assert!(
        relisted,
        "no tools/list after list_changed: {:?}",
        received(&log)
    );
}

#[tokio::test]
async fn tools_are_listed_again_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("be-time");
    let marker = marker();
    let app = with_servers(vec![("swap", everything_then_time(&marker, &flag))]).await;
    let (_, tools) = app.get_json("/tools").await;
    assert!(tool(&tools, "mcp.swap.echo").is_some());

    std::fs::write(&flag, "").unwrap();
    signal(server_pid(&marker, "node").await, Signal::SIGKILL);
    let swapped = eventually(RESTART, || async {
        let (_, tools) = app.get_json("/tools").await;
        tool(&tools, "mcp.swap.get_current_time").is_some()
            && tool(&tools, "mcp.swap.echo").is_none()
    })
    .await;
    assert!(swapped, "the new tool list replaced the old one");
    let (_, body) = app
        .orchestrate_json(json!({"intent": "mcp.swap.echo", "inputs": {"message": "gone"}}))
        .await;
    assert_eq!(body["code"], "unknown_intent", "{body}");
}

#[tokio::test]
async fn calls_beyond_the_servers_limit_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wire.jsonl");
    let mut one_at_a_time = recorded_everything(&log, &marker());
    one_at_a_time.max_concurrent_calls = 1;
    let app = with_servers(vec![("one", one_at_a_time)]).await;
    let ids = [
        start_long_operation(&app, "one", 1).await,
        start_long_operation(&app, "one", 1).await,
    ];
    for id in &ids {
        app.wait_for_status_within(id, "succeeded", RESTART).await;
    }
    // On the wire: call, its answer, then the next call.
    let wire = received(&log);
    let order: Vec<&str> = wire
        .iter()
        .filter_map(|m| {
            if m["method"] == "tools/call" {
                Some("call")
            } else if m["result"]["content"].is_array() {
                Some("answer")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(order, ["call", "answer", "call", "answer"], "{wire:?}");
}

#[tokio::test]
async fn a_lazy_server_starts_on_first_use() {
    let marker = marker();
    let mut lazy = everything_stdio(&marker);
    lazy.start = StartPolicy::Lazy;
    let app = with_servers(vec![("lazy", lazy)]).await;
    let (_, tools) = app.get_json("/tools").await;
    assert!(tool(&tools, "mcp.lazy.echo").is_none());
    assert_eq!(processes_with_marker(&marker), [], "not started");

    assert_echoes(&app, "mcp.lazy.echo", "wake").await;
    let (_, tools) = app.get_json("/tools").await;
    assert!(tool(&tools, "mcp.lazy.echo").is_some());
}

#[tokio::test]
async fn auto_routes_mcp_intents_to_mcp_and_memory_to_agent() {
    let app = with_servers(vec![("everything", everything_stdio(&marker()))]).await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "mcp.everything.echo", "inputs": {"message": "m"}}))
        .await;
    assert_eq!(body["mode"], "mcp", "{body}");
    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "routed"}}))
        .await;
    assert_eq!(body["mode"], "agent", "{body}");
    let (status, problem) = app
        .orchestrate_json(json!({"intent": "mcp.everything.ecko", "inputs": {}}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "unknown_intent");
    let suggestions = problem["suggestions"].as_array().unwrap();
    assert!(
        suggestions.contains(&json!("mcp.everything.echo")),
        "{problem}"
    );
    let (status, problem) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "x"}, "mode": "mcp"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "mode_not_supported");
}

/// `memory.search` served twice: by the agent and by an MCP alias of `echo`.
fn shadowing_memory_search(c: &mut Config) {
    let mut everything = everything_stdio(&marker());
    everything
        .aliases
        .insert("memory.search".into(), "echo".into());
    c.mcp.servers.insert("everything".into(), everything);
    c.mcp.servers.insert("time".into(), time_stdio(&marker()));
}

#[tokio::test]
async fn an_intent_several_engines_serve_is_ambiguous_without_a_route() {
    let app = spawn_with(shadowing_memory_search).await;
    let (status, problem) = app
        .orchestrate_json(json!({"intent": "memory.search", "inputs": {"query": "x"}}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "ambiguous_intent");
    assert_eq!(problem["served_by"], json!(["agent", "mcp"]));
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "memory.search", "inputs": {"message": "x"}, "mode": "mcp"}),
        )
        .await;
    assert_eq!(
        text(&body["result"]),
        "Echo: x",
        "an explicit mode decides: {body}"
    );
}

#[tokio::test]
async fn routes_and_preferences_decide_between_engines() {
    let app = spawn_with(|c| {
        shadowing_memory_search(c);
        c.routing.routes = vec![
            Route {
                intent: "clock.*".into(),
                mode: Mode::Mcp,
                target: Some("mcp.time.*".into()),
            },
            Route {
                intent: "memory.*".into(),
                mode: Mode::Mcp,
                target: None,
            },
        ];
    })
    .await;
    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.search", "inputs": {"message": "routed"}}))
        .await;
    assert_eq!(body["mode"], "mcp", "{body}");
    assert_eq!(text(&body["result"]), "Echo: routed");
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "clock.get_current_time", "inputs": {"timezone": "UTC"}}),
        )
        .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["intent"], "mcp.time.get_current_time");
    assert_eq!(body["result"]["structured_content"]["timezone"], "UTC");
    // Routes only decide where their target is served.
    let (_, body) = app
        .orchestrate_json(json!({"intent": "memory.write", "inputs": {"text": "t"}}))
        .await;
    assert_eq!(body["mode"], "agent", "{body}");

    let preferring = spawn_with(|c| {
        shadowing_memory_search(c);
        c.routing.prefer = vec![Mode::Agent, Mode::Flow, Mode::Mcp];
    })
    .await;
    let (status, body) = preferring
        .orchestrate_json(json!({"intent": "memory.search", "inputs": {"query": "nothing"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "agent", "{body}");
}

#[tokio::test]
async fn child_processes_get_no_secrets_from_our_environment() {
    let marker = marker();
    let app = with_servers(vec![("env", everything_stdio(&marker))]).await;
    let pid = server_pid(&marker, "node").await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !k.is_empty())
        .collect();
    for allowed in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "USER",
                "LANG",
                "LC_ALL",
                "TZ",
                "TMPDIR",
                "ORCH_TEST_MARKER"
            ]
            .contains(&allowed.as_str()),
            "{allowed} leaked into the server's environment: {names:?}"
        );
    }
    drop(app);
}
