//! Outbound callbacks: deliveries are claimed with SKIP LOCKED like jobs, POSTed with Standard
//! Webhooks signatures, retried on a schedule, and every attempt is audited.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use futures::{FutureExt, future::BoxFuture};

use super::{OutboundError, SafeClient, SignedRequest, body_text, retry_after, truncate_bytes};
use crate::{
    ids::JobId,
    model::{FinishedJob, JobError, Outcome},
    redact::Redactor,
    store::{ClaimedDelivery, DeliveryAttempt, DeliveryStatus, Store},
    worker::{Sidecar, backoff::jitter, reserve_up_to},
};

/// Response bodies are kept in the audit up to this size.
const EXCERPT_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub concurrency: usize,
    pub timeout: Duration,
    /// Delay after attempt n is `schedule[n-1]`; after the last one the delivery is exhausted.
    pub schedule: Vec<Duration>,
    pub max_retry_after: Duration,
    pub poll: Duration,
}

/// The body every receiver gets (the contract's shape).
#[derive(Debug, Serialize)]
pub struct CallbackBody<'a> {
    pub job_id: JobId,
    pub intent: &'a str,
    /// `success`, `error` or `dry_run`, as in the 200 answer of `POST /orchestrate`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a JobError>,
    pub duration_ms: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl<'a> CallbackBody<'a> {
    pub fn of(job: &'a FinishedJob) -> Self {
        let status = job.client_status();
        Self {
            job_id: job.id,
            intent: &job.intent,
            status,
            result: if status == "error" {
                None
            } else {
                job.result.as_ref()
            },
            error: job.error.as_ref().filter(|_| status == "error"),
            duration_ms: job.duration_ms,
            finished_at: job.finished_at,
        }
    }
}

pub struct Deliverer {
    store: Store,
    client: SafeClient,
    owner: Uuid,
    settings: DeliverySettings,
    redactor: Arc<Redactor>,
}

impl Sidecar for Deliverer {
    fn run(
        self: Arc<Self>,
        wake: Arc<Notify>,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) -> BoxFuture<'static, ()> {
        self.deliver_until(wake, stop, tracker).boxed()
    }
}

impl Deliverer {
    pub fn new(
        store: Store,
        client: SafeClient,
        owner: Uuid,
        settings: DeliverySettings,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            store,
            client,
            owner,
            settings,
            redactor,
        }
    }

    /// Claims and sends until `stop`; in-flight attempts are tracked by `tracker`.
    pub async fn deliver_until(
        self: Arc<Self>,
        wake: Arc<Notify>,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        // The lease outlives the request, so a live sender is never overtaken.
        let lease_secs = (self.settings.timeout + Duration::from_secs(30)).as_secs_f64();
        loop {
            let permit = tokio::select! {
                p = reserve_up_to(&slots, 32) => p,
                _ = stop.cancelled() => None,
            };
            let Some(mut permits) = permit else { break };
            let wanted = permits.num_permits();
            let claimed = match self
                .store
                .claim_deliveries(self.owner, wanted as i64, lease_secs)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming callback deliveries failed");
                    Vec::new()
                }
            };
            let got = claimed.len();
            for delivery in claimed {
                let one = permits.split(1).expect("a permit per delivery");
                let this = self.clone();
                let span = tracing::info_span!("callback", job_id = %delivery.job_id, attempt = delivery.attempt);
                tracker.spawn(
                    async move {
                        this.attempt(&delivery).await;
                        drop(one);
                    }
                    .instrument(span),
                );
            }
            drop(permits);
            if got > 0 {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.cancelled() => break,
            }
        }
    }

    async fn attempt(&self, d: &ClaimedDelivery) {
        let job = match self.store.finished_jobs(&[d.job_id.uuid()]).await {
            Ok(mut jobs) => jobs.pop(),
            Err(e) => {
                // Leave it: the lease runs out and another attempt picks it up.
                tracing::warn!(error = %e, "could not load the job to deliver");
                return;
            }
        };
        let Some(job) = job else {
            self.record(
                d,
                failure_or_exhausted(d, &self.settings, None),
                None,
                None,
                0,
                Some("the job is not finished"),
            )
            .await;
            return;
        };
        let body = serde_json::to_vec(&CallbackBody::of(&job)).expect("JSON serializes");
        let sent = self
            .client
            .send(SignedRequest {
                method: Method::POST,
                url: &d.url,
                body,
                message_id: &d.webhook_id,
                headers: Vec::new(),
                timeout: self.settings.timeout,
                max_response_bytes: EXCERPT_BYTES,
            })
            .await;
        match sent {
            Ok(resp) => {
                let code = resp.status;
                let excerpt = truncate_bytes(
                    self.redactor.text(&body_text(&resp.body)).into_owned(),
                    EXCERPT_BYTES,
                );
                let elapsed = resp.elapsed.as_millis() as i32;
                let (plan, error) = if code.is_success() {
                    (
                        Plan::done(DeliveryStatus::Delivered, Outcome::Delivered),
                        None,
                    )
                } else if code == StatusCode::GONE {
                    (Plan::done(DeliveryStatus::Gone, Outcome::Gone), None)
                } else {
                    let hint = retry_after(&resp.headers);
                    let error = if code.is_redirection() {
                        let to = resp
                            .headers
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?");
                        format!("answered {code} (redirect to {to} not followed)")
                    } else {
                        format!("answered {code}")
                    };
                    (failure_or_exhausted(d, &self.settings, hint), Some(error))
                };
                self.record(
                    d,
                    plan,
                    Some(code.as_u16() as i32),
                    Some(&excerpt),
                    elapsed,
                    error.as_deref(),
                )
                .await;
            }
            Err(OutboundError::Refused(reason)) => {
                let error = format!("refused: {reason}");
                self.record(
                    d,
                    Plan::done(DeliveryStatus::Exhausted, Outcome::Refused),
                    None,
                    None,
                    0,
                    Some(&error),
                )
                .await;
            }
            Err(e) => {
                let plan = failure_or_exhausted(d, &self.settings, None);
                let elapsed = match e {
                    OutboundError::Timeout(t) => t.as_millis() as i32,
                    _ => 0,
                };
                self.record(d, plan, None, None, elapsed, Some(&e.to_string()))
                    .await;
            }
        }
    }

    async fn record(
        &self,
        d: &ClaimedDelivery,
        plan: Plan,
        status_code: Option<i32>,
        excerpt: Option<&str>,
        duration_ms: i32,
        error: Option<&str>,
    ) {
        match plan.status {
            DeliveryStatus::Delivered => tracing::info!(url = %d.url, "callback delivered"),
            DeliveryStatus::Pending => {
                tracing::info!(url = %d.url, error, next = ?plan.next_attempt_at, "callback attempt failed; will retry")
            }
            _ => {
                tracing::warn!(url = %d.url, error, outcome = plan.outcome.as_str(), "callback delivery stopped")
            }
        }
        let attempt = DeliveryAttempt {
            delivery: d,
            status: plan.status,
            next_attempt_at: plan.next_attempt_at,
            outcome: plan.outcome,
            status_code,
            response_excerpt: excerpt,
            duration_ms,
            error,
        };
        match self
            .store
            .record_delivery_attempt(self.owner, &attempt)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("delivery lease lost before the attempt was recorded"),
            Err(e) => tracing::warn!(error = %e, "could not record the delivery attempt"),
        }
        metrics::counter!("orchestrator_callback_attempts_total", "outcome" => plan.outcome.as_str())
            .increment(1);
    }
}

/// Where an attempt leaves the delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    status: DeliveryStatus,
    next_attempt_at: Option<DateTime<Utc>>,
    outcome: Outcome,
}

impl Plan {
    fn done(status: DeliveryStatus, outcome: Outcome) -> Self {
        Self {
            status,
            next_attempt_at: None,
            outcome,
        }
    }
}

/// Another attempt on the schedule (or when the receiver asked, within bounds), or the end.
fn failure_or_exhausted(
    d: &ClaimedDelivery,
    settings: &DeliverySettings,
    retry_after: Option<Duration>,
) -> Plan {
    let allowed = settings.schedule.len() as i32 + 1 + d.manual_retries;
    if d.attempt >= allowed || settings.schedule.is_empty() {
        return Plan::done(DeliveryStatus::Exhausted, Outcome::Exhausted);
    }
    let index = (d.attempt as usize - 1).min(settings.schedule.len() - 1);
    let delay = match retry_after {
        Some(hint) => hint.clamp(Duration::from_secs(1), settings.max_retry_after),
        None => jitter(settings.schedule[index], 0.2),
    };
    Plan {
        status: DeliveryStatus::Pending,
        next_attempt_at: Some(Utc::now() + delay),
        outcome: Outcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(attempt: i32, manual_retries: i32) -> ClaimedDelivery {
        ClaimedDelivery {
            id: Uuid::nil(),
            job_id: JobId::new(),
            url: "https://example.com/hook".into(),
            webhook_id: "msg_1".into(),
            attempt,
            manual_retries,
        }
    }

    fn settings() -> DeliverySettings {
        DeliverySettings {
            concurrency: 1,
            timeout: Duration::from_secs(15),
            schedule: [5, 300, 1800].map(Duration::from_secs).to_vec(),
            max_retry_after: Duration::from_secs(3600),
            poll: Duration::from_secs(1),
        }
    }

    fn delay_secs(plan: Plan) -> f64 {
        (plan.next_attempt_at.unwrap() - Utc::now()).num_milliseconds() as f64 / 1000.0
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_exhausts() {
        let s = settings();
        let first = failure_or_exhausted(&delivery(1, 0), &s, None);
        assert_eq!(first.status, DeliveryStatus::Pending);
        assert!((3.9..=6.1).contains(&delay_secs(first)));
        let third = failure_or_exhausted(&delivery(3, 0), &s, None);
        assert!((1430.0..=2170.0).contains(&delay_secs(third)));
        assert_eq!(
            failure_or_exhausted(&delivery(4, 0), &s, None).status,
            DeliveryStatus::Exhausted
        );
        // A manual retry grants exactly one more attempt.
        assert_eq!(
            failure_or_exhausted(&delivery(5, 1), &s, None).status,
            DeliveryStatus::Exhausted
        );
        assert_eq!(
            failure_or_exhausted(&delivery(4, 1), &s, None).status,
            DeliveryStatus::Pending
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = settings();
        let asked = failure_or_exhausted(&delivery(1, 0), &s, Some(Duration::from_secs(120)));
        assert!((119.0..=120.5).contains(&delay_secs(asked)));
        let greedy = failure_or_exhausted(&delivery(1, 0), &s, Some(Duration::from_secs(999_999)));
        assert!(delay_secs(greedy) <= 3600.5);
    }

    #[test]
    fn the_body_carries_result_or_error() {
        let ok = FinishedJob {
            id: JobId::new(),
            intent: "gmail.triage".into(),
            mode: crate::model::Mode::Flow,
            status: crate::model::JobStatus::Succeeded,
            result: Some(serde_json::json!({"processed": 15})),
            error: None,
            callback_url: None,
            duration_ms: Some(45000),
            finished_at: Some(Utc::now()),
        };
        let v = serde_json::to_value(CallbackBody::of(&ok)).unwrap();
        assert_eq!(v["status"], "success");
        assert_eq!(v["result"]["processed"], 15);
        assert!(v.get("error").is_none());
        let failed = FinishedJob {
            status: crate::model::JobStatus::TimedOut,
            result: None,
            error: Some(JobError {
                code: "timed_out".into(),
                message: "too slow".into(),
            }),
            ..ok
        };
        let v = serde_json::to_value(CallbackBody::of(&failed)).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "timed_out");
        assert!(v.get("result").is_none());
    }
}
