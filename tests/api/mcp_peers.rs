//! The real MCP servers the MCP tests talk to, installed at pinned versions by
//! `.ci/install-mcp-peers` (into `target/mcp-peers`, or `MCP_PEERS_DIR`), and ways to see
//! their processes from outside (`/proc`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use orchestrator::tools::mcp::McpServerConfig;

use crate::helpers::eventually;

const INSTALL: &str = ".ci/install-mcp-peers";

fn peers_dir() -> PathBuf {
    std::env::var_os("MCP_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-peers"))
}

/// The peer at `path`, installed first (once per test run) when it is missing.
fn installed(path: PathBuf) -> PathBuf {
    crate::helpers::installed_by(INSTALL, "MCP_PEERS_DIR", &peers_dir(), path)
}

/// `node`, by absolute path (found on PATH).
pub fn node() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("node"))
                .find(|p| p.is_file())
        })
        .expect("node on PATH (Node 20 or later)")
}

fn everything_entry() -> PathBuf {
    installed(
        peers_dir().join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    )
}

/// A unique value put in a stdio server's environment, so its processes can be found.
pub fn marker() -> String {
    format!("orch-test-{}", uuid::Uuid::new_v4().simple())
}

fn with_marker(mut config: McpServerConfig, marker: &str) -> McpServerConfig {
    config.env.insert("ORCH_TEST_MARKER".into(), marker.into());
    config
}

/// Fast restarts and kills for tests.
fn quick(mut config: McpServerConfig) -> McpServerConfig {
    config.restart_backoff = Duration::from_millis(100);
    config.restart_backoff_max = Duration::from_secs(1);
    config.kill_grace = Duration::from_secs(1);
    config.startup_timeout = Duration::from_secs(20);
    config
}

/// `@modelcontextprotocol/server-everything` over stdio.
pub fn everything_stdio(marker: &str) -> McpServerConfig {
    let config = McpServerConfig::stdio(
        node().display().to_string(),
        [everything_entry().display().to_string(), "stdio".into()],
    );
    quick(with_marker(config, marker))
}

/// server-everything over stdio behind a shell: `sh -c '<prefix> exec node … stdio <suffix>'`,
/// so tests can give it company in its process group or record what it sends and receives.
pub fn everything_via_shell(marker: &str, prefix: &str, suffix: &str) -> McpServerConfig {
    let script = format!(
        "{prefix} exec '{}' '{}' stdio {suffix}",
        node().display(),
        everything_entry().display()
    );
    shell(marker, script)
}

fn shell(marker: &str, script: String) -> McpServerConfig {
    quick(with_marker(
        McpServerConfig::stdio("/bin/sh", ["-c".to_owned(), script]),
        marker,
    ))
}

/// A server that is server-everything until `flag` exists, and mcp-server-time after: its
/// tool list changes when it is restarted.
pub fn everything_then_time(marker: &str, flag: &Path) -> McpServerConfig {
    let python = installed(peers_dir().join("venv/bin/python"));
    let script = format!(
        "if [ -e '{}' ]; then exec '{}' -m mcp_server_time --local-timezone UTC; \
         else exec '{}' '{}' stdio; fi",
        flag.display(),
        python.display(),
        node().display(),
        everything_entry().display()
    );
    shell(marker, script)
}

/// The official TypeScript MCP SDK's package directory.
pub fn ts_sdk_dir() -> PathBuf {
    let dir = peers_dir().join("node/node_modules/@modelcontextprotocol/sdk");
    installed(dir.join("dist/esm/client/index.js"));
    dir
}

/// The Python that has the official Python MCP SDK (`mcp`).
pub fn sdk_python() -> PathBuf {
    installed(peers_dir().join("venv/bin/python"))
}

/// `mcp-server-time` (Python) over stdio, with UTC as its local zone.
pub fn time_stdio(marker: &str) -> McpServerConfig {
    let python = installed(peers_dir().join("venv/bin/python"));
    let config = McpServerConfig::stdio(
        python.display().to_string(),
        ["-m", "mcp_server_time", "--local-timezone", "UTC"],
    );
    quick(with_marker(config, marker))
}

/// server-everything in Streamable HTTP mode on a free loopback port, in a process group of
/// its own, killed with it when dropped.
pub struct EverythingHttp {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl EverythingHttp {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    pub async fn start_on(port: u16) -> Self {
        let child = tokio::process::Command::new(node())
            .arg(everything_entry())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("server-everything starts");
        let listening = eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(
            listening,
            "server-everything (HTTP) never listened on {port}"
        );
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Kills the server's whole group and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(-(pid as i32), Signal::SIGKILL);
            }
            let _ = child.wait().await;
        }
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            signal(-(pid as i32), Signal::SIGKILL);
        }
    }
}

/// kill(2): a negative `pid` signals that process group. Failure (already gone) is ignored.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes whose environment holds `marker`, with their command names.
pub fn processes_with_marker(marker: &str) -> Vec<(i32, String)> {
    let needle = format!("ORCH_TEST_MARKER={marker}");
    proc_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .map(|pid| (pid, comm(pid)))
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The one process named `name` (e.g. `node`) carrying `marker`, once it is there.
pub async fn server_pid(marker: &str, name: &str) -> i32 {
    let mut found = None;
    let there = eventually(Duration::from_secs(45), || {
        let hit = processes_with_marker(marker)
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(pid, _)| pid);
        found = hit;
        async move { hit.is_some() }
    })
    .await;
    assert!(there, "no {name} process with marker {marker}");
    found.unwrap()
}

/// Every process (zombies included) in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<(i32, String)> {
    proc_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid pgrp …; comm may contain spaces, so split after ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(pgid)
            })
        })
        .map(|pid| (pid, comm(pid)))
        .collect()
}
