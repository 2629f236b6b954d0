//! One MCP session: the handshake over stdio (a child process group) or Streamable HTTP, the
//! peer that calls go through, and an orderly close.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rmcp::{
    ClientHandler, Peer, ServiceExt,
    handler::client::progress::ProgressDispatcher,
    model::{
        ClientCapabilities, ClientConfig, Implementation, PingRequest, ProgressNotificationParam,
        ProtocolVersion,
    },
    service::{NotificationContext, QuitReason, RoleClient, RunningServiceCancellationToken},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::{config::McpServerConfig, process::ChildGroup};

/// Our side of the session: announces us, reports `notifications/tools/list_changed` and
/// hands `notifications/progress` to the call that asked for it.
#[derive(Clone)]
struct Client {
    tools_changed: Arc<Notify>,
    progress: ProgressDispatcher,
    protocol: ProtocolVersion,
}

impl ClientHandler for Client {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.handle_notification(params).await;
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("orchestrator", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(self.protocol.clone())
    }
}

pub struct Session {
    pub peer: Peer<RoleClient>,
    /// Fires when the server says its tool list changed.
    pub tools_changed: Arc<Notify>,
    ended: Option<JoinHandle<Result<QuitReason, tokio::task::JoinError>>>,
    /// Resolves when a stdio server's process exits.
    exited: Option<JoinHandle<()>>,
    cancel: Option<RunningServiceCancellationToken>,
    child: Option<ChildGroup>,
    /// Cancelled once the process exited or the connection closed. A child that keeps our
    /// pipes open (a grandchild holding stdout) hides the first from the transport, so
    /// requests of our own race against this instead of waiting out their timeouts.
    gone: CancellationToken,
}

/// Why a session with an MCP server could not be opened (the supervisor logs it and retries).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("spawning `{command}`: {reason}")]
    Spawn { command: String, reason: String },
    #[error("no handshake{} within {timeout:?}{}", at(url), stderr_tail(stderr))]
    HandshakeTimeout {
        url: Option<String>,
        timeout: Duration,
        stderr: String,
    },
    #[error("handshake failed: {reason}{}", stderr_tail(stderr))]
    Handshake { reason: String, stderr: String },
}

fn at(url: &Option<String>) -> String {
    url.as_ref()
        .map(|u| format!(" with {u}"))
        .unwrap_or_default()
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{stderr}")
    }
}

impl Session {
    /// Spawns or connects and completes the handshake within `timeout`. A failed start leaves
    /// no process behind; the error says why (with the server's last stderr lines).
    /// `progress` receives the server's progress notifications (calls subscribe to theirs).
    pub async fn open(
        server: &str,
        config: &McpServerConfig,
        progress: ProgressDispatcher,
    ) -> Result<Self, OpenError> {
        let timeout = config.startup_timeout;
        let tools_changed = Arc::new(Notify::new());
        let client = Client {
            tools_changed: tools_changed.clone(),
            progress,
            protocol: match config.protocol_version.as_str() {
                "2025-06-18" => ProtocolVersion::V_2025_06_18,
                _ => ProtocolVersion::V_2025_11_25,
            },
        };
        let (service, child) = if let Some(url) = &config.url {
            let transport =
                StreamableHttpClientTransport::from_config(http_transport_config(url, config));
            match tokio::time::timeout(timeout, client.serve(transport)).await {
                Ok(Ok(service)) => (service, None),
                Ok(Err(e)) => {
                    return Err(OpenError::Connect {
                        url: url.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(OpenError::HandshakeTimeout {
                        url: Some(url.clone()),
                        timeout,
                        stderr: String::new(),
                    });
                }
            }
        } else {
            let (child, pipes) =
                ChildGroup::spawn(server, config).map_err(|e| OpenError::Spawn {
                    command: config.command.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
            let handshake = client.serve((pipes.stdout, pipes.stdin));
            let outcome = tokio::time::timeout(timeout, handshake).await;
            if let Ok(Ok(service)) = outcome {
                return Ok(Self::running(service, tools_changed, Some(child)));
            }
            let stderr = child.stderr_tail();
            child.terminate(config.kill_grace).await;
            return Err(match outcome {
                Ok(Err(e)) => OpenError::Handshake {
                    reason: e.to_string(),
                    stderr,
                },
                _ => OpenError::HandshakeTimeout {
                    url: None,
                    timeout,
                    stderr,
                },
            });
        };
        Ok(Self::running(service, tools_changed, child))
    }

    fn running(
        service: rmcp::service::RunningService<RoleClient, Client>,
        tools_changed: Arc<Notify>,
        child: Option<ChildGroup>,
    ) -> Self {
        let peer = service.peer().clone();
        let cancel = service.cancellation_token();
        let gone = CancellationToken::new();
        let ended = {
            let gone = gone.clone();
            tokio::spawn(async move {
                let reason = service.waiting().await;
                gone.cancel();
                reason
            })
        };
        let exited = child.as_ref().map(|c| {
            let (exit, gone) = (c.exited(), gone.clone());
            tokio::spawn(async move {
                exit.await;
                gone.cancel();
            })
        });
        Self {
            peer,
            tools_changed,
            ended: Some(ended),
            exited,
            cancel: Some(cancel),
            child,
            gone,
        }
    }

    /// `request`'s outcome, or `None` when the server went away first.
    pub async fn unless_gone<T>(&self, request: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            outcome = request => Some(outcome),
            _ = self.gone.cancelled() => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGroup::pid)
    }

    /// What the handshake settled: protocol version and the server's name and version.
    pub fn describe(&self) -> String {
        match self.peer.peer_info() {
            Some(info) => {
                let (name, version) = info
                    .server_info
                    .as_ref()
                    .map_or(("?", "?"), |s| (s.name.as_str(), s.version.as_str()));
                format!("{name} {version}, protocol {}", info.protocol_version)
            }
            None => "unknown server".into(),
        }
    }

    /// Resolves when the session ended by itself (the process exited, the connection
    /// closed).
    pub async fn ended(&self) {
        self.gone.cancelled().await;
    }

    /// Whether the server answers a ping within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let ping = self.peer.send_request(PingRequest::default().into());
        matches!(
            self.unless_gone(tokio::time::timeout(timeout, ping)).await,
            Some(Ok(Ok(_)))
        )
    }

    /// Ends the session (closing stdin or deleting the HTTP session), then stops the process
    /// group: SIGTERM, SIGKILL after `grace`, reaped.
    pub async fn close(mut self, grace: Duration) {
        if let Some(exited) = self.exited.take() {
            exited.abort();
        }
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
        if let Some(ended) = self.ended.take() {
            // A server that does not let go of the session is stopped below regardless.
            let _ = tokio::time::timeout(grace, ended).await;
        }
        if let Some(child) = self.child.take() {
            child.terminate(grace).await;
        }
    }
}

fn http_transport_config(
    url: &str,
    config: &McpServerConfig,
) -> StreamableHttpClientTransportConfig {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut headers = HashMap::new();
    // Header values are credentials: zeroed once copied into the (sensitive) header values.
    let literal = config
        .headers
        .iter()
        .map(|(k, v)| (k, Zeroizing::new(v.expose().to_owned())));
    let from_env = config
        .header_env
        .iter()
        .map(|(k, var)| (k, Zeroizing::new(std::env::var(var).unwrap_or_default())));
    for (name, value) in literal.chain(from_env) {
        // Checked by config validation; a value that went bad since is left out.
        if let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_str()),
        ) {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    }
    StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(headers)
        // A server that lost our session (it restarted) must surface as a failure, so the
        // supervisor reconnects and lists the tools again instead of carrying on unaware.
        .reinit_on_expired_session(false)
}
