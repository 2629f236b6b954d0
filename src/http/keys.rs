//! `/keys`: managing API keys over HTTP (scope `keys:admin`). The CLI does the same.

use axum::{
    Json, Router,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    auth::Permissions,
    body::parse_json,
    problem::ApiError,
    responses::{BadParameters, BodyProblems, KeyProblems, ScopeProblem},
};
use crate::{
    auth::{
        Authenticated,
        admin::{KeyAdmin, create_key, revoke_key},
    },
    store::ApiKeyRecord,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list_keys).post(create))
        .route("/keys/{key}/revoke", post(revoke))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters (the key itself is shown only when created).
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: k.created_at,
            created_by: k.created_by,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Unique among active keys; not only spaces.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Intent globs (`memory.*`) and administrative scopes (`jobs:read:all`,
    /// `jobs:read:payloads`, `jobs:cancel`, `jobs:retry`, `callbacks:retry`, `schedules:admin`, `keys:admin`, `ops:read`).
    #[schema(min_items = 1, inline, value_type = Vec<Scope>)]
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One scope: an intent glob (letters, digits, `.`, `_`, `-`, `*`, `?`) or an administrative scope.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(
    value_type = String,
    pattern = "^([A-Za-z0-9._*?-]+|jobs:read:all|jobs:read:payloads|jobs:cancel|jobs:retry|callbacks:retry|schedules:admin|keys:admin|ops:read)$"
)]
pub struct Scope(String);

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    /// The key. Shown this once; only its hash is stored.
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
}

pub(crate) fn admin(auth: &Authenticated) -> KeyAdmin<'_> {
    KeyAdmin {
        actor_kind: auth.principal.actor_kind(),
        actor_id: auth.principal.api_key_id.map(|id| id.to_string()),
        actor_name: &auth.principal.name,
        request_id: auth.principal.request_id.as_deref(),
    }
}

#[utoipa::path(get, path = "/keys", operation_id = "listKeys", tag = "keys",
    summary = "API keys (scope keys:admin)",
    responses((status = 200, description = "Every key, never the keys themselves", body = [KeyView]),
              KeyProblems, ScopeProblem))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    auth.require("keys:admin")?;
    let keys = state.store.list_api_keys().await?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

#[utoipa::path(post, path = "/keys", operation_id = "createKey", tag = "keys",
    summary = "Create an API key (scope keys:admin); the key is shown once",
    request_body = CreateKey,
    responses((status = 201, description = "Created; `key` is shown this once", body = CreatedKeyView),
              (status = 409, description = "An active key has that name (`key_name_taken`)", body = super::problem::Problem, content_type = "application/problem+json"),
              BodyProblems, KeyProblems, ScopeProblem))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require("keys:admin")?;
    let req: CreateKey = parse_json(&headers, body, state.config.server.max_body_bytes)?;
    let created = create_key(
        &state.store,
        &req.name,
        &req.scopes,
        req.expires_at,
        &admin(&auth),
    )
    .await?;
    state.authenticator.invalidate();
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            key: created.secret,
            record: created.record.into(),
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/keys/{key}/revoke", operation_id = "revokeKey", tag = "keys",
    summary = "Revoke an API key by id or name (scope keys:admin)",
    params(("key" = String, Path, description = "The key's id or name")),
    responses((status = 200, description = "Revoked", body = KeyView),
              (status = 404, description = "No active key with that id or name (`key_not_found`)", body = super::problem::Problem, content_type = "application/problem+json"),
              BadParameters, KeyProblems, ScopeProblem))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(key): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    auth.require("keys:admin")?;
    let revoked = revoke_key(&state.store, &key, &admin(&auth))
        .await?
        .ok_or(ApiError::KeyNotFound { key })?;
    state.authenticator.invalidate();
    Ok(Json(revoked.into()))
}
