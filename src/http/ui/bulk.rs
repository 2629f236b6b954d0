//! Bulk actions: cancel (`jobs:cancel`) or retry (`jobs:retry`) the jobs selected on the jobs
//! page, or every job matching its filter. A confirmation page counts what the action would
//! touch first; confirmed, it goes on in the background, each job through the same path (and
//! audit events, as the signed-in key) as the single action.

use askama::Template;
use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};

use super::{
    jobs::JobsQuery,
    pages::{Chrome, page, problem_page},
    session::Session,
};
use crate::{
    auth::Authenticated,
    http::{
        AppState,
        auth::Permissions,
        jobs::{load_visible, parse_job_id},
        problem::ApiError,
    },
    ids::JobId,
    model::JobStatus,
    store::{JobFilter, JobRecord, ListCursor},
};

/// Jobs read per page while counting or acting on a filter.
const PAGE: i64 = 500;
/// Counting stops here (the page then says "or more").
const COUNT_CAP: usize = 50_000;
/// The most jobs one selection may name (a page shows at most 500).
const MAX_SELECTED: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    Retry,
}

impl Action {
    fn parse(raw: &str) -> Result<Self, ApiError> {
        match raw {
            "cancel" => Ok(Action::Cancel),
            "retry" => Ok(Action::Retry),
            _ => Err(ApiError::invalid("action", "must be cancel or retry")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Action::Cancel => "jobs:cancel",
            Action::Retry => "jobs:retry",
        }
    }

    /// The statuses the action applies to.
    fn applies_to(self) -> &'static [JobStatus] {
        match self {
            Action::Cancel => &[
                JobStatus::Scheduled,
                JobStatus::Queued,
                JobStatus::Running,
                JobStatus::AwaitingCallback,
            ],
            Action::Retry => &[JobStatus::Failed, JobStatus::Cancelled, JobStatus::TimedOut],
        }
    }
}

/// Which jobs: the ones ticked, or every one matching the filter.
#[derive(Debug, Clone)]
enum Target {
    Selected(Vec<JobId>),
    Matching(JobsQuery),
}

/// A bulk request, from the confirmation page's query or the confirmed form. Parsed by hand:
/// a selection repeats `id`, which `serde_urlencoded` cannot read into a list.
#[derive(Debug, Clone)]
struct BulkRequest {
    action: Action,
    target: Target,
    csrf: String,
}

impl BulkRequest {
    fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let mut action = None;
        let mut ids = Vec::new();
        let mut query = JobsQuery::default();
        let mut csrf = String::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            let value = value.into_owned();
            match name.as_ref() {
                "action" => action = Some(Action::parse(&value)?),
                "id" => {
                    if ids.len() == MAX_SELECTED {
                        return Err(ApiError::invalid(
                            "id",
                            format!("at most {MAX_SELECTED} jobs at once"),
                        ));
                    }
                    ids.push(parse_job_id(&value)?);
                }
                "intent" => query.intent = value,
                "status" => query.status = value,
                "mode" => query.mode = value,
                "key" => query.key = value,
                "since" => query.since = value,
                "until" => query.until = value,
                "csrf" => csrf = value,
                _ => {}
            }
        }
        let action = action.ok_or_else(|| ApiError::invalid("action", "is required"))?;
        let target = if ids.is_empty() {
            if query.filter_pairs().is_empty() {
                return Err(ApiError::invalid(
                    "id",
                    "select jobs, or set a filter to act on every job matching it",
                ));
            }
            Target::Matching(query)
        } else {
            Target::Selected(ids)
        };
        Ok(Self {
            action,
            target,
            csrf,
        })
    }

    /// The jobs matching the filter that `auth` may see and the action applies to.
    fn store_filter(&self, auth: &Authenticated, query: &JobsQuery) -> Result<JobFilter, ApiError> {
        let params = query.list_params()?;
        let mut filter = crate::http::jobs::filter_for(auth, &params)?;
        let applies = self.action.applies_to();
        filter.statuses = Some(match filter.statuses.take() {
            None => applies.to_vec(),
            Some(asked) => asked.into_iter().filter(|s| applies.contains(s)).collect(),
        });
        filter.cursor = None;
        filter.limit = PAGE;
        Ok(filter)
    }

    /// Hidden fields that carry the request to the confirming form.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("action", self.action.name().to_owned())];
        match &self.target {
            Target::Selected(ids) => fields.extend(ids.iter().map(|id| ("id", id.to_string()))),
            Target::Matching(query) => fields.extend(query.filter_pairs()),
        }
        fields
    }
}

/// Moves `filter` past a full page; false after the last one.
fn advance(filter: &mut JobFilter, rows: &[JobRecord]) -> bool {
    match rows.last() {
        Some(last) if rows.len() as i64 == PAGE => {
            filter.cursor = Some(ListCursor { id: last.id.uuid() });
            true
        }
        _ => false,
    }
}

/// How many jobs the action would touch (capped for filters).
async fn count(state: &AppState, session: &Session, req: &BulkRequest) -> Result<usize, ApiError> {
    let applies = req.action.applies_to();
    match &req.target {
        Target::Selected(ids) => {
            let mut n = 0;
            for id in ids {
                match load_visible(state, &session.auth, *id).await {
                    Ok(job) if applies.contains(&job.status) => n += 1,
                    Ok(_) | Err(ApiError::JobNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        }
        Target::Matching(query) => {
            let mut filter = req.store_filter(&session.auth, query)?;
            if filter.statuses.as_ref().is_some_and(Vec::is_empty) {
                return Ok(0);
            }
            let mut n = 0;
            loop {
                let rows = state.store.list_jobs(&filter).await?;
                n += rows.len();
                if n >= COUNT_CAP || !advance(&mut filter, &rows) {
                    return Ok(n);
                }
            }
        }
    }
}

#[derive(Template)]
#[template(path = "ui/bulk.html")]
struct Confirm {
    chrome: Chrome,
    action: &'static str,
    /// What the jobs are, in words.
    what: String,
    count: usize,
    capped: bool,
    fields: Vec<(&'static str, String)>,
}

fn describe(req: &BulkRequest) -> String {
    let statuses = match req.action {
        Action::Cancel => "unfinished (scheduled, queued, running or awaiting a callback)",
        Action::Retry => "failed, timed-out or cancelled",
    };
    match &req.target {
        Target::Selected(ids) => format!("of the {} selected jobs are {statuses}", ids.len()),
        Target::Matching(query) => {
            let filter: Vec<String> = query
                .filter_pairs()
                .into_iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect();
            format!("{statuses} jobs match {}", filter.join(", "))
        }
    }
}

pub async fn confirm(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let req = match BulkRequest::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(req) => req,
        Err(e) => return problem_page(e),
    };
    if let Err(e) = session.auth.require(req.action.scope()) {
        return problem_page(e);
    }
    match count(&state, &session, &req).await {
        Ok(count) => page(Confirm {
            chrome: Chrome::of(&session, "jobs"),
            action: req.action.name(),
            what: describe(&req),
            count,
            capped: count >= COUNT_CAP,
            fields: req.fields(),
        }),
        Err(e) => problem_page(e),
    }
}

/// Applies the action to one job, as the single-job action would; false when it did not
/// apply (finished or started meanwhile, or an intent the key may not run).
async fn act(state: &AppState, auth: &Authenticated, action: Action, job: &JobRecord) -> bool {
    let done = match action {
        Action::Cancel => state
            .intake
            .cancel(job.id, &auth.principal)
            .await
            .map(|o| !matches!(o, crate::store::CancelOutcome::AlreadyFinished(_))),
        Action::Retry => {
            if auth.require_intent(&job.intent).is_err() {
                return false;
            }
            state
                .intake
                .retry(job.id, &auth.principal)
                .await
                .map(|o| o == crate::store::RetryOutcome::Retried)
        }
    };
    done.unwrap_or_else(|e| {
        tracing::warn!(job_id = %job.id, error = %e, action = action.name(), "bulk action: not applied");
        false
    })
}

async fn run_in_background(state: AppState, auth: Authenticated, req: BulkRequest) {
    let (mut applied, mut skipped) = (0u64, 0u64);
    let mut tally = |done: bool| {
        if done { applied += 1 } else { skipped += 1 }
    };
    match &req.target {
        Target::Selected(ids) => {
            for id in ids {
                if let Ok(job) = load_visible(&state, &auth, *id).await {
                    tally(act(&state, &auth, req.action, &job).await);
                }
            }
        }
        Target::Matching(query) => {
            let Ok(mut filter) = req.store_filter(&auth, query) else {
                return;
            };
            // Jobs acted on leave the filter's statuses, so each page starts after the last
            // job seen rather than at the top again.
            loop {
                let rows = match state.store.list_jobs(&filter).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, applied, "bulk action stopped; run it again");
                        return;
                    }
                };
                for job in &rows {
                    tally(act(&state, &auth, req.action, job).await);
                }
                if !advance(&mut filter, &rows) {
                    break;
                }
            }
        }
    }
    tracing::info!(
        action = req.action.name(),
        applied,
        skipped,
        by = %auth.principal.name,
        "bulk action done"
    );
}

pub async fn run(State(state): State<AppState>, session: Session, body: Bytes) -> Response {
    let req = match BulkRequest::parse(&body) {
        Ok(req) => req,
        Err(e) => return problem_page(e),
    };
    if let Some(refused) = session.csrf_refusal(&req.csrf) {
        return refused;
    }
    if let Err(e) = session.auth.require(req.action.scope()) {
        return problem_page(e);
    }
    if let Target::Matching(query) = &req.target {
        match req.store_filter(&session.auth, query) {
            Ok(f) if f.statuses.as_ref().is_some_and(Vec::is_empty) => {
                return (StatusCode::BAD_REQUEST, "No status of that filter applies.")
                    .into_response();
            }
            Ok(_) => {}
            Err(e) => return problem_page(e),
        }
    }
    // Back to the jobs the action touched, in their new state.
    let mut back: Vec<(&str, String)> = match &req.target {
        Target::Matching(query) => query
            .filter_pairs()
            .into_iter()
            .filter(|(name, _)| *name != "status")
            .collect(),
        Target::Selected(_) => Vec::new(),
    };
    back.push((
        "status",
        match req.action {
            Action::Cancel => "cancelled".into(),
            Action::Retry => String::new(),
        },
    ));
    back.retain(|(_, v)| !v.is_empty());
    tokio::spawn(run_in_background(state.clone(), session.auth.clone(), req));
    let query = serde_urlencoded::to_string(back).unwrap_or_default();
    Redirect::to(&session.at(&format!("/ui/jobs?{query}"))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "job_0192f0c0000070008000000000000001";
    const B: &str = "job_0192f0c0000070008000000000000002";

    #[test]
    fn a_selection_repeats_id_and_a_filter_needs_a_field() {
        let req =
            BulkRequest::parse(format!("action=retry&id={A}&id={B}&csrf=t").as_bytes()).unwrap();
        assert_eq!(req.action, Action::Retry);
        assert_eq!(req.csrf, "t");
        let Target::Selected(ids) = &req.target else {
            panic!("a selection")
        };
        assert_eq!(ids.len(), 2);
        assert_eq!(req.fields().len(), 3, "the action and both ids are carried");

        let req = BulkRequest::parse(b"action=cancel&intent=memory.write&status=").unwrap();
        let Target::Matching(q) = &req.target else {
            panic!("a filter")
        };
        assert_eq!(q.intent, "memory.write");

        for bad in [
            "intent=x".to_owned(),
            "action=delete&intent=x".to_owned(),
            "action=cancel".to_owned(),
            "action=cancel&id=job_nope".to_owned(),
        ] {
            assert!(BulkRequest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let too_many: String = (0..=MAX_SELECTED).map(|_| format!("&id={A}")).collect();
        assert!(BulkRequest::parse(format!("action=cancel{too_many}").as_bytes()).is_err());
    }
}
