//! What the tools of one MCP server share with its supervisor: the live session (if any), the
//! call slots, and the signals between them (start it, check it). Every `tools/call` goes
//! through [`McpServer::call`], which bounds it with our own timeout: rmcp sets none.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use rmcp::{
    Peer, ServiceError,
    handler::client::progress::ProgressDispatcher,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
        ClientRequest, JsonObject, ProgressNotificationParam, RequestId, ServerResult,
    },
    service::{PeerRequestOptions, RoleClient},
};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};

use super::config::McpServerConfig;
use crate::tools::{Progress, ToolError, ToolOutput, ToolResult};

/// The most of a progress message the job's history keeps.
const MAX_PROGRESS_MESSAGE: usize = 1_000;

pub struct McpServer {
    pub name: String,
    pub config: McpServerConfig,
    /// Routes the server's progress notifications to the call that asked for them (by token).
    pub progress: ProgressDispatcher,
    /// The peer of the live session; `None` while starting, restarting or stopped.
    live: watch::Sender<Option<Peer<RoleClient>>>,
    /// Start attempts that have ended (connected or failed): what boot and lazy starts wait on.
    attempts: watch::Sender<u64>,
    calls: Semaphore,
    start_requested: AtomicBool,
    start_wanted: Notify,
    check_wanted: Notify,
    /// Sessions that ended and were started again since this instance started.
    restarts: AtomicU64,
}

/// One MCP server as the dashboard's engine health shows it (this instance's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerStatus {
    pub name: String,
    /// A session is open.
    pub up: bool,
    /// `lazy` and nothing has asked for it yet: down by design, not by failure.
    pub idle: bool,
    pub restarts: u64,
}

impl McpServer {
    pub fn new(name: &str, config: McpServerConfig) -> Self {
        Self {
            name: name.to_owned(),
            progress: ProgressDispatcher::new(),
            calls: Semaphore::new(config.max_concurrent_calls),
            start_requested: AtomicBool::new(false),
            config,
            live: watch::Sender::new(None),
            attempts: watch::Sender::new(0),
            start_wanted: Notify::new(),
            check_wanted: Notify::new(),
            restarts: AtomicU64::new(0),
        }
    }

    /// The intents of this server are `mcp.<name>.<tool>`.
    pub fn intent_prefix(&self) -> String {
        format!("mcp.{}.", self.name)
    }

    /// Calls `tool`, within the server's call timeout (waiting for a slot and a session
    /// included). Dropping the future (the job was cancelled, its attempt timed out) tells the
    /// server with `notifications/cancelled`.
    ///
    /// When `progress` is recorded, the server's progress notifications for the call become
    /// the job's progress.
    pub async fn call(&self, tool: &str, arguments: JsonObject, progress: &Progress) -> ToolResult {
        let budget = self.config.call_timeout;
        let call = async {
            let _slot = self
                .calls
                .acquire()
                .await
                .map_err(|_| self.unavailable("stopped"))?;
            let peer = self.peer(budget.min(self.config.startup_timeout)).await?;
            let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
            if !progress.is_recorded() {
                return peer
                    .call_tool(params)
                    .await
                    .map_err(|e| self.call_failed(tool, e));
            }
            // rmcp gives every request a progress token of its own; the call's handle says
            // which, and the server's notifications for it become the job's progress.
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
            let handle = peer
                .send_request_with_option(request, PeerRequestOptions::no_options())
                .await
                .map_err(|e| self.call_failed(tool, e))?;
            let mut abandoned = CancelOnDrop {
                peer: peer.clone(),
                request: Some(handle.id.clone()),
            };
            let mut reports = self.progress.subscribe(handle.progress_token.clone()).await;
            let forward = async {
                while let Some(report) = reports.next().await {
                    progress.report(progress_detail(report));
                }
                std::future::pending::<()>().await
            };
            let answer = tokio::select! {
                r = handle.await_response() => r,
                () = forward => Err(ServiceError::UnexpectedResponse),
            };
            abandoned.request = None;
            // rmcp hands each notification to a task of its own, so the last report may trail
            // the answer by a moment: take what has arrived (later ones are dropped).
            tokio::task::yield_now().await;
            while let Some(Some(report)) = reports.next().now_or_never() {
                progress.report(progress_detail(report));
            }
            match answer {
                Ok(ServerResult::CallToolResult(result)) => Ok(result),
                Ok(_) => Err(self.call_failed(tool, ServiceError::UnexpectedResponse)),
                Err(e) => Err(self.call_failed(tool, e)),
            }
        };
        let outcome = match tokio::time::timeout(budget, call).await {
            Ok(Ok(result)) => into_output(result),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Slow tool or hung server? A ping tells them apart.
                self.check_wanted.notify_one();
                Err(ToolError::timed_out(format!(
                    "MCP server {} did not answer tools/call {tool} within {} ms",
                    self.name,
                    budget.as_millis()
                )))
            }
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(e) if e.timed_out => "timed_out",
            Err(e) if e.code == "tool_error" => "tool_error",
            Err(_) => "failed",
        };
        metrics::counter!("orchestrator_mcp_calls_total", "server" => self.name.clone(), "outcome" => label)
            .increment(1);
        outcome
    }

    /// The live session's peer, starting a lazy server and waiting up to `wait` for a session.
    async fn peer(&self, wait: Duration) -> Result<Peer<RoleClient>, ToolError> {
        self.request_start();
        let mut live = self.live.subscribe();
        match tokio::time::timeout(wait, live.wait_for(Option::is_some)).await {
            Ok(Ok(peer)) => Ok(peer.clone().expect("waited for Some")),
            Ok(Err(_)) => Err(self.unavailable("stopped")),
            Err(_) => {
                Err(self.unavailable(&format!("not connected within {} ms", wait.as_millis())))
            }
        }
    }

    fn unavailable(&self, why: &str) -> ToolError {
        ToolError::transient(
            "mcp_unavailable",
            format!("MCP server {}: {why}", self.name),
        )
    }

    fn call_failed(&self, tool: &str, e: ServiceError) -> ToolError {
        match e {
            // The server answered with a JSON-RPC error: asking again gets the same answer.
            ServiceError::McpError(e) => ToolError::permanent(
                "mcp_error",
                format!("tools/call {tool}: {} ({})", e.message, e.code.0),
            ),
            ServiceError::UnexpectedResponse => ToolError::permanent(
                "mcp_protocol_error",
                format!(
                    "tools/call {tool}: the server answered with something other than a tool result"
                ),
            ),
            other => {
                // The transport failed (the process died, the connection broke): the
                // supervisor checks the session and restarts it if need be.
                self.check_wanted.notify_one();
                self.unavailable(&format!("tools/call {tool}: {other}"))
            }
        }
    }

    /// Asks a lazy server to start (no-op once asked).
    pub fn request_start(&self) {
        if !self.start_requested.swap(true, Ordering::SeqCst) {
            self.start_wanted.notify_one();
        }
    }

    pub fn start_requested(&self) -> bool {
        self.start_requested.load(Ordering::SeqCst)
    }

    pub async fn start_wanted(&self) {
        if !self.start_requested() {
            self.start_wanted.notified().await;
        }
    }

    /// A call timed out or its transport failed: the supervisor should check the session.
    pub async fn check_wanted(&self) {
        self.check_wanted.notified().await
    }

    pub fn set_live(&self, peer: Option<Peer<RoleClient>>) {
        self.live.send_replace(peer);
        let up = if self.live.borrow().is_some() {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("orchestrator_mcp_server_up", "server" => self.name.clone()).set(up);
    }

    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("orchestrator_mcp_restarts_total", "server" => self.name.clone())
            .increment(1);
    }

    pub fn status(&self) -> McpServerStatus {
        let up = self.live.borrow().is_some();
        McpServerStatus {
            name: self.name.clone(),
            up,
            idle: !up
                && self.config.start == super::config::StartPolicy::Lazy
                && !self.start_requested(),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }

    pub fn attempt_ended(&self) {
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Whether a start attempt has ended already.
    pub fn attempted(&self) -> bool {
        *self.attempts.borrow() > 0
    }

    /// Waits for the first start attempt to end (connected or failed), up to `timeout`.
    pub async fn first_attempt(&self, timeout: Duration) {
        let mut attempts = self.attempts.subscribe();
        let _ = tokio::time::timeout(timeout, attempts.wait_for(|n| *n > 0)).await;
    }
}

/// `{content, structured_content?, is_error}`; `isError: true` fails the job with the tool's
/// own text, for good (the tool said no; asking again would not change that).
fn into_output(result: CallToolResult) -> ToolResult {
    let is_error = result.is_error.unwrap_or(false);
    let content = serde_json::to_value(&result.content).unwrap_or_else(|_| json!([]));
    if is_error {
        let text: Vec<&str> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        let message = if text.is_empty() {
            content.to_string()
        } else {
            text.join("\n")
        };
        return Err(ToolError::permanent("tool_error", message));
    }
    let mut out = json!({"content": content, "is_error": false});
    if let Some(structured) = result.structured_content {
        out["structured_content"] = structured;
    }
    Ok(ToolOutput::Done(out))
}

/// A progress notification as the job's history keeps it.
fn progress_detail(p: ProgressNotificationParam) -> Value {
    let message = p
        .message
        .map(|m| m.chars().take(MAX_PROGRESS_MESSAGE).collect::<String>());
    json!({"progress": p.progress, "total": p.total, "message": message})
}

/// Tells the server a call was abandoned (the job was cancelled, its attempt timed out) when
/// the call's future is dropped before its answer, as rmcp's own `call_tool` does.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    request: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.request.take() else {
            return;
        };
        let peer = self.peer.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let reason = Some("request abandoned by the caller".to_owned());
                let _ = peer
                    .notify_cancelled(CancelledNotificationParam::new(Some(id), reason))
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    #[test]
    fn results_keep_protocol_content_and_structured_content() {
        let mut result = CallToolResult::success(vec![ContentBlock::text("hi")]);
        result.structured_content = Some(json!({"n": 1}));
        let Ok(ToolOutput::Done(v)) = into_output(result) else {
            panic!("a successful result")
        };
        assert_eq!(
            v,
            json!({"content": [{"type": "text", "text": "hi"}], "structured_content": {"n": 1}, "is_error": false})
        );
    }

    #[test]
    fn is_error_fails_for_good_with_the_tools_text() {
        let result = CallToolResult::error(vec![ContentBlock::text("no such zone")]);
        let e = into_output(result).unwrap_err();
        assert_eq!(e.code, "tool_error");
        assert_eq!(e.message, "no such zone");
        assert!(!e.retryable);
    }
}
