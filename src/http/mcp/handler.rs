//! The MCP server's request handler: `tools/list` and `tools/call` over the live catalog, our
//! `job_status`/`job_cancel` tools, the Tasks extension (a job is a task), and
//! `notifications/tools/list_changed` (on the session stream, or a 2026-07-28
//! `subscriptions/listen`). Every call goes through the same intake as `POST /orchestrate`:
//! scopes, schema, idempotency, audit, limits.

use std::{borrow::Cow, sync::Arc, time::Duration};

use axum::http::request::Parts;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
        CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Implementation,
        ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
        ServerCapabilities, ServerConfig, SubscriptionFilter, Task, TaskPayload,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    answers::{self, AnswerShape},
    listing::{JOB_CANCEL, JOB_STATUS, Listings},
};
use crate::{
    auth::Authenticated,
    http::{
        AppState,
        auth::Permissions,
        jobs::{load_visible, parse_job_id},
        orchestrate::check_inputs,
        problem::ApiError,
    },
    ids::JobId,
    intake::{Submission, Submitted, WaitOutcome},
    model::{FinishedJob, JobStatus, Mode, job_error},
    store::{CancelOutcome, JobRecord},
};

/// The protocol revisions we serve (the ones tested with real clients).
pub const PROTOCOLS: [ProtocolVersion; 3] = [
    ProtocolVersion::V_2026_07_28,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2025_06_18,
];

/// A client's own idempotency key for a call, in the request's `_meta`.
const META_IDEMPOTENCY_KEY: &str = "orchestrator/idempotency_key";
/// What we suggest a Tasks client waits between `tasks/get`.
const TASK_POLL: Duration = Duration::from_secs(2);

/// What every session's handler shares.
pub struct Shared {
    pub state: AppState,
    pub listings: Listings,
    pub shape: AnswerShape,
    pub call_wait: Duration,
    /// How often a waiting call reports progress (when the client sent a progress token).
    pub progress_every: Duration,
}

/// One per session (or per request, for the stateless revision).
pub struct Handler {
    shared: Arc<Shared>,
    /// Cancelled when the session ends (its handler is dropped): stops its change watcher.
    ended: CancellationToken,
    /// Catalog watchers taken when a `subscriptions/listen` is accepted, before rmcp
    /// acknowledges it: a change right after the acknowledgement is not missed by `listen`,
    /// which runs only then.
    accepted_listens: std::sync::Mutex<std::collections::VecDeque<watch::Receiver<u64>>>,
}

impl Handler {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ended: CancellationToken::new(),
            accepted_listens: Default::default(),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// The principal the HTTP layer authenticated for this request.
fn caller(extensions: &rmcp::model::Extensions) -> Result<Authenticated, McpError> {
    extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Authenticated>())
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an MCP request arrived without an authenticated principal");
            McpError::internal_error("internal error", None)
        })
}

/// Refusals the model can read (a JSON-RPC error would be shown to it as an opaque failure).
fn as_tool_error(e: ApiError) -> CallToolResult {
    let problem = e.problem();
    answers::refused(
        e.code(),
        &problem.detail,
        problem.errors.as_deref().unwrap_or_default(),
    )
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let wait = self.shared.call_wait.as_secs();
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(
            Implementation::new("orchestrator", env!("CARGO_PKG_VERSION"))
                .with_title("Orchestrator"),
        )
        .with_instructions(format!(
            "Each tool runs one intent of this orchestrator (memory, SSH, workflows, other MCP \
             servers' tools) as a job. A call waits up to {wait} s for its job; a longer job \
             answers with a job_id: call job_status with it (wait_ms lets you wait) until the \
             status is final. Write tools are idempotent: the same call again answers with \
             the first job's result."
        ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&PROTOCOLS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let auth = caller(&ctx.extensions)?;
        // Lazy MCP servers publish their tools once started; a client listing tools is
        // about to use them.
        self.shared.state.registry.start_lazy_sources().await;
        let tools = self.shared.listings.current().visible(&auth);
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let auth = caller(&ctx.extensions)?;
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let outcome = match request.name.as_ref() {
            JOB_STATUS => self.job_status(&auth, &args).await.map(Into::into),
            JOB_CANCEL => self.job_cancel(&auth, &args).await.map(Into::into),
            name => {
                let listing = self.shared.listings.current();
                let Some(listed) = listing.intent(name, &auth) else {
                    metrics::counter!("orchestrator_mcp_calls_total", "outcome" => "unknown_tool")
                        .increment(1);
                    return Err(McpError::invalid_params(
                        format!("unknown tool: {name}"),
                        None,
                    ));
                };
                let intent = listed.intent.clone();
                self.run_intent(&auth, intent, args, &request, &ctx).await
            }
        };
        let response = outcome.unwrap_or_else(|e| as_tool_error(e).into());
        let label = match &response {
            CallToolResponse::Task(_) => "task",
            CallToolResponse::Complete(r) if r.is_error == Some(true) => "error",
            _ => "complete",
        };
        metrics::counter!("orchestrator_mcp_calls_total", "outcome" => label).increment(1);
        Ok(response)
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        // A session (revisions before 2026-07-28): tell it when the tools change, until it
        // ends.
        let mut changes = self.shared.state.registry.changes();
        changes.mark_unchanged();
        let peer = ctx.peer.clone();
        let ended = self.ended.clone();
        let stopping = self.shared.state.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                    _ = ended.cancelled() => return,
                    _ = stopping.cancelled() => return,
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut changes = self.shared.state.registry.changes();
        changes.mark_unchanged();
        self.accepted_listens
            .lock()
            .expect("listens lock poisoned")
            .push_back(changes);
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), McpError> {
        let accepted = self
            .accepted_listens
            .lock()
            .expect("listens lock poisoned")
            .pop_front();
        let mut changes = accepted.unwrap_or_else(|| {
            let mut changes = self.shared.state.registry.changes();
            changes.mark_unchanged();
            changes
        });
        let stopping = self.shared.state.shutdown.clone();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err()
                        || subscription.sink().notify_tool_list_changed().await.is_err()
                    {
                        return Ok(());
                    }
                }
                _ = subscription.cancelled() => return Ok(()),
                // Graceful teardown: the client reconnects to another instance.
                _ = stopping.cancelled() => return Ok(()),
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let auth = caller(&ctx.extensions)?;
        let job = self.visible_task(&auth, &request.task_id).await?;
        Ok(GetTaskResult::new(self.task_of(&job)))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let auth = caller(&ctx.extensions)?;
        let job = self.visible_task(&auth, &request.task_id).await?;
        if !may_cancel(&auth, &job) {
            return Err(McpError::invalid_params(
                "cancelling another caller's job needs the jobs:cancel scope",
                None,
            ));
        }
        self.shared
            .state
            .intake
            .cancel(job.id, &auth.principal)
            .await
            .map_err(|e| internal(ApiError::from(e)))?;
        Ok(())
    }
}

fn internal(e: ApiError) -> McpError {
    McpError::internal_error(e.to_string(), None)
}

/// Owners may cancel their own jobs; anyone else needs `jobs:cancel`.
fn may_cancel(auth: &Authenticated, job: &JobRecord) -> bool {
    auth.require("jobs:cancel").is_ok()
        || (job.api_key_id.is_some() && job.api_key_id == auth.principal.api_key_id)
}

fn finished_of(job: &JobRecord) -> Option<FinishedJob> {
    job.status.is_final().then(|| FinishedJob {
        id: job.id,
        intent: job.intent.clone(),
        mode: job.mode,
        status: job.status,
        result: job.result.clone(),
        error: if job.status == JobStatus::Succeeded {
            None
        } else {
            job_error(job.error_code.clone(), job.error_message.clone())
        },
        callback_url: job.callback_url.clone(),
        duration_ms: job.duration_ms,
        finished_at: job.finished_at,
    })
}

impl Handler {
    async fn run_intent(
        &self,
        auth: &Authenticated,
        intent: Arc<crate::catalog::Intent>,
        inputs: Value,
        request: &CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ApiError> {
        let state = &self.shared.state;
        check_inputs(state, intent.name(), &intent, &inputs, &auth.principal).await?;
        let idempotency_key = request
            .meta
            .as_ref()
            .and_then(|m| m.get(META_IDEMPOTENCY_KEY))
            .map(|v| {
                v.as_str()
                    .filter(|k| {
                        (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x20..0x7f).contains(&b))
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "_meta.orchestrator/idempotency_key",
                            "1 to 255 printable ASCII characters",
                        )
                    })
            })
            .transpose()?;
        crate::http::rate_limit::admit(state, &auth.principal, intent.name()).await?;
        let intent_name = intent.name().to_owned();
        let submitted = state
            .intake
            .submit(Submission {
                intent,
                requested_mode: Mode::Auto,
                inputs,
                callback_url: None,
                idempotency_key,
                max_attempts: None,
                principal: auth.principal.clone(),
                wait: true,
                run_at: None,
                when: None,
                schedule_id: None,
            })
            .await?;
        let (job_id, waiter) = match submitted {
            Submitted::Created { job_id, waiter } => (job_id, waiter),
            Submitted::Replay { job_id, waiter } => {
                if let Some(done) = state.intake.finished(job_id).await? {
                    return Ok(answers::finished(&done, &self.shared.shape).into());
                }
                (job_id, waiter)
            }
        };
        let Some(mut waiter) = waiter else {
            return self.still_running(auth, job_id, &intent_name, ctx).await;
        };
        let progress = ctx.meta.get_progress_token();
        let started = tokio::time::Instant::now();
        let deadline = started + self.shared.call_wait;
        let every = self.shared.progress_every;
        let mut tick = tokio::time::interval_at(started + every, every);
        loop {
            tokio::select! {
                done = waiter.finished() => match done {
                    Some(job) => return Ok(answers::finished(&job, &self.shared.shape).into()),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                // The client gave up on this call; the job goes on.
                _ = ctx.ct.cancelled() => break,
                _ = tick.tick(), if progress.is_some() => {
                    let status = state.store.get_job(job_id).await.ok().flatten();
                    let message = status.map_or_else(
                        || "waiting".to_owned(),
                        |j| format!(
                            "job {job_id} {} (attempt {} of {})",
                            j.status.as_str().replace('_', " "),
                            j.attempts.max(1),
                            j.max_attempts
                        ),
                    );
                    let token = progress.clone().expect("checked by the guard");
                    let _ = ctx
                        .peer
                        .notify_progress(
                            ProgressNotificationParam::new(token, started.elapsed().as_secs_f64())
                                .with_message(message),
                        )
                        .await;
                }
            }
        }
        self.still_running(auth, job_id, &intent_name, ctx).await
    }

    /// The answer for a job that outlived the call's wait: a task for clients that speak the
    /// Tasks extension, the job's handle for the others.
    async fn still_running(
        &self,
        auth: &Authenticated,
        job_id: JobId,
        intent: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ApiError> {
        let job = load_visible(&self.shared.state, auth, job_id).await?;
        if let Some(done) = finished_of(&job) {
            return Ok(answers::finished(&done, &self.shared.shape).into());
        }
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        if tasks {
            return Ok(CreateTaskResult::new(task_base(&job)).into());
        }
        Ok(answers::pending(job_id, intent, job.status, &self.shared.shape).into())
    }

    async fn job_status(
        &self,
        auth: &Authenticated,
        args: &Value,
    ) -> Result<CallToolResult, ApiError> {
        let id = job_id_argument(args)?;
        let wait = match args.get("wait_ms") {
            None | Some(Value::Null) => Duration::ZERO,
            Some(v) => Duration::from_millis(v.as_u64().ok_or_else(|| {
                ApiError::invalid("wait_ms", "a whole number of milliseconds, 0 or more")
            })?),
        }
        .min(self.shared.call_wait);
        let state = &self.shared.state;
        // Registered before the read: the job may finish in between.
        let mut waiter = (!wait.is_zero()).then(|| state.intake.register_waiter(id));
        let mut job = load_visible(state, auth, id).await?;
        if !job.status.is_final()
            && let Some(waiter) = waiter.as_mut()
            && let WaitOutcome::Finished(_) = state.intake.wait(waiter, wait).await
        {
            job = load_visible(state, auth, id).await?;
        }
        Ok(self.job_answer(&job))
    }

    /// A job's outcome, or its handle while it runs.
    fn job_answer(&self, job: &JobRecord) -> CallToolResult {
        match finished_of(job) {
            Some(done) => answers::finished(&done, &self.shared.shape),
            None => answers::pending(job.id, &job.intent, job.status, &self.shared.shape),
        }
    }

    async fn job_cancel(
        &self,
        auth: &Authenticated,
        args: &Value,
    ) -> Result<CallToolResult, ApiError> {
        let id = job_id_argument(args)?;
        let state = &self.shared.state;
        let job = load_visible(state, auth, id).await?;
        if !may_cancel(auth, &job) {
            return Err(ApiError::Forbidden {
                missing_scope: "jobs:cancel".into(),
            });
        }
        let mut waiter = state.intake.register_waiter(id);
        match state.intake.cancel(id, &auth.principal).await? {
            CancelOutcome::NotFound => Err(ApiError::JobNotFound {
                job_id: id.to_string(),
            }),
            CancelOutcome::AlreadyFinished(status) => Err(ApiError::JobFinished {
                job_id: id.to_string(),
                status,
            }),
            CancelOutcome::Cancelled | CancelOutcome::Requested { .. } => {
                let _ = state.intake.wait(&mut waiter, Duration::from_secs(5)).await;
                Ok(self.job_answer(&load_visible(state, auth, id).await?))
            }
        }
    }

    async fn visible_task(
        &self,
        auth: &Authenticated,
        task_id: &str,
    ) -> Result<JobRecord, McpError> {
        let not_found = || McpError::invalid_params(format!("no task {task_id}"), None);
        let id: JobId = task_id.parse().map_err(|_| not_found())?;
        match load_visible(&self.shared.state, auth, id).await {
            Ok(job) => Ok(job),
            Err(ApiError::JobNotFound { .. }) => Err(not_found()),
            Err(e) => Err(internal(e)),
        }
    }

    fn task_of(&self, job: &JobRecord) -> DetailedTask {
        let payload = match finished_of(job) {
            Some(done) if done.status == JobStatus::Cancelled => TaskPayload::Cancelled,
            Some(done) => {
                let result = answers::finished(&done, &self.shared.shape);
                match serde_json::to_value(result) {
                    Ok(Value::Object(result)) => TaskPayload::Completed { result },
                    _ => TaskPayload::Working,
                }
            }
            None => TaskPayload::Working,
        };
        DetailedTask::new(task_base(job), payload)
    }
}

fn task_base(job: &JobRecord) -> Task {
    let updated = job.finished_at.or(job.started_at).unwrap_or(job.created_at);
    Task::new(
        job.id.to_string(),
        rmcp::model::TaskStatus::Working,
        job.created_at.to_rfc3339(),
        updated.to_rfc3339(),
    )
    .with_status_message(job.status.as_str())
    .with_poll_interval_ms(TASK_POLL.as_millis() as u64)
}

fn job_id_argument(args: &Value) -> Result<JobId, ApiError> {
    let raw = args
        .get("job_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("job_id", "is required (a string)"))?;
    parse_job_id(raw)
}
