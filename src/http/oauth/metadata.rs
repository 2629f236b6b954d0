//! Discovery: where a client learns which authorization server protects `/mcp` (RFC 9728) and
//! what that server supports (RFC 8414).

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    http::{AppState, problem::ApiError},
    oauth::Oauth,
};

/// RFC 9728 protected-resource metadata of `/mcp`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProtectedResourceMetadata {
    /// `<public_url>/mcp`: the audience of every token.
    resource: String,
    /// This server (`oauth.mode = "builtin"`), the identity provider (`"external"`), or none.
    authorization_servers: Vec<String>,
    /// `*` (whatever the approving key holds) and one glob per intent family.
    scopes_supported: Vec<String>,
    bearer_methods_supported: Vec<String>,
    resource_name: String,
    resource_documentation: String,
}

/// RFC 8414 authorization-server metadata of the built-in server.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: String,
    revocation_endpoint: String,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<String>,
    response_modes_supported: Vec<String>,
    grant_types_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    client_id_metadata_document_supported: bool,
    authorization_response_iss_parameter_supported: bool,
}

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

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn cacheable(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn resource_metadata(state: &AppState) -> Response {
    let oauth = &state.oauth;
    cacheable(
        Json(ProtectedResourceMetadata {
            resource: oauth.resource().to_owned(),
            authorization_servers: oauth
                .authorization_server()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            scopes_supported: scopes_supported(state),
            bearer_methods_supported: strings(&["header"]),
            resource_name: "orchestrator".into(),
            resource_documentation: format!("{}/openapi.json", oauth.base()),
        })
        .into_response(),
    )
}

#[utoipa::path(get, path = "/.well-known/oauth-protected-resource",
    operation_id = "protectedResourceMetadata", tag = "oauth", security(()),
    summary = "RFC 9728 metadata of /mcp: its authorization server and scopes",
    responses((status = 200, description = "The metadata", body = ProtectedResourceMetadata)))]
pub async fn protected_resource(State(state): State<AppState>) -> Response {
    resource_metadata(&state)
}

#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp",
    operation_id = "protectedResourceMetadataOfMcp", tag = "oauth", security(()),
    summary = "The same metadata at RFC 9728's path-suffixed address",
    responses((status = 200, description = "The metadata", body = ProtectedResourceMetadata)))]
pub async fn protected_resource_of_mcp(State(state): State<AppState>) -> Response {
    resource_metadata(&state)
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server",
    operation_id = "authorizationServerMetadata", tag = "oauth", security(()),
    summary = "RFC 8414 metadata of the built-in authorization server",
    responses((status = 200, description = "The metadata", body = AuthorizationServerMetadata),
              (status = 404, description = "`oauth.mode` is not `builtin` (`not_found`)", body = crate::http::problem::Problem, content_type = "application/problem+json")))]
pub async fn authorization_server(State(state): State<AppState>) -> Response {
    let oauth = &state.oauth;
    if !oauth.builtin() {
        return ApiError::RouteNotFound {
            path: "/.well-known/oauth-authorization-server".into(),
        }
        .into_response();
    }
    let base = oauth.base();
    let auth_methods = strings(&["none", "client_secret_basic", "client_secret_post"]);
    cacheable(
        Json(AuthorizationServerMetadata {
            issuer: base.to_owned(),
            authorization_endpoint: format!("{base}/oauth/authorize"),
            token_endpoint: format!("{base}/oauth/token"),
            registration_endpoint: format!("{base}/oauth/register"),
            revocation_endpoint: format!("{base}/oauth/revoke"),
            scopes_supported: scopes_supported(&state),
            response_types_supported: strings(&["code"]),
            response_modes_supported: strings(&["query"]),
            grant_types_supported: strings(&["authorization_code", "refresh_token"]),
            code_challenge_methods_supported: strings(&["S256"]),
            token_endpoint_auth_methods_supported: auth_methods.clone(),
            revocation_endpoint_auth_methods_supported: auth_methods,
            client_id_metadata_document_supported: true,
            authorization_response_iss_parameter_supported: true,
        })
        .into_response(),
    )
}
