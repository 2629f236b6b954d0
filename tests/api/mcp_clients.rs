//! `/mcp` with the official TypeScript and Python SDKs as clients (installed at pinned versions
//! by `.ci/install-mcp-peers`), each run as a process of its own against a real server.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::Value;

use crate::{
    mcp_peers::{node, sdk_python, ts_sdk_dir},
    oauth::{spawn_oauth, tokens_for},
};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}

/// Runs a client program; its one line of JSON on stdout.
async fn run(program: &Path, args: &[String]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finishes")
    .expect("the client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed: {}\n{stdout}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn names(tools: &Value) -> Vec<&str> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_typescript_sdk_lists_calls_and_hears_progress() {
    let app = spawn_oauth(|c| c.mcp.progress_interval = Duration::from_millis(200)).await;
    // The SDK presents an OAuth access token from the built-in authorization server (the Python
    // test below presents an API key).
    let key = app.key("ts-client", &["memory.*", "system.*"]).await;
    let (_, tokens) = tokens_for(&app, &key, "memory.* system.* ssh.*").await;
    assert_eq!(tokens["scope"], "memory.* system.*");
    let out = run(
        &node(),
        &[
            script("mcp_client.mjs"),
            format!("{}/mcp", app.base),
            tokens["access_token"].as_str().unwrap().to_owned(),
            ts_sdk_dir().display().to_string(),
            "1500".into(),
        ],
    )
    .await;
    assert_eq!(out["protocol"], "2025-11-25", "{out}");
    assert!(out["session"].is_string(), "a session revision: {out}");
    let tools = names(&out["tools"]);
    assert!(
        tools.contains(&"memory_write") && tools.contains(&"system_sleep"),
        "{tools:?}"
    );
    assert!(!tools.iter().any(|t| t.starts_with("ssh_")), "{tools:?}");
    assert_eq!(out["write"]["isError"], false, "{out}");
    assert_eq!(out["write"]["structuredContent"]["intent"], "memory.write");
    let found = out["search"]["structuredContent"]["result"].to_string();
    assert!(found.contains("the typescript sdk was here"), "{found}");
    assert_eq!(
        out["slow"]["structuredContent"]["status"], "success",
        "{out}"
    );
    let progress = out["progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "progress during the wait: {out}");
    assert!(
        progress[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("running"),
        "{progress:?}"
    );
}

#[tokio::test]
async fn the_python_sdk_speaks_the_stateless_revision_and_the_session_one() {
    let app = crate::helpers::spawn_app().await;
    let key = app.key("py-client", &["memory.*"]).await;
    for (mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let out = run(
            &sdk_python(),
            &[
                script("mcp_client.py"),
                format!("{}/mcp", app.base),
                key.clone(),
                mode.into(),
            ],
        )
        .await;
        assert_eq!(out["protocol"], protocol, "{out}");
        let tools = names(&out["tools"]);
        assert!(tools.contains(&"memory_search"), "{tools:?}");
        assert!(
            tools
                .iter()
                .all(|t| t.starts_with("memory_") || t.starts_with("job_")),
            "{tools:?}"
        );
        assert_eq!(out["write"]["isError"], false, "{out}");
        let found = out["search"]["structuredContent"]["result"].to_string();
        assert!(found.contains("the python sdk was here"), "{found}");
    }
}
