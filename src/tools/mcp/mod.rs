//! MCP mode: every tool of every configured MCP server is an intent `mcp.<server>.<tool>`.
//! One long-lived session per server, supervised (restarted with backoff when it dies or
//! hangs); its tools are published to the catalog as a source of their own, replaced when the
//! server's tool list changes or it reconnects.
//!
//! - `config`: `[mcp.servers.<name>]`
//! - `process`: a stdio server's process group
//! - `session`: one session (stdio or Streamable HTTP)
//! - `server`: what a server's tools share with its supervisor; the call path
//! - `supervisor`: the session's life cycle
//! - `tool`: tools as intents

pub mod config;
mod process;
mod server;
mod session;
mod supervisor;
mod tool;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{EffectPolicy, McpConfig, McpServerConfig, StartPolicy};
use server::McpServer;
pub use server::McpServerStatus;

use crate::catalog::{LazySource, Registry};

/// The running MCP servers of this instance.
pub struct McpManager {
    stop: CancellationToken,
    tasks: TaskTracker,
    servers: McpHealth,
}

/// The state of this instance's MCP servers, for the dashboard (cheap to clone).
#[derive(Clone, Default)]
pub struct McpHealth(Arc<Vec<Arc<McpServer>>>);

impl McpHealth {
    pub fn servers(&self) -> Vec<McpServerStatus> {
        self.0.iter().map(|s| s.status()).collect()
    }
}

impl McpManager {
    /// Starts a supervisor per server and waits (each up to twice its start-up timeout: the
    /// handshake, then `tools/list`) for the `boot` servers' first attempt, so that queued
    /// jobs find their intents. A server that fails keeps being retried in the background.
    pub async fn start(config: &McpConfig, registry: &Arc<Registry>) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut booting = Vec::new();
        let mut servers = Vec::new();
        for (name, server_config) in &config.servers {
            let server = Arc::new(McpServer::new(name, server_config.clone()));
            servers.push(server.clone());
            match server_config.start {
                StartPolicy::Boot => booting.push(server.clone()),
                StartPolicy::Lazy => registry.add_lazy_source(Arc::new(Lazy(server.clone()))),
            }
            tasks.spawn(supervisor::supervise(
                server,
                registry.clone(),
                stop.child_token(),
            ));
        }
        futures::future::join_all(
            booting
                .iter()
                .map(|s| s.first_attempt(s.config.startup_timeout * 2)),
        )
        .await;
        tasks.close();
        Self {
            stop,
            tasks,
            servers: McpHealth(Arc::new(servers)),
        }
    }

    pub fn health(&self) -> McpHealth {
        self.servers.clone()
    }

    /// Closes every session and stops every server's process group (SIGTERM, then SIGKILL
    /// after its grace), reaping them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for McpManager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A `lazy` server, started by the first request naming one of its intents.
struct Lazy(Arc<McpServer>);

impl LazySource for Lazy {
    fn would_serve(&self, intent: &str) -> bool {
        let server = &self.0;
        !server.attempted()
            && (intent.starts_with(&server.intent_prefix())
                || server.config.aliases.contains_key(intent))
    }

    fn start(&self) -> BoxFuture<'static, ()> {
        let server = self.0.clone();
        Box::pin(async move {
            server.request_start();
            let wait: Duration = server.config.startup_timeout * 2;
            server.first_attempt(wait).await;
        })
    }
}
