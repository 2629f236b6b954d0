//! What rmcp would answer unclearly, answered here first: a body that is not JSON (rmcp says
//! 415) gets JSON-RPC's parse error with a 400, one over the size limit a 413 naming it, and a
//! string PostgreSQL cannot store (U+0000) an invalid request naming where it is.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::http::AppState;

/// JSON-RPC's codes for a body that is not JSON, and for a message that is not a valid one.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

fn jsonrpc_error(status: StatusCode, code: i64, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"jsonrpc": "2.0", "id": Value::Null, "error": {"code": code, "message": message}})
            .to_string(),
    )
        .into_response()
}

pub async fn check_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let limit = state.config.server.max_body_bytes;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, limit).await else {
        return jsonrpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            format!("the request body exceeds {limit} bytes"),
        );
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                PARSE_ERROR,
                format!("Parse error: the body is not JSON ({e})"),
            );
        }
    };
    if let Some(path) = crate::nul::find(&value, "") {
        let at = if path.is_empty() {
            "the message"
        } else {
            &path
        };
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("{at}: U+0000 cannot be stored; remove it"),
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
