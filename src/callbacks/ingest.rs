//! `/callbacks/ingest`: a flow reports the outcome of a job it accepted. The caller proves
//! itself with a Standard Webhooks signature (the ingest secret) or the job's own token; every
//! attempt is audited, accepted or not, and no secret is stored.

use crate::redact::Redactor;
use std::{sync::Arc, time::Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::{
    callbacks::{Verifier, WebhookHeaders},
    ids::JobId,
    model::{JobStatus, Mode, Outcome},
    store::{IngestAudit, IngestTarget, Store, StoreError},
    worker::{Waiters, announce_finished},
};

/// How the caller authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    Signed(WebhookHeaders<'a>),
    Bearer(&'a str),
    None,
}

#[derive(Debug)]
pub struct IngestRequest<'a> {
    pub credentials: Credentials<'a>,
    pub body: &'a [u8],
    pub remote_addr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The job now has the reported outcome.
    Accepted { job_id: JobId, status: JobStatus },
    /// This webhook-id was already accepted: nothing changes.
    Duplicate { job_id: JobId },
    /// The job already has exactly this outcome: nothing changes.
    AlreadyApplied { job_id: JobId, status: JobStatus },
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{field}: {message}")]
    Malformed {
        field: &'static str,
        message: String,
    },
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("job {job_id} already finished as {}", status.as_str())]
    Conflict { job_id: JobId, status: JobStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// The HTTP status the caller will get; recorded in the audit.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Unauthorized(_) => 401,
            IngestError::Malformed { .. } => 400,
            IngestError::UnknownJob(_) => 404,
            IngestError::Conflict { .. } => 409,
            IngestError::Store(e) if e.is_unavailable() => 503,
            IngestError::Store(_) => 500,
        }
    }
}

/// What the flow reported.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    job_id: JobId,
    succeeded: bool,
    result: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
}

pub struct CallbackIngest {
    store: Store,
    verifier: Verifier,
    waiters: Arc<Waiters>,
    instance_id: Uuid,
    redactor: Arc<Redactor>,
}

impl CallbackIngest {
    pub fn new(
        store: Store,
        verifier: Verifier,
        waiters: Arc<Waiters>,
        instance_id: Uuid,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            store,
            verifier,
            waiters,
            instance_id,
            redactor,
        }
    }

    pub async fn ingest(&self, req: IngestRequest<'_>) -> Result<IngestOutcome, IngestError> {
        let started = Instant::now();
        // For the audit only: which job the attempt was about, even if it is refused.
        let job_seen = named_job(req.body);
        let result = self.handle(&req).await;
        let (status_code, outcome, error) = match &result {
            Ok(IngestOutcome::Accepted { .. }) => (200, Outcome::Accepted, None),
            Ok(IngestOutcome::Duplicate { .. }) => (200, Outcome::Duplicate, None),
            Ok(IngestOutcome::AlreadyApplied { .. }) => (200, Outcome::Duplicate, None),
            Err(e) => (
                e.http_status() as i32,
                Outcome::Rejected,
                Some(e.to_string()),
            ),
        };
        let (auth_method, webhook_id) = match req.credentials {
            Credentials::Signed(h) => (Some("signature"), Some(h.id)),
            Credentials::Bearer(_) => (Some("token"), None),
            Credentials::None => (None, None),
        };
        if let Err(e) = self
            .store
            .audit_ingest(&IngestAudit {
                job_id: job_seen,
                webhook_id,
                status_code,
                outcome,
                error: error.as_deref(),
                auth_method,
                remote_addr: req.remote_addr.as_deref(),
                duration_ms: started.elapsed().as_millis() as i32,
            })
            .await
        {
            tracing::warn!(error = %e, "could not audit a callback ingest");
        }
        if let Err(e) = &result {
            tracing::info!(status = status_code, "callback refused: {e}");
        }
        result
    }

    async fn handle(&self, req: &IngestRequest<'_>) -> Result<IngestOutcome, IngestError> {
        if let Credentials::Signed(headers) = req.credentials {
            self.verifier
                .verify(headers, req.body, chrono::Utc::now().timestamp())
                .map_err(|e| IngestError::Unauthorized(format!("signature: {e}")))?;
        }
        if let Credentials::None = req.credentials {
            return Err(IngestError::Unauthorized(
                "send Standard Webhooks headers signed with the ingest secret, or \
                 Authorization: Bearer <the job's callback token>"
                    .into(),
            ));
        }
        let mut report = parse_report(req.body)?;
        // A flow may report with our own credentials in it (its webhook's headers).
        if let Some(result) = &mut report.result {
            self.redactor.value(result);
        }
        if let Some(message) = &report.error_message {
            report.error_message = Some(self.redactor.text(message).into_owned());
        }
        let target = self
            .store
            .ingest_target(report.job_id)
            .await?
            .ok_or(IngestError::UnknownJob(report.job_id))?;
        if let Credentials::Bearer(token) = req.credentials
            && !token_matches(token, &target.token_hashes)
        {
            return Err(IngestError::Unauthorized(
                "the token is not this job's callback token".into(),
            ));
        }
        if let Credentials::Signed(headers) = req.credentials
            && self.store.was_seen(headers.id).await?
        {
            return Ok(IngestOutcome::Duplicate {
                job_id: report.job_id,
            });
        }
        let outcome = self.apply(&report, &target).await?;
        if let Credentials::Signed(headers) = req.credentials {
            self.store.first_sighting(headers.id, report.job_id).await?;
        }
        Ok(outcome)
    }

    async fn apply(
        &self,
        report: &Report,
        target: &IngestTarget,
    ) -> Result<IngestOutcome, IngestError> {
        let open = matches!(
            target.status,
            JobStatus::Scheduled
                | JobStatus::Queued
                | JobStatus::Running
                | JobStatus::AwaitingCallback
        );
        if open && target.mode == Mode::Flow {
            let finished = self
                .store
                .complete_from_callback(
                    report.job_id,
                    self.instance_id,
                    report.succeeded,
                    report.result.as_ref(),
                    report.error_code.as_deref(),
                    report.error_message.as_deref(),
                )
                .await?;
            if let Some(job) = finished {
                let status = job.status;
                announce_finished(&self.waiters, job);
                return Ok(IngestOutcome::Accepted {
                    job_id: report.job_id,
                    status,
                });
            }
            // It finished meanwhile: judge against what it became.
            let now = self
                .store
                .ingest_target(report.job_id)
                .await?
                .ok_or(IngestError::UnknownJob(report.job_id))?;
            return self.judge_finished(report, &now);
        }
        if open {
            return Err(IngestError::Malformed {
                field: "job_id",
                message: format!(
                    "job {} runs in mode {}, not flow: it takes no callbacks",
                    report.job_id,
                    target.mode.as_str()
                ),
            });
        }
        self.judge_finished(report, target)
    }

    /// The same outcome again is fine (200, no change); another one is a conflict.
    fn judge_finished(
        &self,
        report: &Report,
        target: &IngestTarget,
    ) -> Result<IngestOutcome, IngestError> {
        let same = match target.status {
            JobStatus::Succeeded => report.succeeded && report.result == target.result,
            JobStatus::Failed => {
                !report.succeeded
                    && report.error_code == target.error_code
                    && report.error_message == target.error_message
            }
            _ => false,
        };
        if same {
            Ok(IngestOutcome::AlreadyApplied {
                job_id: report.job_id,
                status: target.status,
            })
        } else {
            Err(IngestError::Conflict {
                job_id: report.job_id,
                status: target.status,
            })
        }
    }
}

fn named_job(body: &[u8]) -> Option<JobId> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("job_id")?
        .as_str()?
        .parse()
        .ok()
}

fn token_matches(token: &str, hashes: &[Vec<u8>]) -> bool {
    let presented = Sha256::digest(token.as_bytes());
    // Check every stored hash, so timing does not tell which attempt's token it was.
    hashes.iter().fold(false, |found, h| {
        found | bool::from(h.as_slice().ct_eq(presented.as_slice()))
    })
}

fn malformed(field: &'static str, message: impl Into<String>) -> IngestError {
    IngestError::Malformed {
        field,
        message: message.into(),
    }
}

/// `{"job_id", "status": "success"|"error", "result"?, "error"?}`; `error` may be an object
/// `{code?, message?}` or a string.
fn parse_report(body: &[u8]) -> Result<Report, IngestError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| malformed("body", format!("malformed JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("body", "must be a JSON object"))?;
    let job_id: JobId = obj
        .get("job_id")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("job_id", "is required (a string)"))?
        .parse()
        .map_err(|e: crate::ids::IdParseError| malformed("job_id", e.to_string()))?;
    let succeeded = match obj.get("status").and_then(Value::as_str) {
        Some("success") => true,
        Some("error") => false,
        _ => return Err(malformed("status", "must be \"success\" or \"error\"")),
    };
    if crate::nul::find(&v, "").is_some() {
        return Err(malformed(
            "body",
            "must not contain NUL (U+0000) characters",
        ));
    }
    let (error_code, error_message) = if succeeded {
        (None, None)
    } else {
        match obj.get("error") {
            None | Some(Value::Null) => (
                Some("flow_error".to_owned()),
                Some("the flow reported an error".to_owned()),
            ),
            Some(Value::String(message)) => (Some("flow_error".to_owned()), Some(message.clone())),
            Some(Value::Object(e)) => (
                Some(
                    e.get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("flow_error")
                        .to_owned(),
                ),
                Some(match e.get("message") {
                    Some(Value::String(m)) => m.clone(),
                    Some(other) => other.to_string(),
                    None => "the flow reported an error".to_owned(),
                }),
            ),
            Some(_) => {
                return Err(malformed(
                    "error",
                    "must be an object {code, message} or a string",
                ));
            }
        }
    };
    Ok(Report {
        job_id,
        succeeded,
        result: if succeeded {
            Some(obj.get("result").cloned().unwrap_or(Value::Null))
        } else {
            None
        },
        error_code,
        error_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_parsed_and_bad_ones_name_the_field() {
        let id = JobId::new();
        let ok = parse_report(
            format!(r#"{{"job_id":"{id}","status":"success","result":{{"n":1}}}}"#).as_bytes(),
        )
        .unwrap();
        assert!(ok.succeeded);
        assert_eq!(ok.result, Some(serde_json::json!({"n": 1})));
        let err = parse_report(format!(r#"{{"job_id":"{id}","status":"error","error":{{"code":"quota","message":"over"}}}}"#).as_bytes()).unwrap();
        assert_eq!(err.error_code.as_deref(), Some("quota"));
        let text = parse_report(
            format!(r#"{{"job_id":"{id}","status":"error","error":"boom"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(text.error_message.as_deref(), Some("boom"));
        for (body, field) in [
            ("nope".to_owned(), "body"),
            ("[]".to_owned(), "body"),
            (r#"{"status":"success"}"#.to_owned(), "job_id"),
            (
                r#"{"job_id":"job_1","status":"success"}"#.to_owned(),
                "job_id",
            ),
            (format!(r#"{{"job_id":"{id}","status":"done"}}"#), "status"),
            (
                format!(r#"{{"job_id":"{id}","status":"error","error":5}}"#),
                "error",
            ),
        ] {
            match parse_report(body.as_bytes()) {
                Err(IngestError::Malformed { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn tokens_match_only_their_hash() {
        let hashes = vec![
            Sha256::digest(b"first").to_vec(),
            Sha256::digest(b"second").to_vec(),
        ];
        assert!(token_matches("second", &hashes));
        assert!(!token_matches("third", &hashes));
        assert!(!token_matches("second", &[]));
    }
}
