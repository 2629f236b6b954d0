//! The jobs page: filters (intent, status, mode, API key, time range), search by job id or
//! idempotency key, newest first in keyset pages, and the selection the bulk actions act on.

use askama::Template;
use axum::{
    extract::{Query, State, rejection::QueryRejection},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{NaiveDateTime, SecondsFormat};
use serde::Deserialize;

use super::{
    pages::{Chrome, page, problem_page},
    session::Session,
};
use crate::{
    http::{
        AppState,
        auth::Permissions,
        jobs::{ListParams, load_visible, page_of_jobs, parse_job_id},
        problem::ApiError,
    },
    model::{JobStatus, Mode},
    store::JobRecord,
};

/// The jobs page's query, as its form sends it: empty fields mean "any".
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct JobsQuery {
    /// A job id or an idempotency key.
    pub q: String,
    pub intent: String,
    pub status: String,
    pub mode: String,
    /// An API key id (keys with `jobs:read:all` choose among every key).
    pub key: String,
    /// `datetime-local` values, in UTC.
    pub since: String,
    pub until: String,
    pub cursor: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A `datetime-local` value (`2026-12-03T14:05`, seconds optional) read as UTC, as RFC 3339.
fn utc_time(field: &str, raw: &str) -> Result<Option<String>, ApiError> {
    let Some(raw) = some(raw) else {
        return Ok(None);
    };
    NaiveDateTime::parse_from_str(&raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(&raw, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)))
        .map_err(|_| ApiError::invalid(field, "must be a date and time (UTC)"))
}

impl JobsQuery {
    /// The filter as the jobs API takes it.
    pub fn list_params(&self) -> Result<ListParams, ApiError> {
        Ok(ListParams {
            intent: some(&self.intent),
            status: some(&self.status),
            mode: some(&self.mode),
            api_key_id: some(&self.key),
            schedule_id: None,
            since: utc_time("since", &self.since)?,
            until: utc_time("until", &self.until)?,
            limit: None,
            cursor: some(&self.cursor),
        })
    }

    /// The filter's fields that are set, for links (no search, no cursor).
    pub fn filter_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("intent", &self.intent),
            ("status", &self.status),
            ("mode", &self.mode),
            ("key", &self.key),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(name, value)| some(value).map(|v| (name, v)))
        .collect()
    }

    pub fn filter_query(&self) -> String {
        serde_urlencoded::to_string(self.filter_pairs()).unwrap_or_default()
    }
}

pub struct Row {
    pub id: String,
    pub intent: String,
    pub mode: &'static str,
    pub status: &'static str,
    pub principal: String,
    pub created_at: String,
    pub duration: String,
}

impl From<JobRecord> for Row {
    fn from(r: JobRecord) -> Self {
        Row {
            id: r.id.to_string(),
            intent: r.intent,
            mode: r.mode.as_str(),
            status: r.status.as_str(),
            principal: r.principal.unwrap_or_default(),
            created_at: r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            duration: r
                .duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default(),
        }
    }
}

/// An API key a filter may name.
pub struct KeyChoice {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "ui/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    query: JobsQuery,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
    statuses: Vec<&'static str>,
    modes: Vec<&'static str>,
    /// Every key, for keys that see every job; empty otherwise.
    keys: Vec<KeyChoice>,
    can_cancel: bool,
    can_retry: bool,
    /// Some filter is set (bulk actions by filter are offered).
    filtered: bool,
    filter_query: String,
}

/// What a search box value finds: jobs whose idempotency key it is.
async fn search(state: &AppState, session: &Session, key: &str) -> Result<Vec<Row>, ApiError> {
    if key.chars().count() > 200 {
        return Err(ApiError::invalid("q", "must be at most 200 characters"));
    }
    let owner = if session.auth.sees_all_jobs() {
        None
    } else {
        Some(session.auth.principal.api_key_id.unwrap_or_default())
    };
    let mut rows = Vec::new();
    for id in state.store.jobs_with_key(key, owner).await? {
        match load_visible(state, &session.auth, id).await {
            Ok(job) => rows.push(Row::from(job)),
            Err(ApiError::JobNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

pub async fn jobs(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return Redirect::to(&session.at("/ui/jobs")).into_response();
    };
    let sees_all = session.auth.sees_all_jobs();
    let keys = if sees_all {
        match state.store.list_api_keys().await {
            Ok(keys) => keys
                .into_iter()
                .map(|k| KeyChoice {
                    id: k.id.to_string(),
                    name: k.name,
                })
                .collect(),
            Err(e) => return problem_page(e.into()),
        }
    } else {
        Vec::new()
    };
    let mut error = None;
    let mut next = None;
    let rows = if let Some(q) = some(&query.q) {
        // A job id opens the job; anything else is an idempotency key.
        if let Ok(id) = parse_job_id(&q) {
            return Redirect::to(&session.at(&format!("/ui/jobs/{id}"))).into_response();
        }
        match search(&state, &session, &q).await {
            Ok(rows) if rows.len() == 1 => {
                let to = session.at(&format!("/ui/jobs/{}", rows[0].id));
                return Redirect::to(&to).into_response();
            }
            Ok(rows) => {
                if rows.is_empty() {
                    error = Some(format!("No job of yours has the idempotency key `{q}`."));
                }
                rows
            }
            Err(e) => {
                error = Some(shown(e));
                Vec::new()
            }
        }
    } else {
        let found = match query.list_params() {
            Ok(params) => page_of_jobs(&state, &session.auth, &params).await,
            Err(e) => Err(e),
        };
        match found {
            Ok((rows, cursor)) => {
                next = cursor.map(|cursor| {
                    let mut pairs = query.filter_pairs();
                    pairs.push(("cursor", cursor));
                    serde_urlencoded::to_string(pairs).unwrap_or_default()
                });
                rows.into_iter().map(Row::from).collect()
            }
            Err(e) => {
                error = Some(shown(e));
                Vec::new()
            }
        }
    };
    let filter_query = query.filter_query();
    page(JobsPage {
        chrome: Chrome::of(&session, "jobs"),
        rows,
        next,
        error,
        statuses: JobStatus::ALL.map(JobStatus::as_str).to_vec(),
        modes: Mode::ALL
            .into_iter()
            .filter(|m| *m != Mode::Auto)
            .map(Mode::as_str)
            .collect(),
        keys,
        can_cancel: session.auth.require("jobs:cancel").is_ok(),
        can_retry: session.auth.require("jobs:retry").is_ok(),
        filtered: !filter_query.is_empty(),
        filter_query,
        query,
    })
}

/// An API error as the page's message (a bad field says which and why).
fn shown(e: ApiError) -> String {
    match &e {
        ApiError::InvalidField { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_date_times_are_read_as_utc() {
        assert_eq!(
            utc_time("since", "2026-12-03T14:05").unwrap().as_deref(),
            Some("2026-12-03T14:05:00Z")
        );
        assert_eq!(
            utc_time("since", "2026-12-03T14:05:09").unwrap().as_deref(),
            Some("2026-12-03T14:05:09Z")
        );
        assert_eq!(utc_time("since", "  ").unwrap(), None);
        for bad in ["yesterday", "2026-13-01T00:00", "2026-12-03"] {
            assert!(utc_time("until", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_filter_keeps_only_what_is_set() {
        let q = JobsQuery {
            q: "order-1".into(),
            intent: " memory.write ".into(),
            mode: "agent".into(),
            cursor: "abc".into(),
            ..Default::default()
        };
        assert_eq!(q.filter_query(), "intent=memory.write&mode=agent");
        let params = q.list_params().unwrap();
        assert_eq!(params.intent.as_deref(), Some("memory.write"));
        assert_eq!(params.cursor.as_deref(), Some("abc"));
        assert_eq!(params.status, None);
    }
}
