//! The authorization endpoint: a server-rendered consent page that works without JavaScript.
//! The person signs in by pasting an API key, sees who asks for what, and approves or denies
//! with a form submit; the answer goes back to the client's registered redirect URI with `iss`
//! (RFC 9207).

use askama::Template;
use axum::{
    body::Bytes,
    extract::{RawQuery, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::{context, no_store, peer};
use crate::{
    auth::AuthError,
    http::{
        AppState,
        auth::{Refusal, record_refusal},
    },
    oauth::{AuthorizationParams, AuthorizationRefusal, AuthorizationRequest, OauthError},
};

#[derive(Template)]
#[template(path = "oauth_consent.html")]
struct Consent<'a> {
    action: &'a str,
    client_name: &'a str,
    client_id: &'a str,
    redirect_uri: &'a str,
    redirect_host: &'a str,
    scopes: &'a [String],
    scope: String,
    state: &'a str,
    code_challenge: &'a str,
    resource: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "oauth_error.html")]
struct ErrorPage<'a> {
    code: &'a str,
    description: &'a str,
}

/// The consent form as documented (the handler reads it as a [`Submission`]).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ConsentForm {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    /// The API key the person signs in with (approving needs it).
    api_key: Option<String>,
    /// `approve` or `deny`.
    decision: Option<String>,
}

/// The consent form's submission: the request again, the key, the decision.
#[derive(Debug, Deserialize)]
struct Submission {
    #[serde(flatten)]
    params: AuthorizationParams,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    decision: Option<String>,
}

/// Pages of the consent flow: never cached, never framed (clickjacking), no referrer leaking
/// the request's parameters.
fn page(status: StatusCode, html: String) -> Response {
    let mut resp = (status, Html(html)).into_response();
    let headers = resp.headers_mut();
    no_store(headers);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn error_page(error: &OauthError) -> Response {
    let html = ErrorPage {
        code: error.code(),
        description: &error.description(),
    }
    .render()
    .unwrap_or_else(|_| "authorization refused".into());
    page(
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
        html,
    )
}

/// Back to the client: `redirect_uri` with the answer's parameters added to its query.
fn back_to_client(redirect_uri: &str, pairs: &[(&str, &str)], status: StatusCode) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => {
            return error_page(&OauthError::InvalidRequest(
                "the redirect URI is not a URL".into(),
            ));
        }
    };
    url.query_pairs_mut().extend_pairs(pairs.iter().copied());
    let mut resp = status.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    no_store(resp.headers_mut());
    resp
}

fn refusal(state: &AppState, refusal: AuthorizationRefusal, status: StatusCode) -> Response {
    match refusal {
        AuthorizationRefusal::Page(error) => error_page(&error),
        AuthorizationRefusal::Redirect {
            redirect_uri,
            state: client_state,
            error,
        } => {
            let description = error.description();
            let mut pairs = vec![("error", error.code()), ("error_description", &description)];
            if let Some(s) = client_state.as_deref() {
                pairs.push(("state", s));
            }
            pairs.push(("iss", state.oauth.base()));
            back_to_client(&redirect_uri, &pairs, status)
        }
    }
}

fn consent(request: &AuthorizationRequest, error: Option<&str>, status: StatusCode) -> Response {
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let html = Consent {
        action: "/oauth/authorize",
        client_name: &request.client.client_name,
        client_id: &request.client.client_id,
        redirect_uri: &request.redirect_uri,
        redirect_host: &redirect_host,
        scopes: &request.scopes,
        scope: request.scopes.join(" "),
        state: request.state.as_deref().unwrap_or_default(),
        code_challenge: &request.code_challenge,
        resource: &request.resource,
        error,
    }
    .render();
    match html {
        Ok(html) => page(status, html),
        Err(e) => {
            tracing::error!(error = %e, "the consent page did not render");
            error_page(&OauthError::InvalidRequest(
                "the page could not be shown".into(),
            ))
        }
    }
}

#[utoipa::path(get, path = "/oauth/authorize", operation_id = "oauthAuthorize", tag = "oauth", security(()),
    summary = "The consent page (authorization code flow, PKCE S256 required)",
    params(("response_type" = Option<String>, Query, description = "`code`"),
           ("client_id" = Option<String>, Query, description = "A registered id, or the HTTPS URL of the client's metadata document"),
           ("redirect_uri" = Option<String>, Query, description = "One the client registered, exactly"),
           ("state" = Option<String>, Query),
           ("scope" = Option<String>, Query, description = "Space-separated scopes (none: whatever the key holds)"),
           ("code_challenge" = Option<String>, Query, description = "BASE64URL(SHA-256(code_verifier))"),
           ("code_challenge_method" = Option<String>, Query, description = "`S256`"),
           ("resource" = Option<String>, Query, description = "`<public_url>/mcp` (RFC 8707)")),
    responses((status = 200, description = "The consent page", body = String, content_type = "text/html"),
              (status = 302, description = "Back to the client's redirect URI with `error`, `state` and `iss`"),
              (status = 400, description = "A request that cannot be sent back (bad or unregistered redirect URI, no client_id): an error page", body = String, content_type = "text/html"),
              (status = 401, description = "An unknown client: an error page", body = String, content_type = "text/html")))]
pub async fn show(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    if !state.oauth.builtin() {
        return error_page(&OauthError::InvalidRequest(
            "this server does not authorize clients (oauth.mode)".into(),
        ));
    }
    let params: AuthorizationParams =
        match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => {
                return error_page(&OauthError::InvalidRequest(format!(
                    "the query is not valid: {e}"
                )));
            }
        };
    match state.oauth.check_authorization(&params).await {
        Ok(request) => consent(&request, None, StatusCode::OK),
        Err(r) => refusal(&state, r, StatusCode::FOUND),
    }
}

#[utoipa::path(post, path = "/oauth/authorize", operation_id = "oauthConsent", tag = "oauth", security(()),
    summary = "The consent form's submission: the request again, `api_key`, `decision`",
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to the client's redirect URI with `code`, `state` and `iss`, or an `error`"),
              (status = 400, description = "No decision or no key (the page again), or a request that cannot be sent back (an error page)", body = String, content_type = "text/html"),
              (status = 401, description = "The key is not valid (the page again), or an unknown client (an error page)", body = String, content_type = "text/html")))]
pub async fn answer(State(state): State<AppState>, req: Request) -> Response {
    if !state.oauth.builtin() {
        return error_page(&OauthError::InvalidRequest(
            "this server does not authorize clients (oauth.mode)".into(),
        ));
    }
    let ctx = context(req.headers(), peer(&req).as_ref());
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return error_page(&OauthError::InvalidRequest("the form is too large".into())),
    };
    let submission: Submission = match serde_urlencoded::from_bytes(&body) {
        Ok(s) => s,
        Err(e) => {
            return error_page(&OauthError::InvalidRequest(format!(
                "the form is not valid: {e}"
            )));
        }
    };
    let request = match state.oauth.check_authorization(&submission.params).await {
        Ok(r) => r,
        Err(r) => return refusal(&state, r, StatusCode::SEE_OTHER),
    };
    let redirect_with_error = |error: OauthError| AuthorizationRefusal::Redirect {
        redirect_uri: request.redirect_uri.clone(),
        state: request.state.clone(),
        error,
    };
    match submission.decision.as_deref() {
        Some("approve") => {}
        Some("deny") => {
            if let Err(e) = state.oauth.record_denial(&request, &ctx).await {
                tracing::warn!(error = %e, "could not audit a denial");
            }
            return refusal(
                &state,
                redirect_with_error(OauthError::AccessDenied("the person denied access".into())),
                StatusCode::SEE_OTHER,
            );
        }
        _ => {
            return consent(
                &request,
                Some("Choose Approve or Deny."),
                StatusCode::BAD_REQUEST,
            );
        }
    }
    let key = submission
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return consent(
            &request,
            Some("Paste an API key to approve."),
            StatusCode::BAD_REQUEST,
        );
    };
    let signed_in = match state.authenticator.authenticate(Some(key)).await {
        Ok(signed_in) if signed_in.principal.api_key_id.is_some() => signed_in,
        Err(AuthError::Store(e)) => return error_page(&OauthError::Store(e)),
        refused => {
            if let Err(e) = &refused {
                // A wrong key on the consent page is a failed sign-in like any other.
                record_refusal(
                    &state,
                    Refusal::of_key(e),
                    "/oauth/authorize",
                    ctx.request_id.as_deref(),
                    ctx.client_addr.as_deref(),
                );
            }
            return consent(
                &request,
                Some("That API key is not valid (unknown, revoked or expired)."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    match state.oauth.approve(&request, &signed_in, &ctx).await {
        Ok(code) => {
            let mut pairs = vec![("code", code.as_str())];
            if let Some(s) = request.state.as_deref() {
                pairs.push(("state", s));
            }
            pairs.push(("iss", state.oauth.base()));
            back_to_client(&request.redirect_uri, &pairs, StatusCode::SEE_OTHER)
        }
        Err(OauthError::Store(e)) => error_page(&OauthError::Store(e)),
        Err(e) => refusal(&state, redirect_with_error(e), StatusCode::SEE_OTHER),
    }
}
