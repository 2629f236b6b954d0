//! Keeps one server's session alive: open it (at boot or on first use), publish its tools,
//! refresh them when the server says they changed, check it when a call failed or timed out
//! (and every ping interval), and restart it with backoff when it died or hung. On shutdown
//! the session is closed and its process group stopped.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{
    config::StartPolicy,
    server::McpServer,
    session::{OpenError, Session},
    tool,
};
use crate::catalog::{CatalogError, Registry};

/// Why a session was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    /// Spawning, connecting, the handshake or the first `tools/list` failed.
    StartFailed,
    /// The process exited or the connection closed.
    Ended,
    /// A ping went unanswered.
    Hung,
    /// The tool list could not be read again.
    ListFailed,
}

pub async fn supervise(server: Arc<McpServer>, registry: Arc<Registry>, stop: CancellationToken) {
    let config = &server.config;
    let grace = config.kill_grace;
    let first_delay = config.restart_backoff;
    let max_delay = config.restart_backoff_max;
    let mut delay = first_delay;
    if config.start == StartPolicy::Lazy {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = server.start_wanted() => {}
        }
    }
    loop {
        let up_since = Instant::now();
        let end = match open_and_publish(&server, &registry, &stop).await {
            Ok(session) => serve(&server, &registry, session, &stop, grace).await,
            Err(e) => {
                if stop.is_cancelled() {
                    End::Shutdown
                } else {
                    tracing::warn!(server = %server.name, "MCP server did not start: {e}");
                    End::StartFailed
                }
            }
        };
        if end == End::Shutdown {
            break;
        }
        if up_since.elapsed() >= max_delay {
            delay = first_delay;
        }
        server.record_restart();
        tracing::warn!(server = %server.name, reason = ?end, delay_ms = delay.as_millis() as u64, "restarting MCP server");
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max_delay);
    }
    server.set_live(None);
    registry.remove_source(&source_name(&server));
}

/// Why a start of an MCP server failed.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("tools/list: {0}")]
    List(String),
    #[error("tools/list did not answer within {0:?}")]
    ListTimeout(Duration),
    #[error("the server went away while listing its tools")]
    Gone,
    #[error("publishing its tools: {0}")]
    Publish(#[from] CatalogError),
}

/// Opens a session and publishes its tools; the attempt counts as ended either way.
async fn open_and_publish(
    server: &Arc<McpServer>,
    registry: &Registry,
    stop: &CancellationToken,
) -> Result<Session, StartError> {
    let opened = tokio::select! {
        _ = stop.cancelled() => Err(StartError::ShuttingDown),
        r = Session::open(&server.name, &server.config, server.progress.clone()) => r.map_err(StartError::from),
    };
    let result = match opened {
        Ok(session) => match publish(server, registry, &session).await {
            Ok(count) => {
                tracing::info!(server = %server.name, pid = ?session.pid(), tools = count, "MCP server connected: {}", session.describe());
                server.set_live(Some(session.peer.clone()));
                Ok(session)
            }
            Err(e) => {
                session.close(server.config.kill_grace).await;
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    server.attempt_ended();
    result
}

/// Runs the session until it ends, hangs or the instance stops; then closes it.
async fn serve(
    server: &Arc<McpServer>,
    registry: &Registry,
    session: Session,
    stop: &CancellationToken,
    grace: Duration,
) -> End {
    let config = &server.config;
    let ping_timeout = config.ping_timeout;
    let ping_every = (!config.ping_interval.is_zero()).then_some(config.ping_interval);
    let tools_changed = session.tools_changed.clone();
    let end = loop {
        let idle_ping = async {
            match ping_every {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break End::Shutdown,
            _ = session.ended() => break End::Ended,
            _ = tools_changed.notified() => {
                if let Err(e) = publish(server, registry, &session).await {
                    tracing::warn!(server = %server.name, "listing tools after list_changed failed: {e}");
                    break End::ListFailed;
                }
            }
            _ = server.check_wanted() => {
                if !session.ping(ping_timeout).await {
                    break End::Hung;
                }
            }
            _ = idle_ping => {
                if !session.ping(ping_timeout).await {
                    break End::Hung;
                }
            }
        }
    };
    server.set_live(None);
    session.close(grace).await;
    end
}

/// Lists the tools (every page) and replaces this server's intents with them.
async fn publish(
    server: &Arc<McpServer>,
    registry: &Registry,
    session: &Session,
) -> Result<usize, StartError> {
    let timeout = server.config.startup_timeout;
    let listing = tokio::time::timeout(timeout, session.peer.list_all_tools());
    let tools = match session.unless_gone(listing).await {
        Some(Ok(Ok(tools))) => tools,
        Some(Ok(Err(e))) => return Err(StartError::List(e.to_string())),
        Some(Err(_)) => return Err(StartError::ListTimeout(timeout)),
        None => return Err(StartError::Gone),
    };
    let intents = tool::intents(server, tools);
    let count = intents.len();
    registry.set_source(&source_name(server), intents)?;
    Ok(count)
}

fn source_name(server: &McpServer) -> String {
    format!("mcp.{}", server.name)
}
