//! Signing in and out, and the session every page runs under.

use std::{net::SocketAddr, time::Duration};

use askama::Template;
use axum::{
    Form,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use serde::Deserialize;

use crate::{
    auth::{AuthError, Authenticated, hash_key},
    http::{
        AppState,
        auth::{Refusal, record_refusal},
    },
};

const COOKIE: &str = "orch_session";
/// How long a session lasts (a person signs in again after a working day).
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The session's token, from the `Cookie` header. (A cookie header is `name=value` pairs
/// separated by `;`: too small a grammar to take a crate for.)
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

fn cookie(state: &AppState, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if state.config.server.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    // The whole server's path: the dashboard's live parts read the API's event streams with it.
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={}/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.config.server.base_path,
        max_age.as_secs()
    ))
    .expect("a cookie of base64url characters")
}

/// A signed-in person: the key the session acts as, and the form token.
pub struct Session {
    pub auth: Authenticated,
    pub csrf: String,
    /// `server.base_path`: every link and redirect starts with it.
    pub base: String,
    token: String,
}

impl Session {
    /// A path of the server as the browser reaches it (see [`super::at`]).
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The refusal of a form without the session's token (a cross-site request), if it is.
    pub fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        use subtle::ConstantTimeEq;
        let valid: bool = sent.as_bytes().ct_eq(self.csrf.as_bytes()).into();
        (!valid).then(|| {
            (
                StatusCode::FORBIDDEN,
                "The form is stale or came from another site: reload the page and try again.",
            )
                .into_response()
        })
    }
}

/// Pages without a session send the person to sign in.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to(&super::at(state, "/ui/sign-in")).into_response();
        let Some(token) = session_token(&parts.headers).map(str::to_owned) else {
            return Err(to_sign_in());
        };
        match state.authenticator.authenticate_session(&token).await {
            Ok((auth, csrf)) => Ok(Session {
                auth,
                csrf,
                base: state.config.server.base_path.clone(),
                token,
            }),
            Err(AuthError::Store(e)) => {
                tracing::warn!(error = %e, "dashboard session not checked");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable.",
                )
                    .into_response())
            }
            Err(_) => Err(to_sign_in()),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/sign_in.html")]
struct SignInPage<'a> {
    base: &'a str,
    error: Option<&'a str>,
}

fn sign_in_form(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let base = &state.config.server.base_path;
    match (SignInPage { base, error }).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => super::pages::render_failed(e),
    }
}

pub async fn sign_in_page(State(state): State<AppState>) -> Response {
    sign_in_form(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    api_key: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<SignInForm>,
) -> Response {
    let client_addr = peer.ip().to_string();
    let key = form.api_key.trim();
    if key.is_empty() {
        return sign_in_form(&state, StatusCode::BAD_REQUEST, Some("Paste an API key."));
    }
    let auth = match state.authenticator.authenticate(Some(key)).await {
        Ok(auth) => auth,
        Err(AuthError::Store(_)) => {
            return sign_in_form(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The database is unavailable; try again shortly."),
            );
        }
        Err(e) => {
            record_refusal(
                &state,
                Refusal::of_key(&e),
                "/ui/sign-in",
                None,
                Some(&client_addr),
            );
            return sign_in_form(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("That API key is not valid (unknown, revoked or expired)."),
            );
        }
    };
    let Some(key_id) = auth.principal.api_key_id else {
        return sign_in_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Sign in with an API key."),
        );
    };
    let token = random_token();
    let opened = state
        .store
        .create_ui_session(
            &hash_key(&token),
            (key_id, &auth.principal.name),
            &random_token(),
            SESSION_TTL.as_secs_f64(),
            Some(&client_addr),
        )
        .await;
    if let Err(e) = opened {
        tracing::warn!(error = %e, "could not open a dashboard session");
        return sign_in_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The database is unavailable; try again shortly."),
        );
    }
    let mut resp = Redirect::to(&super::at(&state, "/ui")).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, &token, SESSION_TTL));
    resp
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    let client_addr = peer.ip().to_string();
    if let Err(e) = state
        .store
        .end_ui_session(&hash_key(&session.token), Some(&client_addr))
        .await
    {
        tracing::warn!(error = %e, "could not end a dashboard session");
    }
    let mut resp = Redirect::to(&session.at("/ui/sign-in")).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", Duration::ZERO));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; orch_session=abc-_9; b=2"),
        );
        assert_eq!(session_token(&h), Some("abc-_9"));
        let mut none = HeaderMap::new();
        none.insert(
            header::COOKIE,
            HeaderValue::from_static("orch_session=; x=y"),
        );
        assert_eq!(session_token(&none), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
    }
}
