//! The HTTP API: one file per resource, merged here with the cross-cutting layers (request
//! ids, tracing, metrics, body limit, panics as problems).

pub mod actions;
pub mod auth;
pub mod body;
pub mod bounded;
pub mod callbacks;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod mcp;
pub mod oauth;
pub mod openapi;
pub mod orchestrate;
pub mod problem;
pub mod rate_limit;
pub mod responses;
pub mod schedules;
pub mod streams;
pub mod tools;
pub mod ui;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    auth::Authenticator,
    callbacks::{CallbackIngest, SigningSecrets, UrlPolicy},
    catalog::Registry,
    config::Config,
    intake::Intake,
    store::Store,
    tools::flow::Breakers,
};
use problem::ApiError;

/// What every handler can reach, behind one `Arc`: axum clones the state for every extractor
/// and middleware of every request, and cloning the fields one by one (a reference count each,
/// and a mutex for the cancellation token) cost 6 % of the server's CPU under load (perf,
/// `system.echo` at 64 connections).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The server's shared parts, reached through [`AppState`].
pub struct SharedState {
    pub config: Arc<Config>,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub intake: Arc<Intake>,
    pub metrics: PrometheusHandle,
    pub callback_policy: Arc<UrlPolicy>,
    pub ingest: Arc<CallbackIngest>,
    /// Flow circuit breakers, shown by `/readyz`.
    pub breakers: Arc<Breakers>,
    pub authenticator: Arc<Authenticator>,
    /// The secrets outbound callbacks and flow requests are signed with.
    pub signing: Arc<SigningSecrets>,
    /// `/mcp`'s OAuth: token checks and the built-in authorization server.
    pub oauth: Arc<crate::oauth::Oauth>,
    /// Live job events, read once per instance and fanned out to SSE streams.
    pub live: Arc<crate::live::LiveEvents>,
    /// This instance's MCP servers: up, idle, restarts (the dashboard's engine health).
    pub mcp: crate::tools::mcp::McpHealth,
    /// Fires schedules on demand (`POST /schedules/{id}/trigger`).
    pub scheduler: Arc<crate::schedules::Scheduler>,
    /// Fires when the instance stops: long-lived streams (MCP's SSE) end with it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let base_path = state.config.server.base_path.clone();
    let app = routes(state);
    if base_path.is_empty() {
        return app;
    }
    // Handlers and layers see paths without the prefix (axum strips it); only links and
    // redirects that go back to the client add it (see `ui::at`).
    Router::new()
        .nest(&base_path, app)
        .fallback(|uri: Uri| async move {
            ApiError::RouteNotFound {
                path: uri.path().to_owned(),
            }
        })
}

fn routes(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let authenticate = middleware::from_fn_with_state(state.clone(), auth::authenticate);
    Router::new()
        .merge(orchestrate::router())
        .merge(actions::router())
        .merge(jobs::router())
        .merge(streams::router())
        .merge(ui::router())
        .merge(callbacks::router())
        .merge(keys::router())
        .merge(schedules::router())
        .merge(tools::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(mcp::router(&state))
        .merge(oauth::router())
        .fallback(|uri: Uri| async move {
            ApiError::RouteNotFound {
                path: uri.path().to_owned(),
            }
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(body::refuse_nul_parameters))
        .layer(authenticate)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let request_id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::Internal.into_response()
        }))
        .with_state(state)
}

/// Metrics by route (the route's pattern, never the raw path: ids would explode the label set)
/// and the access log line.
async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let principal = resp
        .extensions()
        .get::<auth::PrincipalName>()
        .map_or("-", |p| p.0.as_str());
    tracing::info!(
        method,
        route,
        status,
        duration_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
        request_id,
        principal,
        "access"
    );
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("orchestrator_http_requests_total", &labels).increment(1);
    metrics::histogram!("orchestrator_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    resp
}
