//! The token endpoint (authorization code and refresh grants) and RFC 7009 revocation. Both
//! take `application/x-www-form-urlencoded` and authenticate the client as it registered.

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;

use super::{OauthErrorBody, OauthErrorResponse, context, no_store, peer};
use crate::{
    http::AppState,
    oauth::{ClientCredentials, OauthError, TokenParams},
};

const FORM_LIMIT: usize = 16 * 1024;

/// Forms of both endpoints carry the client's credentials (or send them with HTTP Basic).
trait CarriesClient {
    fn client_fields(&self) -> (Option<String>, Option<String>);
}

impl CarriesClient for TokenParams {
    fn client_fields(&self) -> (Option<String>, Option<String>) {
        (self.client_id.clone(), self.client_secret.clone())
    }
}

impl CarriesClient for RevocationParams {
    fn client_fields(&self) -> (Option<String>, Option<String>) {
        (self.client_id.clone(), self.client_secret.clone())
    }
}

/// The form and the client's credentials.
async fn form_of<T: serde::de::DeserializeOwned + CarriesClient>(
    req: Request,
) -> Result<(T, ClientCredentials), OauthError> {
    let (headers, params) = form::<T>(req).await?;
    let (id, secret) = params.client_fields();
    let creds = credentials(&headers, id, secret)?;
    Ok((params, creds))
}

async fn form<T: serde::de::DeserializeOwned>(req: Request) -> Result<(HeaderMap, T), OauthError> {
    let headers = req.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OauthError::InvalidRequest(
            "send the parameters as application/x-www-form-urlencoded".into(),
        ));
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| OauthError::InvalidRequest("the form is too large".into()))?;
    let parsed = serde_urlencoded::from_bytes(&body)
        .map_err(|e| OauthError::InvalidRequest(format!("the form is not valid: {e}")))?;
    Ok((headers, parsed))
}

/// RFC 6749 §2.3.1: HTTP Basic (form-urlencoded id and secret), else the form's fields.
fn credentials(
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<ClientCredentials, OauthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let Some(basic) = basic else {
        return Ok(ClientCredentials {
            client_id,
            client_secret,
        });
    };
    let malformed = || OauthError::InvalidClient("the Basic credentials are malformed".into());
    let decoded = STANDARD.decode(basic.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(ClientCredentials {
        client_id: Some(unescape(id)),
        client_secret: Some(unescape(secret)),
    })
}

#[utoipa::path(post, path = "/oauth/token", operation_id = "oauthToken", tag = "oauth", security(()),
    summary = "Tokens for an authorization code (PKCE) or a refresh token (rotated)",
    description = "The client authenticates as it registered: `client_id` alone (public \
        clients), or with its secret in HTTP Basic or `client_secret`.",
    request_body(content = TokenParams, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The tokens (`Cache-Control: no-store`)", body = crate::oauth::TokenAnswer),
              (status = 400, description = "`invalid_request`, `invalid_grant` (a spent, expired or foreign code, a PKCE or redirect mismatch, a reused refresh token: its grant is revoked), `invalid_scope`, `unsupported_grant_type`, `invalid_target`", body = OauthErrorBody),
              (status = 401, description = "The client could not be authenticated (`invalid_client`)", body = OauthErrorBody)))]
pub async fn token(State(state): State<AppState>, req: Request) -> Response {
    let ctx = context(req.headers(), peer(&req).as_ref());
    let (params, creds) = match form_of::<TokenParams>(req).await {
        Ok(ok) => ok,
        Err(e) => return OauthErrorResponse(e).into_response(),
    };
    match state.oauth.token(&params, &creds, &ctx).await {
        Ok(answer) => {
            let mut resp = (StatusCode::OK, Json(answer)).into_response();
            no_store(resp.headers_mut());
            resp
        }
        Err(e) => {
            if !matches!(e, OauthError::Store(_)) {
                state
                    .oauth
                    .record_refusal(creds.client_id.as_deref(), &e, &ctx)
                    .await;
            }
            OauthErrorResponse(e).into_response()
        }
    }
}

/// RFC 7009 §2.1.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RevocationParams {
    token: Option<String>,
    // `token_type_hint` is optional and only an optimisation (RFC 7009 §2.1): ignored.
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[utoipa::path(post, path = "/oauth/revoke", operation_id = "oauthRevoke", tag = "oauth", security(()),
    summary = "Revoke a token (RFC 7009): a refresh token ends its grant, an access token itself",
    request_body(content = RevocationParams, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked, or not a token of this client (RFC 7009 answers 200 either way)"),
              (status = 400, description = "No `token`, or not a form (`invalid_request`)", body = OauthErrorBody),
              (status = 401, description = "The client could not be authenticated (`invalid_client`)", body = OauthErrorBody)))]
pub async fn revoke(State(state): State<AppState>, req: Request) -> Response {
    let (params, creds) = match form_of::<RevocationParams>(req).await {
        Ok(ok) => ok,
        Err(e) => return OauthErrorResponse(e).into_response(),
    };
    let Some(token) = params.token.filter(|t| !t.is_empty()) else {
        return OauthErrorResponse(OauthError::InvalidRequest("token is required".into()))
            .into_response();
    };
    match state.oauth.revoke(&token, &creds).await {
        Ok(()) => {
            let mut resp = StatusCode::OK.into_response();
            no_store(resp.headers_mut());
            resp
        }
        Err(e) => OauthErrorResponse(e).into_response(),
    }
}
