//! RFC 7591 Dynamic Client Registration, for clients that predate Client ID Metadata
//! Documents.

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{OauthErrorBody, OauthErrorResponse, context, no_store, peer};
use crate::{
    http::AppState,
    oauth::{ClientMetadata, OauthError},
};

/// RFC 7591 client metadata (other members are kept, not used).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the body the handler parses as `ClientMetadata`
pub struct RegistrationRequest {
    /// HTTPS, or HTTP to localhost / 127.0.0.1 / [::1]; no fragment; 1 to 16.
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    /// `none` (public client, PKCE), `client_secret_basic` (the default) or `client_secret_post`.
    token_endpoint_auth_method: Option<String>,
    /// `authorization_code` and `refresh_token` only.
    grant_types: Option<Vec<String>>,
    /// `code` only.
    response_types: Option<Vec<String>>,
}

/// RFC 7591 §3.2.1: the registered client.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredClient {
    client_id: String,
    client_id_issued_at: i64,
    client_name: String,
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: String,
    grant_types: Vec<String>,
    response_types: Vec<String>,
    /// Confidential clients only; shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    /// 0: the secret does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<i64>,
}

#[utoipa::path(post, path = "/oauth/register", operation_id = "registerOauthClient", tag = "oauth",
    security(()), summary = "Dynamic Client Registration (RFC 7591)",
    request_body = RegistrationRequest,
    responses((status = 201, description = "Registered", body = RegisteredClient),
              (status = 400, description = "`invalid_redirect_uri`, `invalid_client_metadata`, or registration is off (`invalid_request`)", body = OauthErrorBody)))]
pub async fn register(State(state): State<AppState>, req: Request) -> Response {
    if !state.oauth.builtin() {
        return OauthErrorResponse(OauthError::InvalidRequest(
            "this server does not register clients (oauth.mode)".into(),
        ))
        .into_response();
    }
    let ctx = context(req.headers(), peer(&req).as_ref());
    let limit = state.config.server.max_body_bytes;
    let body: Bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(body) => body,
        Err(_) => {
            return OauthErrorResponse(OauthError::InvalidClientMetadata(format!(
                "the body is larger than {limit} bytes"
            )))
            .into_response();
        }
    };
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|raw| {
            serde_json::from_value::<ClientMetadata>(raw.clone())
                .map(|meta| (raw, meta))
                .map_err(|e| format!("client metadata: {e}"))
        });
    let (raw, meta) = match parsed {
        Ok(ok) => ok,
        Err(e) => return OauthErrorResponse(OauthError::InvalidClientMetadata(e)).into_response(),
    };
    match state.oauth.register(&meta, &raw, &ctx).await {
        Ok(registered) => {
            let answer = RegisteredClient {
                client_id: registered.client_id,
                client_id_issued_at: chrono::Utc::now().timestamp(),
                client_name: registered.client_name,
                redirect_uris: registered.redirect_uris,
                token_endpoint_auth_method: registered.auth_method,
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                response_types: vec!["code".into()],
                client_secret_expires_at: registered.client_secret.as_ref().map(|_| 0),
                client_secret: registered.client_secret,
            };
            let mut resp = (StatusCode::CREATED, Json(answer)).into_response();
            no_store(resp.headers_mut());
            resp
        }
        Err(e) => OauthErrorResponse(e).into_response(),
    }
}
