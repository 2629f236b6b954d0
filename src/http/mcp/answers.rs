//! What a tool call answers: a finished job as a result (`structuredContent` holds the job and
//! its result, the text block the same as JSON, `isError` when the job did not succeed), a job
//! still running as its handle, and refusals as `isError` results the model can read and act
//! on. Every answer fits `mcp.max_result_chars`: a larger result is cut to a preview with the
//! job's URL.

use rmcp::model::{CallToolResult, ContentBlock, MetaObject};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    http::bounded::{bound, json_chars},
    ids::JobId,
    model::{FieldError, FinishedJob, JobError, JobStatus},
};

/// `_meta` key of a call's answer: the job it ran as.
pub const META_JOB_ID: &str = "orchestrator/job_id";

/// Where answers point and how large they may be.
#[derive(Debug, Clone)]
pub struct AnswerShape {
    pub public_url: String,
    pub max_chars: usize,
}

impl AnswerShape {
    fn job_url(&self, job: JobId) -> String {
        format!("{}/jobs/{job}", self.public_url.trim_end_matches('/'))
    }
}

/// `structuredContent` of every job answer.
#[derive(Debug, Serialize)]
struct Envelope {
    job_id: JobId,
    /// `success`, `error`, `dry_run`; `accepted` while the job runs.
    status: &'static str,
    job_status: JobStatus,
    intent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
    status_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// A finished job.
pub fn finished(job: &FinishedJob, shape: &AnswerShape) -> CallToolResult {
    let url = shape.job_url(job.id);
    let mut envelope = Envelope {
        job_id: job.id,
        status: job.client_status(),
        job_status: job.status,
        intent: job.intent.clone(),
        result: None,
        error: job.error.clone(),
        duration_ms: job.duration_ms,
        status_url: url.clone(),
        message: None,
    };
    // Half the room each: the text block carries the same JSON as `structuredContent`.
    let rest = json_chars(&envelope);
    envelope.result = job.result.clone();
    bound(&mut envelope.result, rest, shape.max_chars / 2, &url);
    let failed = job.status != JobStatus::Succeeded;
    let text = match (&envelope.error, failed) {
        (Some(e), true) => format!("{}: {}", e.code, e.message),
        (None, true) => format!("the job ended {}", job.status.as_str()),
        _ => String::new(),
    };
    answer(&envelope, failed, &text, job.id)
}

/// A job still running after the call's wait.
pub fn pending(
    job_id: JobId,
    intent: &str,
    status: JobStatus,
    shape: &AnswerShape,
) -> CallToolResult {
    let message = format!(
        "The job {job_id} is still {}. It goes on in the background: call the job_status tool \
         with {{\"job_id\": \"{job_id}\"}} to get its result.",
        status.as_str().replace('_', " ")
    );
    let envelope = Envelope {
        job_id,
        status: "accepted",
        job_status: status,
        intent: intent.to_owned(),
        result: None,
        error: None,
        duration_ms: None,
        status_url: shape.job_url(job_id),
        message: Some(message.clone()),
    };
    answer(&envelope, false, &message, job_id)
}

fn answer(envelope: &Envelope, is_error: bool, lead: &str, job_id: JobId) -> CallToolResult {
    let structured = serde_json::to_value(envelope).expect("an envelope serializes");
    let json_text = structured.to_string();
    let mut content = Vec::with_capacity(2);
    if !lead.is_empty() {
        content.push(ContentBlock::text(lead.to_owned()));
    }
    content.push(ContentBlock::text(json_text));
    let mut result = if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = Some(structured);
    let mut meta = MetaObject::new();
    meta.insert(META_JOB_ID.into(), json!(job_id));
    result.with_meta(Some(meta))
}

/// A call refused before any job existed: `code` is the stable code the REST API uses.
pub fn refused(code: &str, message: &str, errors: &[FieldError]) -> CallToolResult {
    let mut text = format!("{code}: {message}");
    for e in errors {
        text.push_str(&format!("\n- {}: {}", e.field, e.message));
    }
    let mut body = json!({"error": {"code": code, "message": message}});
    if !errors.is_empty() {
        body["errors"] = json!(errors);
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(body);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(max_chars: usize) -> AnswerShape {
        AnswerShape {
            public_url: "https://orch.example.com/".into(),
            max_chars,
        }
    }

    fn job(status: JobStatus, result: Option<Value>, error: Option<JobError>) -> FinishedJob {
        FinishedJob {
            id: JobId::new(),
            intent: "memory.search".into(),
            mode: crate::model::Mode::Agent,
            status,
            result,
            error,
            callback_url: None,
            duration_ms: Some(12),
            finished_at: None,
        }
    }

    #[test]
    fn success_carries_the_result_in_structured_content_and_text() {
        let j = job(JobStatus::Succeeded, Some(json!({"items": [1, 2]})), None);
        let r = finished(&j, &shape(100_000));
        assert_eq!(r.is_error, Some(false));
        let s = r.structured_content.as_ref().unwrap();
        assert_eq!(s["result"], json!({"items": [1, 2]}));
        assert_eq!(s["status"], "success");
        assert_eq!(s["job_id"], json!(j.id));
        assert_eq!(
            s["status_url"],
            format!("https://orch.example.com/jobs/{}", j.id)
        );
        let text = serde_json::to_value(&r.content).unwrap().to_string();
        assert!(text.contains("items"), "{text}");
    }

    #[test]
    fn failures_are_errors_with_the_code_and_message_first() {
        let j = job(
            JobStatus::Failed,
            None,
            Some(JobError {
                code: "flow_failed".into(),
                message: "HTTP 500".into(),
            }),
        );
        let r = finished(&j, &shape(100_000));
        assert_eq!(r.is_error, Some(true));
        let first = serde_json::to_value(&r.content[0]).unwrap();
        assert_eq!(first["text"], "flow_failed: HTTP 500");
    }

    #[test]
    fn large_results_are_cut_so_the_answer_fits() {
        let big = json!({"text": "x".repeat(300_000)});
        let j = job(JobStatus::Succeeded, Some(big), None);
        let r = finished(&j, &shape(100_000));
        let total = serde_json::to_string(&r).unwrap().chars().count();
        assert!(total <= 100_000 + 1_000, "{total}");
        let s = r.structured_content.unwrap();
        assert_eq!(s["result"]["truncated"], true);
        assert_eq!(
            s["result"]["full_at"],
            format!("https://orch.example.com/jobs/{}", j.id)
        );
    }

    #[test]
    fn a_pending_job_tells_the_model_what_to_call() {
        let id = JobId::new();
        let r = pending(id, "system.sleep", JobStatus::Running, &shape(100_000));
        assert_eq!(r.is_error, Some(false));
        let first = serde_json::to_value(&r.content[0]).unwrap();
        assert!(first["text"].as_str().unwrap().contains("job_status"));
        assert_eq!(r.structured_content.unwrap()["status"], "accepted");
    }
}
