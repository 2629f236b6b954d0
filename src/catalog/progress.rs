//! How a running tool says how far it got — an MCP server's progress notifications, a remote
//! command's output as it comes — as `progress` events in the job's history, which live
//! streams carry. Writes are coalesced, at most one round every [`EVERY`]: the latest progress
//! report wins, output accumulates (up to [`MAX_PENDING_OUTPUT`] per stream between writes).
//! What is pending is written before the attempt's outcome. Attempts that report nothing cost
//! nothing: the writer starts with the first report.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Map, Value, json};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{ids::JobId, model::AuditKind, redact::Redactor, store::Store};

/// The most often a job's progress is written.
pub const EVERY: Duration = Duration::from_millis(250);
/// Output kept per stream between two writes; the rest is counted, not kept.
pub const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// How long the end of an attempt waits for what is pending to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Pending {
    progress: Option<Value>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    skipped_bytes: u64,
}

struct Recording {
    store: Store,
    redactor: Arc<Redactor>,
    job: JobId,
    attempt: i32,
    pending: Mutex<Pending>,
    wake: Notify,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The attempt is over: write what is left and stop.
    done: CancellationToken,
}

impl Recording {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("progress lock poisoned")
    }
}

/// A tool's handle: cheap to clone; reports go nowhere when the attempt does not record them.
#[derive(Clone, Default)]
pub struct Progress {
    recording: Option<Arc<Recording>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("recorded", &self.is_recorded())
            .finish()
    }
}

impl Progress {
    /// Reports how far the work got (`progress`, `total`, `message`… as the engine has them);
    /// a later report replaces one not yet written.
    pub fn report(&self, detail: Value) {
        self.add(|p| p.progress = Some(detail));
    }

    /// Adds a chunk of output.
    pub fn output(&self, stream: OutputStream, data: &[u8]) {
        self.add(|p| {
            let buf = match stream {
                OutputStream::Stdout => &mut p.stdout,
                OutputStream::Stderr => &mut p.stderr,
            };
            let room = MAX_PENDING_OUTPUT.saturating_sub(buf.len());
            let kept = data.len().min(room);
            buf.extend_from_slice(&data[..kept]);
            p.skipped_bytes += (data.len() - kept) as u64;
        });
    }

    fn add(&self, change: impl FnOnce(&mut Pending)) {
        let Some(r) = &self.recording else {
            return;
        };
        if r.done.is_cancelled() {
            return;
        }
        change(&mut r.pending());
        let mut writer = r.writer.lock().expect("progress lock poisoned");
        if writer.is_none() {
            *writer = Some(tokio::spawn(write(r.clone())));
        }
        r.wake.notify_one();
    }

    /// Whether reports go anywhere.
    pub fn is_recorded(&self) -> bool {
        self.recording.is_some()
    }

    /// Progress of `job`'s `attempt`, written to its history (our credentials cut out).
    pub fn recording(
        store: Store,
        redactor: Arc<Redactor>,
        job: JobId,
        attempt: i32,
    ) -> (Self, ProgressWriter) {
        let recording = Arc::new(Recording {
            store,
            redactor,
            job,
            attempt,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            writer: Mutex::new(None),
            done: CancellationToken::new(),
        });
        (
            Self {
                recording: Some(recording.clone()),
            },
            ProgressWriter { recording },
        )
    }
}

async fn write(r: Arc<Recording>) {
    loop {
        let over = tokio::select! {
            _ = r.wake.notified() => false,
            _ = r.done.cancelled() => true,
        };
        for mut detail in take(&r, over || r.done.is_cancelled()) {
            // What engines report comes from elsewhere: PostgreSQL cannot store NULs, and a
            // remote command may print our own credentials.
            crate::nul::strip_value(&mut detail);
            r.redactor.value(&mut detail);
            if let Err(e) = r
                .store
                .append_job_event(r.job, r.attempt, AuditKind::Progress, &detail)
                .await
            {
                tracing::warn!(job = %r.job, error = %e, "progress not recorded");
            }
        }
        if over {
            return;
        }
        // The pause between writes ends early once the attempt is over.
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = r.done.cancelled() => {}
        }
    }
}

/// What is pending, as event details: the latest progress report, then the output.
fn take(r: &Recording, last: bool) -> Vec<Value> {
    let mut guard = r.pending();
    let p = &mut *guard;
    let mut out = Vec::new();
    if let Some(progress) = p.progress.take() {
        out.push(progress);
    }
    let mut output = Map::new();
    for (name, buf) in [("stdout", &mut p.stdout), ("stderr", &mut p.stderr)] {
        let text = take_text(buf, last);
        if !text.is_empty() {
            output.insert(name.into(), json!(text));
        }
    }
    if p.skipped_bytes > 0 {
        output.insert("skipped_bytes".into(), json!(p.skipped_bytes));
        p.skipped_bytes = 0;
    }
    if !output.is_empty() {
        out.push(json!({ "output": output }));
    }
    out
}

/// The text in `buf`, leaving a character cut in two by a chunk boundary for the next write
/// (unless this is the last); invalid bytes become U+FFFD.
fn take_text(buf: &mut Vec<u8>, last: bool) -> String {
    let complete = match std::str::from_utf8(buf) {
        Err(e) if e.error_len().is_none() && !last => e.valid_up_to(),
        _ => buf.len(),
    };
    let rest = buf.split_off(complete);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

/// Ends an attempt's progress recording.
pub struct ProgressWriter {
    recording: Arc<Recording>,
}

impl ProgressWriter {
    /// Writes what is pending and waits (briefly) for it, so that it comes before the
    /// attempt's outcome in the history. Later reports are ignored.
    pub async fn finish(self) {
        let r = &self.recording;
        r.done.cancel();
        let writer = r.writer.lock().expect("progress lock poisoned").take();
        if let Some(mut task) = writer
            && tokio::time::timeout(FLUSH_WAIT, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_by_a_chunk_boundary_waits_for_its_rest() {
        let mut buf = "é".as_bytes()[..1].to_vec();
        buf.splice(0..0, b"ab".iter().copied());
        assert_eq!(take_text(&mut buf, false), "ab");
        assert_eq!(buf.len(), 1);
        buf.push("é".as_bytes()[1]);
        assert_eq!(take_text(&mut buf, false), "é");
        assert!(buf.is_empty());
        let mut cut = vec![b'x', 0xC3];
        assert_eq!(
            take_text(&mut cut, true),
            "x\u{FFFD}",
            "the last write takes all"
        );
        let mut invalid = vec![0xFF, b'y'];
        assert_eq!(take_text(&mut invalid, false), "\u{FFFD}y");
    }
}
