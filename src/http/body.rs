//! Request bodies and parameters at the edge: every way they can be wrong is a 4xx naming the
//! field, and no string PostgreSQL cannot store (U+0000) gets past.

use axum::{
    extract::{
        RawPathParams, Request,
        rejection::{BytesRejection, RawPathParamsRejection},
    },
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::ApiError;

const NUL_REFUSED: &str = "must not contain NUL (U+0000) characters";

/// Parses the body of a JSON request, mapping every way it can be wrong to a 4xx.
/// `limit` is the configured body limit, named in a 413.
pub fn parse_json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    if body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "is empty; expected a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    // Nothing below may meet a string PostgreSQL cannot store.
    if let Some(path) = crate::nul::find(&value, "") {
        let field = if path.is_empty() { "body" } else { &path };
        return Err(ApiError::invalid(field, NUL_REFUSED));
    }
    Ok(value)
}

/// A JSON body read into `T`; a field of the wrong shape is named by its path.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let value = parse_json_body(headers, body, limit)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(&field, e.into_inner().to_string())
    })
}

/// Refuses a path parameter or query parameter holding U+0000 (`%00`), naming it, before any
/// handler sees it.
pub async fn refuse_nul_parameters(
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    if let Ok(params) = &params
        && let Some((name, _)) = params.iter().find(|(_, value)| value.contains('\0'))
    {
        return ApiError::invalid(name, NUL_REFUSED).into_response();
    }
    if let Some(query) = req.uri().query()
        && let Some((name, _)) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        return ApiError::invalid(&crate::nul::strip(&name), NUL_REFUSED).into_response();
    }
    next.run(req).await
}
