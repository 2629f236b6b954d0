//! The built-in OAuth authorization server's endpoints and the discovery documents
//! (RFC 9728 protected-resource metadata, RFC 8414 authorization-server metadata). None of them
//! takes an API key: each verifies what it is sent itself.

pub(crate) mod authorize;
pub(crate) mod metadata;
pub(crate) mod register;
pub(crate) mod token;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::AppState;
use crate::oauth::{OauthError, RequestContext};

pub use metadata::{protected_resource_metadata_url, scopes_supported};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(metadata::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(metadata::protected_resource_of_mcp),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route("/oauth/register", post(register::register))
        .route(
            "/oauth/authorize",
            get(authorize::show).post(authorize::answer),
        )
        .route("/oauth/token", post(token::token))
        .route("/oauth/revoke", post(token::revoke))
}

/// RFC 6749 §5.2's error body (and RFC 7591's, RFC 8707's codes).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OauthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_scope`,
    /// `unsupported_grant_type`, `invalid_redirect_uri`, `invalid_client_metadata`,
    /// `invalid_target`, `temporarily_unavailable`…
    error: String,
    error_description: String,
}

/// An OAuth error answered with [`OauthErrorBody`], never cached.
pub(crate) struct OauthErrorResponse(pub OauthError);

impl IntoResponse for OauthErrorResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "OAuth request failed");
        }
        let mut resp = (
            status,
            Json(OauthErrorBody {
                error: self.0.code().to_owned(),
                error_description: self.0.description(),
            }),
        )
            .into_response();
        no_store(resp.headers_mut());
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"orchestrator\""),
            );
        }
        resp
    }
}

pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

pub(crate) fn context(
    req_headers: &HeaderMap,
    addr: Option<&ConnectInfo<SocketAddr>>,
) -> RequestContext {
    RequestContext {
        request_id: req_headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_addr: addr.map(|c| c.0.ip().to_string()),
    }
}

/// The connection's address, when the server was started with it (tests may not be).
pub(crate) fn peer(req: &Request) -> Option<ConnectInfo<SocketAddr>> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().cloned()
}
