//! RFC 7591 Dynamic Client Registration, for clients that predate Client ID Metadata
//! Documents.

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{OauthErrorResponse, context, no_store, peer};
use crate::{
    http::AppState,
    oauth::{ClientMetadata, OauthError},
};

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
            let mut answer = json!({
                "client_id": registered.client_id,
                "client_id_issued_at": chrono::Utc::now().timestamp(),
                "client_name": registered.client_name,
                "redirect_uris": registered.redirect_uris,
                "token_endpoint_auth_method": registered.auth_method,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            });
            if let Some(secret) = registered.client_secret {
                answer["client_secret"] = json!(secret);
                answer["client_secret_expires_at"] = json!(0);
            }
            let mut resp = (StatusCode::CREATED, Json(answer)).into_response();
            no_store(resp.headers_mut());
            resp
        }
        Err(e) => OauthErrorResponse(e).into_response(),
    }
}
