//! Tools that exist only in tests: they fail on cue and record every run.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use orchestrator::{
    ids::JobId,
    tools::{Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec},
};
use serde_json::{Value, json};

fn spec(name: &str, max_attempts: i32, timeout: Duration) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("test tool {name}"),
        input_schema: json!({"type": "object"}),
        effect: Effect::Read,
        timeout,
        max_attempts,
        priority: 0,
        public: false,
        destructive: false,
        open_world: false,
        output_schema: None,
    }
}

/// Fails the first `failures` calls (transiently or not), then succeeds.
pub struct Flaky {
    spec: ToolSpec,
    failures_left: AtomicI32,
    retryable: bool,
    pub calls: AtomicI32,
}

impl Flaky {
    pub fn new(name: &str, failures: i32, retryable: bool, max_attempts: i32) -> Arc<Self> {
        Arc::new(Self {
            spec: spec(name, max_attempts, Duration::from_secs(5)),
            failures_left: AtomicI32::new(failures),
            retryable,
            calls: AtomicI32::new(0),
        })
    }
}

impl Tool for Flaky {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, _inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
                let msg = format!("planned failure on attempt {}", ctx.attempt);
                return Err(if self.retryable {
                    ToolError::transient("flaky", msg)
                } else {
                    ToolError::permanent("broken", msg)
                });
            }
            Ok(json!({"attempt": ctx.attempt}).into())
        }
        .boxed()
    }
}

/// Records which jobs ran (and how often), optionally sleeping `ms` from the inputs.
#[derive(Default)]
pub struct Recorder {
    pub runs: Mutex<HashMap<JobId, u32>>,
    /// When a run was told to stop.
    pub cancelled: Mutex<HashMap<JobId, std::time::Instant>>,
    /// Runs going on now, and the most seen at once.
    in_flight: AtomicI32,
    pub most_at_once: AtomicI32,
}

impl Recorder {
    pub fn runs_of(&self, id: JobId) -> u32 {
        self.runs.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    pub fn max_runs(&self) -> u32 {
        self.runs
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

pub struct Recording {
    spec: ToolSpec,
    pub recorder: Arc<Recorder>,
}

impl Recording {
    pub fn new(recorder: Arc<Recorder>) -> Arc<Self> {
        Arc::new(Self {
            spec: spec("test.record", 3, Duration::from_secs(30)),
            recorder,
        })
    }
}

impl Tool for Recording {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            *self.recorder.runs.lock().unwrap().entry(ctx.job_id).or_default() += 1;
            let now = self.recorder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.recorder.most_at_once.fetch_max(now, Ordering::SeqCst);
            // Records the stop however it comes: cancellation seen, or the run dropped.
            let mut guard = StopGuard {
                recorder: &self.recorder,
                job: ctx.job_id,
                finished: false,
            };
            let ms = inputs.get("ms").and_then(Value::as_u64).unwrap_or(0);
            if ms > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = ctx.cancel.cancelled() => return Err(ToolError::permanent("cancelled", "stopped")),
                }
            }
            guard.finished = true;
            Ok(json!({"job_id": ctx.job_id, "attempt": ctx.attempt}).into())
        }
        .boxed()
    }
}

struct StopGuard<'a> {
    recorder: &'a Recorder,
    job: JobId,
    finished: bool,
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.recorder
                .cancelled
                .lock()
                .unwrap()
                .insert(self.job, std::time::Instant::now());
        }
    }
}

/// Ignores cancellation and never finishes on its own (a hung tool).
pub struct Hang {
    spec: ToolSpec,
}

impl Hang {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            spec: spec("test.hang", 1, timeout),
        })
    }
}

impl Tool for Hang {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, _inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        futures::future::pending().boxed()
    }
}

/// Returns what PostgreSQL cannot store as is: NUL characters in its result (as a remote
/// command's output can hold), or in its error message when `fail` is set in the inputs.
pub struct NulOutput {
    spec: ToolSpec,
}

impl NulOutput {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            spec: spec("test.nul", 1, Duration::from_secs(5)),
        })
    }
}

impl Tool for NulOutput {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            if inputs["fail"] == true {
                return Err(ToolError::permanent("broke\0n", "bad\0output"));
            }
            Ok(json!({"out": "a\0b", "k\0": ["x\0"]}).into())
        }
        .boxed()
    }
}

/// Runs until the test opens the gate, then answers with its inputs.
pub struct Gate {
    spec: ToolSpec,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            spec: spec(name, 1, Duration::from_secs(60)),
            open: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Tool for Gate {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            Ok(json!({ "echo": inputs }).into())
        }
        .boxed()
    }
}
