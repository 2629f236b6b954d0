//! Liveness, readiness and Prometheus metrics.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{AppState, auth::Permissions, problem::ApiError};
use crate::auth::Authenticated;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    summary = "The process is up", security(()),
    responses((status = 200, description = "Up: `{\"status\":\"ok\"}`", body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    summary = "The database answers and migrations are applied",
    description = "Without a key: ready or not, and each check as `ok` or `failed`. With a key \
        holding `ops:read` or `keys:admin`: why a check failed, the flows' circuit breakers \
        and this instance's id.",
    security(()),
    responses((status = 200, description = "Ready", body = Readiness),
              (status = 503, description = "Not ready: a check failed", body = Readiness),
              (status = 401, description = "A key was sent and it is not valid (`unauthorized`)", body = super::problem::Problem, content_type = "application/problem+json")))]
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
    let body = if operator {
        // An open flow circuit degrades one intent, not this instance: shown, not failing.
        let flows = state.breakers.views();
        Readiness {
            status,
            checks: ReadinessChecks {
                database,
                migrations,
            },
            degraded: Some(flows.iter().any(|f| f.state != "closed")),
            flows: Some(flows),
            instance_id: Some(state.intake.workers().instance_id()),
        }
    } else {
        // Flow URLs can be bearer secrets (ActivePieces webhooks): only names go out here.
        let check = |state: &'static str| if state == "ok" { "ok" } else { "failed" };
        Readiness {
            status,
            checks: ReadinessChecks {
                database: check(database),
                migrations: check(migrations),
            },
            flows: None,
            degraded: None,
            instance_id: None,
        }
    };
    (code, Json(body)).into_response()
}

/// `/readyz`: the details only for a key with `ops:read` or `keys:admin`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: &'static str,
    pub checks: ReadinessChecks,
    /// Each flow URL's circuit breaker (operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub flows: Option<Vec<crate::tools::flow::BreakerView>>,
    /// A flow's circuit is not closed (operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<bool>,
    /// This instance (operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<uuid::Uuid>,
}

/// `ok`, or why not: `failed` without a key; `unreachable`, `pending` or `unknown` for operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    pub database: &'static str,
    pub migrations: &'static str,
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    summary = "Prometheus text format", security(()),
    responses((status = 200, description = "The metrics (text/plain; version=0.0.4)", body = String, content_type = "text/plain"),
              (status = 401, description = "A key was sent and it is not valid, or /metrics was taken out of auth.public_paths and no key was sent (`unauthorized`)", body = super::problem::Problem, content_type = "application/problem+json"),
              (status = 403, description = "/metrics is not public and the key lacks ops:read (`forbidden`)", body = super::problem::Problem, content_type = "application/problem+json")))]
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
