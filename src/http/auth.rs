//! Authentication (every request but the public paths) and the authorization checks handlers
//! make with the resulting principal.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, Request, State},
    http::{HeaderMap, Method, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{AppState, problem::ApiError};
use crate::{
    auth::{AuthError, Authenticated},
    store::AuthFailure,
};

/// Who a request was served for (the key's name, or `anonymous`), left on the response for the
/// access log.
#[derive(Debug, Clone)]
pub struct PrincipalName(pub String);

/// Paths with their own verification, never behind this layer: signed ingest, `/mcp` (API keys
/// or OAuth access tokens, with its own challenge), and the OAuth endpoints and discovery
/// documents.
fn verifies_itself(path: &str) -> bool {
    path == "/callbacks/ingest"
        || path == crate::http::mcp::PATH
        || path.starts_with("/oauth/")
        || path.starts_with("/.well-known/")
        || path == super::ui::PREFIX
        || path.starts_with("/ui/")
}

pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    from_authorization.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if verifies_itself(&path) {
        return next.run(req).await;
    }
    // Public paths answer without a key, and show more to a valid one (a key that is sent is
    // always checked: a typo must not quietly get the anonymous answer).
    if state.config.auth.public_paths.contains(&path) && presented_key(req.headers()).is_none() {
        return next.run(req).await;
    }
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The dashboard's session cookie stands for its key on the event streams its live parts
    // read (browsers' EventSource cannot send a header), and nowhere else in the API.
    let presented = presented_key(req.headers());
    if presented.is_none()
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && is_event_stream(&path)
        && let Some(token) = super::ui::session_token(req.headers())
    {
        return match state.authenticator.authenticate_session(token).await {
            Ok((auth, _)) => serve_as(auth, client_addr, request_id, req, next).await,
            Err(AuthError::Store(e)) => ApiError::from(e).into_response(),
            Err(e) => ApiError::Unauthenticated {
                detail: e.to_string(),
            }
            .into_response(),
        };
    }
    match state.authenticator.authenticate(presented).await {
        Ok(auth) => serve_as(auth, client_addr, request_id, req, next).await,
        Err(AuthError::Store(e)) => ApiError::from(e).into_response(),
        Err(e) => {
            record_refusal(
                &state,
                Refusal::of_key(&e),
                &path,
                request_id.as_deref(),
                client_addr.as_deref(),
            );
            ApiError::Unauthenticated {
                detail: e.to_string(),
            }
            .into_response()
        }
    }
}

/// The API's Server-Sent Events paths (the dashboard's session cookie is accepted there).
fn is_event_stream(path: &str) -> bool {
    path == "/events"
        || path
            .strip_prefix("/jobs/")
            .is_some_and(|rest| rest.ends_with("/stream") || rest.ends_with("/events"))
}

/// Runs the request as `auth`'s principal, and leaves its name on the response for the access
/// log (written outside this layer).
pub async fn serve_as(
    mut auth: Authenticated,
    client_addr: Option<String>,
    request_id: Option<String>,
    mut req: Request,
    next: Next,
) -> Response {
    auth.principal.client_addr = client_addr;
    auth.principal.request_id = request_id;
    let who = PrincipalName(auth.principal.name.clone());
    req.extensions_mut().insert(auth);
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(who);
    resp
}

/// A refused credential, for the audit trail (never the credential itself).
pub struct Refusal {
    pub reason: String,
    pub key_id: Option<Uuid>,
    pub key_name: Option<String>,
    pub prefix: Option<String>,
}

impl Refusal {
    pub fn of_key(e: &AuthError) -> Self {
        let (key_id, key_name, prefix) = match e {
            AuthError::Revoked { record } | AuthError::Expired { record } => (
                Some(record.id),
                Some(record.name.clone()),
                Some(record.prefix.clone()),
            ),
            AuthError::Unknown { prefix } => (None, None, Some(prefix.clone())),
            _ => (None, None, None),
        };
        Self {
            reason: e.to_string(),
            key_id,
            key_name,
            prefix,
        }
    }
}

/// Audits a refused credential in the background (the answer does not wait for it) and counts
/// it.
pub fn record_refusal(
    state: &AppState,
    refusal: Refusal,
    path: &str,
    request_id: Option<&str>,
    client_addr: Option<&str>,
) {
    let store = state.store.clone();
    let path = path.to_owned();
    let request_id = request_id.map(str::to_owned);
    let client_addr = client_addr.map(str::to_owned);
    tokio::spawn(async move {
        let failure = AuthFailure {
            reason: &refusal.reason,
            status: 401,
            key_prefix: refusal.prefix.as_deref(),
            api_key_id: refusal.key_id,
            api_key_name: refusal.key_name.as_deref(),
            path: &path,
            request_id: request_id.as_deref(),
            client_addr: client_addr.as_deref(),
        };
        if let Err(err) = store.audit_auth_failure(&failure).await {
            tracing::warn!(error = %err, "could not audit an authentication failure");
        }
    });
    metrics::counter!("orchestrator_auth_failures_total").increment(1);
}

/// Public paths take `Option<Authenticated>`: None when no key was sent.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Authenticated>().cloned())
    }
}

/// Handlers take the principal as an argument; it is always there behind the middleware.
impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("a protected handler ran without authentication");
                ApiError::Internal
            })
    }
}

/// The authorization questions handlers ask.
pub trait Permissions {
    fn require(&self, scope: &str) -> Result<(), ApiError>;
    fn require_intent(&self, intent: &str) -> Result<(), ApiError>;
    fn sees_all_jobs(&self) -> bool;
    /// A real key (not open-mode access) holding one of `scopes`.
    fn key_holds_any(&self, scopes: &[&str]) -> bool;
    /// Whether a job created by `owner` (an API key id) is visible.
    fn sees(&self, owner: Option<Uuid>) -> bool;
}

impl Permissions for Authenticated {
    fn require(&self, scope: &str) -> Result<(), ApiError> {
        match &self.scopes {
            Some(s) if !s.has(scope) => Err(ApiError::Forbidden {
                missing_scope: scope.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn require_intent(&self, intent: &str) -> Result<(), ApiError> {
        match &self.scopes {
            Some(s) if !s.allows_intent(intent) => Err(ApiError::Forbidden {
                missing_scope: intent.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn sees_all_jobs(&self) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.has("jobs:read:all"))
    }

    fn key_holds_any(&self, scopes: &[&str]) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|s| scopes.iter().any(|scope| s.has(scope)))
    }

    fn sees(&self, owner: Option<Uuid>) -> bool {
        self.sees_all_jobs() || (owner.is_some() && owner == self.principal.api_key_id)
    }
}
