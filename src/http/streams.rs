//! Server-Sent Events. A job's events (`GET /jobs/{id}/stream`, or `GET /jobs/{id}/events`
//! asked for as `text/event-stream`): its history, then live, then `end` when it is final. Every
//! visible job's state changes (`GET /events`). The streamed answer of `POST /orchestrate`
//! (`accepted`, the job's events, `result`) is built by `orchestrate` on [`job_stream`].
//!
//! Each event's `id` is its position in the stream; a client that reconnects with
//! `Last-Event-ID` gets exactly the events it missed. A client too slow to keep up is sent
//! `reconnect` and the stream ends: it resumes from its last id, from the database.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    auth::Permissions,
    jobs::{EventView, load_visible, parse_job_id},
    problem::ApiError,
    responses::{BadParameters, JobLookup, KeyProblems},
};
use crate::{
    auth::Authenticated,
    ids::JobId,
    live::{FollowError, Follower, Scope},
    model::{JobStatus, Mode},
    store::{StreamEvent, StreamPosition},
};

/// How soon a client told to reconnect comes back.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{job_id}/stream", get(stream_job))
        .route("/events", get(stream_events))
}

/// Whether the client asked for an event stream (`Accept: text/event-stream`, as
/// `EventSource` sends it). `*/*` is not asking: plain clients keep their JSON.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let is_sse = parts
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"));
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_sse && !refused
        })
}

/// Where a reconnecting client stands (`Last-Event-ID`).
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<StreamPosition>, ApiError> {
    const FIELD: &str = "Last-Event-ID";
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| ApiError::invalid(FIELD, "must be an event id this server sent"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|reason: &str| ApiError::invalid(FIELD, reason))
}

/// One event as streams carry it (the `data` of an unnamed SSE event; its `id` is the
/// position to resume after): the event as `GET /jobs/{id}/events` lists it, and its job.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamedEvent {
    pub job_id: JobId,
    pub intent: Option<String>,
    pub mode: Option<Mode>,
    #[serde(flatten)]
    pub event: EventView,
}

impl From<&StreamEvent> for StreamedEvent {
    fn from(e: &StreamEvent) -> Self {
        StreamedEvent {
            job_id: e.job_id,
            intent: e.intent.clone(),
            mode: e.mode,
            event: EventView::from(e.event.clone()),
        }
    }
}

/// An event whose data is `body` as JSON.
pub fn json_event(name: Option<&str>, body: &impl Serialize) -> Event {
    let event = match name {
        Some(name) => Event::default().event(name),
        None => Event::default(),
    };
    // Our own types always serialize; should one not, the client still sees the event.
    match event.json_data(body) {
        Ok(event) => event,
        Err(e) => Event::default()
            .event("error")
            .data(format!("could not encode the event: {e}")),
    }
}

fn job_event(e: &StreamEvent) -> Event {
    json_event(None, &StreamedEvent::from(e)).id(e.position.to_string())
}

#[derive(Serialize)]
struct Ended {
    job_id: JobId,
    status: JobStatus,
}

/// What ends a job's stream once the job is final: `end` by default, `result` for
/// `POST /orchestrate`.
pub type Finale = Box<dyn FnOnce(JobId, JobStatus) -> BoxFuture<'static, Event> + Send>;

pub fn end_event() -> Finale {
    Box::new(|job_id, status| {
        Box::pin(async move { json_event(Some("end"), &Ended { job_id, status }) })
    })
}

/// Turns a follower into SSE events.
struct Pump {
    follower: Follower,
    keep: Box<dyn Fn(&StreamEvent) -> bool + Send>,
    /// The job whose final state change ends the stream.
    ends_with: Option<(JobId, Finale)>,
    /// Final state changes at or before this position do not end it: the job was retried
    /// after them.
    ends_after: Option<StreamPosition>,
    queued: VecDeque<Event>,
    finished: bool,
    shutdown: CancellationToken,
}

impl Pump {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            let next = tokio::select! {
                // The instance is stopping: the client reconnects elsewhere.
                _ = self.shutdown.cancelled() => return None,
                next = self.follower.next() => next,
            };
            let event = match next {
                Ok(event) => event,
                Err(FollowError::Closed) => return None,
                Err(e) => {
                    if let FollowError::Store(e) = &e {
                        tracing::warn!(error = %e, "event stream could not read; client told to reconnect");
                    }
                    self.finished = true;
                    return Some(reconnect_event(&e));
                }
            };
            if !(self.keep)(&event) {
                continue;
            }
            if let Some(status) = event.event.to_status.filter(|s| s.is_final())
                && self
                    .ends_with
                    .as_ref()
                    .is_some_and(|(job, _)| *job == event.job_id)
                && self.ends_after.is_none_or(|after| event.position > after)
                && let Some((job, finale)) = self.ends_with.take()
            {
                self.finished = true;
                self.queued.push_back(finale(job, status).await);
            }
            return Some(job_event(&event));
        }
    }
}

fn reconnect_event(e: &FollowError) -> Event {
    #[derive(Serialize)]
    struct Reconnect {
        reason: String,
    }
    json_event(
        Some("reconnect"),
        &Reconnect {
            reason: format!("{e}; reconnect with the last event id"),
        },
    )
    .retry(RECONNECT_AFTER)
}

/// The SSE response: heartbeats, and no buffering by proxies in front.
fn sse_response(state: &AppState, pump: Pump) -> Response {
    let stream = futures::stream::unfold(pump, |mut pump| async move {
        let event = pump.next().await?;
        Some((Ok::<_, Infallible>(event), pump))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.config.events.heartbeat))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// A visible job's stream from `from`: `prelude`, its events, then `finale` when it is final.
pub async fn job_stream(
    state: &AppState,
    job_id: JobId,
    final_status: Option<JobStatus>,
    from: StreamPosition,
    prelude: Vec<Event>,
    finale: Finale,
) -> Result<Response, ApiError> {
    let follower = state.live.follow(Scope::Job(job_id), from);
    let mut queued: VecDeque<Event> = prelude.into();
    let mut ends_with = Some((job_id, finale));
    // A client that already has the final event gets only the finale.
    if let Some(status) = final_status
        && let Some(last) = state.store.job_final_position(job_id).await?
        && from >= last
        && let Some((job, finale)) = ends_with.take()
    {
        queued.push_back(finale(job, status).await);
        return Ok(sse_response(
            state,
            Pump {
                follower,
                keep: Box::new(|_| false),
                ends_with: None,
                ends_after: None,
                queued,
                finished: true,
                shutdown: state.shutdown.clone(),
            },
        ));
    }
    let ends_after = state.store.job_retried_position(job_id).await?;
    Ok(sse_response(
        state,
        Pump {
            follower,
            keep: Box::new(|_| true),
            ends_with,
            ends_after,
            queued,
            finished: false,
            shutdown: state.shutdown.clone(),
        },
    ))
}

/// `GET /jobs/{id}/events` as `text/event-stream`, and `GET /jobs/{id}/stream`.
pub async fn job_events_stream(
    state: &AppState,
    auth: &Authenticated,
    headers: &HeaderMap,
    job_id: JobId,
) -> Result<Response, ApiError> {
    let from = last_event_id(headers)?.unwrap_or(StreamPosition::START);
    let job = load_visible(state, auth, job_id).await?;
    let final_status = Some(job.status).filter(|s| s.is_final());
    job_stream(state, job_id, final_status, from, Vec::new(), end_event()).await
}

#[utoipa::path(get, path = "/jobs/{job_id}/stream", operation_id = "streamJob", tag = "jobs",
    summary = "A job's events as Server-Sent Events, live until it is final",
    description = "The job's history, then its events as they happen, then an `end` event \
        when it is final. Each event's `id` is its position: reconnect with `Last-Event-ID` \
        to get exactly the events missed. A `reconnect` event asks a client that fell behind \
        to do so. Also served by `GET /jobs/{job_id}/events` with `Accept: text/event-stream`.",
    params(
        ("job_id" = JobId, Path, description = "`job_` + 32 hex digits"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received"),
    ),
    responses(
        (status = 200, description = "The event stream (each `data` a `StreamedEvent`)", content_type = "text/event-stream", body = String),
        JobLookup, KeyProblems))]
pub async fn stream_job(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job_id)?;
    job_events_stream(&state, &auth, &headers, id).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Exact intent name.
    #[param(max_length = 200)]
    pub intent: Option<String>,
    /// Only changes into this status.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only jobs of this engine.
    #[param(value_type = Option<Mode>)]
    pub mode: Option<String>,
}

/// The filter, checked: what passes is compared in memory, never sent to SQL.
struct CheckedFilter {
    intent: Option<String>,
    status: Option<JobStatus>,
    mode: Option<Mode>,
}

impl CheckedFilter {
    fn from(f: EventFilter) -> Result<Self, ApiError> {
        if f.intent.as_ref().is_some_and(|i| i.chars().count() > 200) {
            return Err(ApiError::invalid(
                "intent",
                "must be at most 200 characters",
            ));
        }
        let status = one_of(f.status, "status", &JobStatus::ALL.map(|s| (s.as_str(), s)))?;
        let engines = [Mode::Flow, Mode::Agent, Mode::Mcp].map(|m| (m.as_str(), m));
        let mode = one_of(f.mode, "mode", &engines)?;
        Ok(Self {
            intent: f.intent.filter(|s| !s.is_empty()),
            status,
            mode,
        })
    }

    fn admits(&self, e: &StreamEvent) -> bool {
        let to = e.event.to_status;
        to.is_some()
            && self
                .intent
                .as_ref()
                .is_none_or(|i| e.intent.as_ref() == Some(i))
            && self.status.is_none_or(|s| to == Some(s))
            && self.mode.is_none_or(|m| e.mode == Some(m))
    }
}

/// The value of `choices` named by a query parameter (empty: none).
fn one_of<T: Copy>(
    raw: Option<String>,
    field: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    choices
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, value)| Some(*value))
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            ApiError::invalid(
                field,
                format!("`{raw}` is not one of: {}", names.join(", ")),
            )
        })
}

#[utoipa::path(get, path = "/events", operation_id = "streamEvents", tag = "jobs",
    summary = "Job state changes as Server-Sent Events",
    description = "Every state change of the jobs this key may see (its own; all with \
        `jobs:read:all`), from now on or after `Last-Event-ID`, filtered by intent, status \
        and mode.",
    params(EventFilter,
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received")),
    responses(
        (status = 200, description = "The event stream (each `data` a `StreamedEvent`)", content_type = "text/event-stream", body = String),
        BadParameters, KeyProblems))]
pub async fn stream_events(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let filter = CheckedFilter::from(filter)?;
    let from = match last_event_id(&headers)? {
        Some(position) => position,
        None => state.live.now().await?,
    };
    let auth = Arc::new(auth);
    let follower = state.live.follow(Scope::AllJobs, from);
    Ok(sse_response(
        &state,
        Pump {
            follower,
            keep: Box::new(move |e| filter.admits(e) && auth.sees(e.owner)),
            ends_with: None,
            ends_after: None,
            queued: VecDeque::new(),
            finished: false,
            shutdown: state.shutdown.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_an_explicit_event_stream_accept_asks_for_one() {
        assert!(wants_event_stream(&accept("text/event-stream")));
        assert!(wants_event_stream(&accept(
            "application/json;q=0.5, Text/Event-Stream"
        )));
        assert!(!wants_event_stream(&accept("*/*")));
        assert!(!wants_event_stream(&accept("application/json")));
        assert!(!wants_event_stream(&accept("text/event-stream;q=0")));
        assert!(!wants_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn last_event_ids_are_checked() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", HeaderValue::from_str(v).unwrap());
            last_event_id(&h)
        };
        assert!(with("12-34").unwrap().is_some());
        assert!(with("").unwrap().is_none());
        assert!(with("12").is_err());
        assert!(with("job_1").is_err());
        assert!(last_event_id(&HeaderMap::new()).unwrap().is_none());
    }
}
