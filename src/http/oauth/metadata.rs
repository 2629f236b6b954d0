//! Discovery: where a client learns which authorization server protects `/mcp` (RFC 9728) and
//! what that server supports (RFC 8414).

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    http::{AppState, problem::ApiError},
    oauth::Oauth,
};

/// Where the protected-resource metadata is, as the 401 challenge names it.
pub fn protected_resource_metadata_url(oauth: &Oauth) -> String {
    format!("{}/.well-known/oauth-protected-resource", oauth.base())
}

/// `*` (every intent the approving key holds), then one glob per intent family of the live
/// catalog (`memory.*`, `ssh.*`, `mcp.*`…), for clients that show a choice.
pub fn scopes_supported(state: &AppState) -> Vec<String> {
    let mut families: Vec<String> = state
        .registry
        .snapshot()
        .iter()
        .map(|intent| match intent.name().split_once('.') {
            Some((family, _)) => format!("{family}.*"),
            None => intent.name().to_owned(),
        })
        .collect();
    families.sort();
    families.dedup();
    let mut scopes = vec!["*".to_owned()];
    scopes.extend(families);
    scopes
}

fn cacheable(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

pub async fn protected_resource(State(state): State<AppState>) -> Response {
    let oauth = &state.oauth;
    let servers: Vec<&str> = oauth.authorization_server().into_iter().collect();
    cacheable(
        Json(json!({
            "resource": oauth.resource(),
            "authorization_servers": servers,
            "scopes_supported": scopes_supported(&state),
            "bearer_methods_supported": ["header"],
            "resource_name": "orchestrator",
            "resource_documentation": format!("{}/openapi.json", oauth.base()),
        }))
        .into_response(),
    )
}

pub async fn authorization_server(State(state): State<AppState>) -> Response {
    let oauth = &state.oauth;
    if !oauth.builtin() {
        return ApiError::RouteNotFound {
            path: "/.well-known/oauth-authorization-server".into(),
        }
        .into_response();
    }
    let base = oauth.base();
    let auth_methods = ["none", "client_secret_basic", "client_secret_post"];
    cacheable(
        Json(json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "registration_endpoint": format!("{base}/oauth/register"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "scopes_supported": scopes_supported(&state),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        }))
        .into_response(),
    )
}
