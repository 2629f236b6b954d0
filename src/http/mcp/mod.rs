//! `/mcp`: this server as a remote MCP server (Streamable HTTP), so ChatGPT and Claude reach
//! every intent a caller may run as a tool. rmcp serves the protocol; it is mounted in our
//! router, behind the same authentication, body limit, tracing and metrics as the rest.
//!
//! Revisions: 2025-06-18 and 2025-11-25 with sessions (kept in PostgreSQL, so any instance
//! serves any session), and the stateless 2026-07-28 (`server/discover`, no session).
//! `Host` must be `server.public_url`'s or one of `mcp.allowed_hosts`, and a present `Origin`
//! `public_url`'s or one of `mcp.allowed_origins` (DNS-rebinding defence).

mod answers;
mod bearer;
mod guard;
mod handler;
mod listing;
mod names;
mod sessions;

use std::sync::Arc;

use axum::Router;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

pub use handler::PROTOCOLS;
pub use listing::META_INTENT;
pub use names::tool_names;

use super::AppState;

pub const PATH: &str = "/mcp";

pub fn router(state: &AppState) -> Router<AppState> {
    let config = &state.config;
    let shared = Arc::new(handler::Shared {
        listings: listing::Listings::new(
            state.registry.clone(),
            config.mcp.call_wait.as_millis() as u64,
        ),
        shape: answers::AnswerShape {
            public_url: config.server.public_url.clone(),
            max_chars: config.mcp.max_result_chars,
        },
        call_wait: config.mcp.call_wait,
        progress_every: config.mcp.progress_interval,
        state: state.clone(),
    });
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(config.mcp.session_idle);
    let (hosts, origins) = allowed(&config.server.public_url, &config.mcp);
    let mut server = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_json_response(true)
        .with_max_request_body_bytes(config.server.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    server.session_store = Some(Arc::new(sessions::PgSessions::new(state.store.clone())));
    let service = StreamableHttpService::new(
        move || Ok(handler::Handler::new(shared.clone())),
        Arc::new(sessions),
        server,
    );
    Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bearer::require_bearer,
        ))
}

/// `Host` and `Origin` values `/mcp` accepts: `public_url`'s and the configured ones.
fn allowed(public_url: &str, mcp: &crate::tools::mcp::McpConfig) -> (Vec<String>, Vec<String>) {
    let mut hosts = mcp.allowed_hosts.clone();
    let mut origins = mcp.allowed_origins.clone();
    if let Ok(url) = url::Url::parse(public_url)
        && let Some(host) = url.host_str()
    {
        hosts.push(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
        let origin = url.origin().ascii_serialization();
        // An explicit port matches only that port (an origin without one means the
        // scheme's default).
        origins.push(match url.port_or_known_default() {
            Some(port) if url.port().is_none() => format!("{origin}:{port}"),
            _ => origin,
        });
    }
    (hosts, origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_host_and_origin_are_allowed_with_the_configured_ones() {
        let mcp = crate::tools::mcp::McpConfig {
            allowed_hosts: vec!["internal.example".into()],
            ..Default::default()
        };
        let (hosts, origins) = allowed("https://orch.example.com/", &mcp);
        assert_eq!(hosts, ["internal.example", "orch.example.com"]);
        assert_eq!(origins, ["https://orch.example.com:443"]);
        let (hosts, origins) = allowed("http://127.0.0.1:8080", &mcp);
        assert_eq!(hosts[1], "127.0.0.1:8080");
        assert_eq!(origins, ["http://127.0.0.1:8080"]);
    }
}
