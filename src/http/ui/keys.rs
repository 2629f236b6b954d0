//! The keys page (`keys:admin`): every key, create one (shown once), revoke.

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    pages::{Chrome, page},
    session::Session,
};
use crate::{
    auth::admin::{KeyAdminError, create_key, revoke_key},
    http::{AppState, auth::Permissions, keys::admin},
    store::ApiKeyRecord,
};

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    scopes: String,
    created: String,
    last_used: String,
    state: &'static str,
}

impl From<ApiKeyRecord> for KeyRow {
    fn from(k: ApiKeyRecord) -> Self {
        let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
        let state = k.state();
        KeyRow {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.join(", "),
            created: when(k.created_at),
            last_used: k.last_used_at.map(when).unwrap_or_default(),
            state,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    /// A key just created: shown this once.
    created: Option<(String, String)>,
    error: Option<String>,
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "Managing keys needs a key with keys:admin.",
    )
        .into_response()
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    let keys = match state.store.list_api_keys().await {
        Ok(keys) => keys,
        Err(e) => return super::pages::problem_page(e.into()),
    };
    let mut resp = page(KeysPage {
        chrome: Chrome::of(session, "keys"),
        keys: keys.into_iter().map(KeyRow::from).collect(),
        created,
        error,
    });
    *resp.status_mut() = status;
    resp
}

pub async fn keys(State(state): State<AppState>, session: Session) -> Response {
    if session.auth.require("keys:admin").is_err() {
        return forbidden();
    }
    keys_page(&state, &session, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Comma- or space-separated.
    #[serde(default)]
    scopes: String,
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    if session.auth.require("keys:admin").is_err() {
        return forbidden();
    }
    let scopes: Vec<String> = form
        .scopes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match create_key(
        &state.store,
        &form.name,
        &scopes,
        None,
        &admin(&session.auth),
    )
    .await
    {
        Ok(created) => {
            state.authenticator.invalidate();
            let shown = (created.record.name, created.secret);
            keys_page(&state, &session, StatusCode::CREATED, Some(shown), None).await
        }
        Err(KeyAdminError::Store(e)) => super::pages::problem_page(e.into()),
        Err(refused) => {
            let error = Some(refused.to_string());
            keys_page(&state, &session, StatusCode::BAD_REQUEST, None, error).await
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    if session.auth.require("keys:admin").is_err() {
        return forbidden();
    }
    // An id from this page: anything else names no key (and is never a name here).
    if uuid::Uuid::try_parse(&key_id).is_err() {
        return (StatusCode::BAD_REQUEST, "Not a key id.").into_response();
    }
    match revoke_key(&state.store, &key_id, &admin(&session.auth)).await {
        Ok(_) => {
            state.authenticator.invalidate();
            Redirect::to(&session.at("/ui/keys")).into_response()
        }
        Err(e) => super::pages::problem_page(e.into()),
    }
}
