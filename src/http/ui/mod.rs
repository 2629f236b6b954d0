//! The operators' dashboard (`/ui`): server-rendered pages (askama), assets embedded in the
//! binary, no build step and nothing fetched from elsewhere. Live parts use the SSE streams
//! of the API, which accept the dashboard's session cookie for reads.
//!
//! A person signs in with an API key and gets a session (`ui_sessions`): an HttpOnly,
//! SameSite=Strict cookie (Secure when `public_url` is HTTPS) that acts as the key — its
//! scopes, its revocation and expiry. Every state-changing form carries the session's CSRF
//! token; the API itself accepts the cookie only for GET and HEAD, so no cookie ever changes
//! anything without one.

mod bulk;
mod callbacks;
mod jobs;
mod keys;
mod pages;
mod session;

pub use session::session_token;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::AppState;

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui";

const CSS: &str = include_str!("../../../assets/ui.css");
const JS: &str = include_str!("../../../assets/ui.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route(
            "/ui/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/jobs", get(jobs::jobs))
        .route("/ui/jobs/bulk", get(bulk::confirm).post(bulk::run))
        .route("/ui/jobs/{job_id}", get(pages::job))
        .route("/ui/jobs/{job_id}/cancel", post(pages::cancel))
        .route("/ui/jobs/{job_id}/retry", post(pages::retry))
        .route("/ui/callbacks", get(callbacks::callbacks))
        .route("/ui/callbacks/retry-host", post(callbacks::retry_host))
        .route("/ui/callbacks/{job_id}/retry", post(callbacks::retry_one))
        .route("/ui/keys", get(keys::keys).post(keys::create))
        .route("/ui/keys/{key_id}/revoke", post(keys::revoke))
        .route(
            "/ui/assets/ui.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
}

/// `path` (from the root of the server, `/ui/jobs`) as the client reaches it: under
/// `server.base_path` when one is set.
pub fn at(state: &AppState, path: &str) -> String {
    format!("{}{path}", state.config.server.base_path)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
