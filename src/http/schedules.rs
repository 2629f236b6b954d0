//! `/schedules`: intents filed on a cron timetable (scope `schedules:admin`). Schedules of the
//! configuration show here too; they are changed in the file, but may be paused, resumed and
//! triggered like the others.

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
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    auth::Permissions,
    body::parse_json,
    problem::ApiError,
    responses::{BodyProblems, KeyProblems, ScheduleLookup, ScopeProblem},
};
use crate::{
    auth::Authenticated,
    ids::JobId,
    model::{FieldError, Mode},
    schedules::{CatchUp, Overlap, Timetable, schedule_problems},
    store::{NewSchedule, ScheduleRecord},
};

const SCOPE: &str = "schedules:admin";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list).post(create))
        .route("/schedules/{schedule_id}", get(show).delete(delete))
        .route("/schedules/{schedule_id}/pause", post(pause))
        .route("/schedules/{schedule_id}/resume", post(resume))
        .route("/schedules/{schedule_id}/trigger", post(trigger))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub schedule_id: Uuid,
    pub name: String,
    pub intent: String,
    pub mode: Mode,
    #[schema(value_type = Object)]
    pub inputs: Value,
    pub cron: String,
    pub timezone: String,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub catch_up_max: i32,
    pub paused: bool,
    /// `config` (`[[schedules]]`) or `api`.
    pub source: String,
    /// None when paused or when the expression never fires again.
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fire_at: Option<DateTime<Utc>>,
    /// Whose jobs it files (an API key's name, or `configuration`).
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ScheduleRecord> for ScheduleView {
    fn from(s: ScheduleRecord) -> Self {
        ScheduleView {
            schedule_id: s.id,
            name: s.name,
            intent: s.intent,
            mode: s.mode,
            inputs: s.inputs,
            cron: s.cron,
            timezone: s.timezone,
            overlap: Overlap::parse(&s.overlap),
            catch_up: CatchUp::parse(&s.catch_up),
            catch_up_max: s.catch_up_max,
            paused: s.paused,
            source: s.source,
            next_fire_at: (!s.paused).then_some(s.next_fire_at).flatten(),
            last_fire_at: s.last_fire_at,
            principal: s.principal,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// A new schedule. Its jobs are filed as the key that makes it (which must be allowed the
/// intent).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub intent: String,
    #[schema(inline)]
    pub mode: Option<Mode>,
    /// Strings may use `{{ fire_time }}`, `{{ previous_fire_time }}` and `{{ schedule }}`.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    /// Five fields, or six with seconds first (`0 */15 * * * *`).
    #[schema(min_length = 1, max_length = 200)]
    pub cron: String,
    /// An IANA time zone (default `UTC`).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_+/-]+$")]
    pub timezone: Option<String>,
    pub overlap: Option<Overlap>,
    pub catch_up: Option<CatchUp>,
    #[schema(minimum = 1, maximum = 1000)]
    pub catch_up_max: Option<i32>,
    pub paused: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Triggered {
    pub schedule_id: Uuid,
    pub job_id: JobId,
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::invalid("schedule_id", "must be a UUID"))
}

async fn load(state: &AppState, raw: &str) -> Result<ScheduleRecord, ApiError> {
    let id = parse_id(raw)?;
    state
        .store
        .schedule(id)
        .await?
        .ok_or_else(|| ApiError::ScheduleNotFound {
            schedule_id: raw.to_owned(),
        })
}

#[utoipa::path(get, path = "/schedules", operation_id = "listSchedules", tag = "schedules",
    summary = "Schedules (scope schedules:admin)",
    responses((status = 200, description = "Every schedule, by name", body = ScheduleList),
              KeyProblems, ScopeProblem))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<ScheduleList>, ApiError> {
    auth.require(SCOPE)?;
    let schedules = state.store.list_schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

#[utoipa::path(post, path = "/schedules", operation_id = "createSchedule", tag = "schedules",
    summary = "Make a schedule (scope schedules:admin)",
    request_body = CreateSchedule,
    responses((status = 201, description = "Made", body = ScheduleView),
              (status = 409, description = "A schedule has that name (`schedule_name_taken`)", body = super::problem::Problem, content_type = "application/problem+json"),
              BodyProblems, KeyProblems, ScopeProblem))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(SCOPE)?;
    let req: CreateSchedule = parse_json(&headers, body, state.config.server.max_body_bytes)?;
    let inputs = req
        .inputs
        .unwrap_or_else(|| Value::Object(Default::default()));
    let timezone = req.timezone.unwrap_or_else(|| "UTC".into());
    let catch_up_max = req.catch_up_max.unwrap_or(10);
    let problems = schedule_problems(&req.name, &req.cron, &timezone, &inputs, catch_up_max);
    if !problems.is_empty() {
        let errors: Vec<FieldError> = problems
            .into_iter()
            .map(|(field, message)| FieldError::new(field, message))
            .collect();
        return Err(ApiError::InvalidRequest {
            detail: errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            errors,
        });
    }
    let mode = req.mode.unwrap_or(Mode::Auto);
    let intent = state
        .registry
        .resolve(&req.intent, mode)
        .await
        .map_err(|e| ApiError::from_resolve(&req.intent, e))?;
    // Its jobs run as this key: it must be allowed the intent.
    auth.require_intent(intent.name())?;
    let timetable = Timetable::parse(&req.cron, &timezone)
        .map_err(|e| ApiError::invalid("cron", e.to_string()))?;
    let paused = req.paused.unwrap_or(false);
    let id = state
        .store
        .create_schedule(&NewSchedule {
            name: &req.name,
            intent: &req.intent,
            mode,
            inputs: &inputs,
            cron: &req.cron,
            timezone: &timezone,
            overlap: req.overlap.unwrap_or_default().as_str(),
            catch_up: req.catch_up.unwrap_or_default().as_str(),
            catch_up_max,
            paused,
            source: "api",
            next_fire_at: timetable.next_after(Utc::now()),
            by: &auth.principal,
        })
        .await?
        .ok_or_else(|| ApiError::ScheduleNameTaken {
            name: req.name.clone(),
        })?;
    // The scheduler sleeps until what it knew was next: this may be sooner.
    state.scheduler.wake();
    let made = load(&state, &id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(ScheduleView::from(made))).into_response())
}

#[utoipa::path(get, path = "/schedules/{schedule_id}", operation_id = "getSchedule", tag = "schedules",
    summary = "A schedule (scope schedules:admin)",
    params(("schedule_id" = Uuid, Path)),
    responses((status = 200, description = "The schedule", body = ScheduleView),
              ScheduleLookup, KeyProblems, ScopeProblem))]
pub async fn show(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(schedule_id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(SCOPE)?;
    Ok(Json(load(&state, &schedule_id).await?.into()))
}

#[utoipa::path(delete, path = "/schedules/{schedule_id}", operation_id = "deleteSchedule", tag = "schedules",
    summary = "Delete a schedule (scope schedules:admin); its jobs stay",
    params(("schedule_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = 409, description = "It is in the configuration: remove it there (`schedule_in_config`)", body = super::problem::Problem, content_type = "application/problem+json"),
              ScheduleLookup, KeyProblems, ScopeProblem))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(schedule_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(SCOPE)?;
    let s = load(&state, &schedule_id).await?;
    if s.is_from_config() {
        return Err(ApiError::ScheduleInConfig { name: s.name });
    }
    state.store.delete_schedule(s.id, &auth.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(
    state: &AppState,
    auth: &Authenticated,
    schedule_id: &str,
    paused: bool,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(SCOPE)?;
    let s = load(state, schedule_id).await?;
    // Resumed, it fires from now on: what it missed while paused is not caught up.
    let next = if paused {
        s.next_fire_at
    } else {
        Timetable::parse(&s.cron, &s.timezone)
            .ok()
            .and_then(|t| t.next_after(Utc::now()))
    };
    state
        .store
        .set_schedule_paused(s.id, paused, next, &auth.principal)
        .await?;
    state.scheduler.wake();
    Ok(Json(load(state, schedule_id).await?.into()))
}

#[utoipa::path(post, path = "/schedules/{schedule_id}/pause", operation_id = "pauseSchedule", tag = "schedules",
    summary = "Pause a schedule (scope schedules:admin)",
    params(("schedule_id" = Uuid, Path)),
    responses((status = 200, description = "Paused", body = ScheduleView),
              ScheduleLookup, KeyProblems, ScopeProblem))]
pub async fn pause(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(schedule_id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &auth, &schedule_id, true).await
}

#[utoipa::path(post, path = "/schedules/{schedule_id}/resume", operation_id = "resumeSchedule", tag = "schedules",
    summary = "Resume a paused schedule from now on (scope schedules:admin)",
    params(("schedule_id" = Uuid, Path)),
    responses((status = 200, description = "Resumed", body = ScheduleView),
              ScheduleLookup, KeyProblems, ScopeProblem))]
pub async fn resume(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(schedule_id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &auth, &schedule_id, false).await
}

#[utoipa::path(post, path = "/schedules/{schedule_id}/trigger", operation_id = "triggerSchedule", tag = "schedules",
    summary = "Fire a schedule now (scope schedules:admin)",
    description = "Files one job now, as a fire of the schedule (even while paused, and whatever \
        its overlap policy); its timetable goes on as before.",
    params(("schedule_id" = Uuid, Path)),
    responses((status = 202, description = "Filed", body = Triggered),
              (status = 409, description = "It is being fired this moment, or its inputs or intent no longer file a job (`schedule_busy`)", body = super::problem::Problem, content_type = "application/problem+json"),
              ScheduleLookup, KeyProblems, ScopeProblem))]
pub async fn trigger(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(schedule_id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(SCOPE)?;
    let s = load(&state, &schedule_id).await?;
    let fired = state.scheduler.trigger(s.id).await.map_err(|e| {
        tracing::warn!(schedule = %s.name, error = %e, "trigger failed");
        ApiError::Unavailable
    })?;
    match fired {
        Some(job_id) => Ok((
            StatusCode::ACCEPTED,
            Json(Triggered {
                schedule_id: s.id,
                job_id,
            }),
        )
            .into_response()),
        None => Err(ApiError::ScheduleBusy { name: s.name }),
    }
}
