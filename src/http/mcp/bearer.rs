//! Who may call `/mcp`: a bearer API key (Claude Code, scripts) or an OAuth access token for
//! this resource (ChatGPT, claude.ai). Anything else answers 401 with the challenge that starts
//! a client's OAuth discovery (MCP authorization; RFC 9728 §5.1):
//! `WWW-Authenticate: Bearer resource_metadata="…", scope="…"`. A token is required even
//! while the rest of the API is open (no key created yet): a model's access is never open.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::KEY_PREFIX,
    http::{
        AppState,
        auth::{Refusal, presented_key, record_refusal, serve_as},
        oauth::{protected_resource_metadata_url, scopes_supported},
        problem::ApiError,
    },
    oauth::BearerError,
};

pub async fn require_bearer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let Some(token) = presented_key(req.headers()).map(str::to_owned) else {
        return challenge(&state, None);
    };
    let outcome = if token.starts_with(KEY_PREFIX) {
        state
            .authenticator
            .authenticate(Some(&token))
            .await
            .map_err(|e| match e {
                crate::auth::AuthError::Store(e) => Err(e),
                other => Ok(Refusal::of_key(&other)),
            })
    } else {
        state.oauth.authenticate(&token).await.map_err(|e| match e {
            BearerError::Store(e) => Err(e),
            BearerError::Invalid(reason) => Ok(Refusal {
                reason,
                key_id: None,
                key_name: None,
                prefix: Some(token.chars().take(8).collect()),
            }),
        })
    };
    match outcome {
        Ok(auth) => serve_as(auth, client_addr, request_id, req, next).await,
        Err(Err(store)) => ApiError::from(store).into_response(),
        Err(Ok(refusal)) => {
            let reason = refusal.reason.clone();
            record_refusal(
                &state,
                refusal,
                super::PATH,
                request_id.as_deref(),
                client_addr.as_deref(),
            );
            challenge(&state, Some(&reason))
        }
    }
}

/// 401 with the OAuth challenge (and `error="invalid_token"` when a token was refused).
fn challenge(state: &AppState, refused: Option<&str>) -> Response {
    let mut resp = ApiError::Unauthenticated {
        detail: refused
            .unwrap_or("a bearer token is required: an API key or an OAuth access token")
            .to_owned(),
    }
    .into_response();
    let mut value = if state.oauth.authorization_server().is_some() {
        let scopes = state
            .config
            .oauth
            .suggested_scopes
            .iter()
            .filter(|s| s.as_str() == "*" || scopes_supported(state).contains(s))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "Bearer resource_metadata=\"{}\", scope=\"{}\"",
            protected_resource_metadata_url(&state.oauth),
            quoted(&scopes)
        )
    } else {
        "Bearer realm=\"orchestrator\"".to_owned()
    };
    if let Some(reason) = refused {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            quoted(reason)
        ));
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// RFC 9110 quoted-string content: printable ASCII without `"` and `\`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}
