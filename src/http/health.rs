//! Liveness, readiness and Prometheus metrics.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::{AppState, auth::Permissions, problem::ApiError};
use crate::auth::Authenticated;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    summary = "The process is up", responses((status = 200, description = "Up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    summary = "The database answers and migrations are applied",
    description = "Without a key: ready or not, and each check as `ok` or `failed`. With a key \
        holding `ops:read` or `keys:admin`: why a check failed, the flows' circuit breakers \
        and this instance's id.",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>, auth: Option<Authenticated>) -> Response {
    let expected = crate::db::MIGRATOR.iter().count() as i64;
    let (database, migrations) = match state.store.migrations_applied(expected).await {
        Ok(true) => ("ok", "ok"),
        Ok(false) => ("ok", "pending"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ("unreachable", "unknown")
        }
    };
    let ready = database == "ok" && migrations == "ok";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if ready { "ready" } else { "not_ready" };
    let operator = auth
        .as_ref()
        .is_some_and(|a| a.key_holds_any(&["ops:read", "keys:admin"]));
    if !operator {
        // Flow URLs can be bearer secrets (ActivePieces webhooks): only names go out here.
        let check = |state: &str| if state == "ok" { "ok" } else { "failed" };
        let body = json!({
            "status": status,
            "checks": {"database": check(database), "migrations": check(migrations)},
        });
        return (code, Json(body)).into_response();
    }
    // An open flow circuit degrades one intent, not this instance: shown, not failing.
    let flows = state.breakers.views();
    let body = json!({
        "status": status,
        "checks": {"database": database, "migrations": migrations},
        "flows": flows,
        "degraded": flows.iter().any(|f| f.state != "closed"),
        "instance_id": state.orchestrator.workers().instance_id(),
    });
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    summary = "Prometheus text format", responses((status = 200, description = "Metrics")))]
pub async fn metrics(
    State(state): State<AppState>,
    auth: Option<Authenticated>,
) -> Result<Response, ApiError> {
    // Public by default (scrapers on a private network); taken out of auth.public_paths, it
    // needs a key that may read operational data.
    if !state
        .config
        .auth
        .public_paths
        .iter()
        .any(|p| p == "/metrics")
        && let Some(auth) = &auth
        && !auth.key_holds_any(&["ops:read", "keys:admin"])
        && auth.scopes.is_some()
    {
        return Err(ApiError::Forbidden {
            missing_scope: "ops:read".into(),
        });
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response())
}
