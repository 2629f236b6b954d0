//! A job's append-only history.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::{
    ids::JobId,
    model::{AuditKind, JobStatus, Principal},
};

#[derive(Debug, Clone)]
pub struct JobEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub from_status: Option<JobStatus>,
    pub to_status: Option<JobStatus>,
    pub attempt: i32,
    pub instance_id: Option<Uuid>,
    pub actor_kind: Option<String>,
    pub actor_name: Option<String>,
    pub detail: Option<Value>,
}

impl Store {
    /// Adds a tool's own entry to a job's history (what it decided and why), outside the
    /// state changes the queue records itself.
    pub async fn append_job_event(
        &self,
        job: JobId,
        attempt: i32,
        kind: AuditKind,
        detail: &Value,
    ) -> StoreResult<()> {
        // Attributed to whoever asked for the job; `host` and `decision` in the detail (SSH)
        // become the event's target and outcome.
        sqlx::query!(
            r#"
            INSERT INTO audit_events (job_id, intent, mode, kind, attempt, detail, target,
                                      outcome, actor_kind, actor_id, actor_name, request_id,
                                      client_addr)
            SELECT $1, j.intent, j.mode, $2, $3, $4, $4::jsonb ->> 'host', $4::jsonb ->> 'decision',
                   CASE WHEN j.api_key_id IS NULL THEN 'anonymous' ELSE 'api_key' END,
                   j.api_key_id::text, j.principal, j.request_id, j.client_addr
            FROM jobs j WHERE j.id = $1
            "#,
            job.uuid(),
            kind.as_str(),
            attempt,
            detail,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A policy refusal at intake (no job exists): attributed to who asked.
    pub async fn audit_intake_refusal(
        &self,
        kind: AuditKind,
        intent: &str,
        by: &Principal,
        detail: &Value,
    ) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO audit_events (kind, intent, detail, target, outcome, http_status,
                                      actor_kind, actor_id, actor_name, request_id, client_addr)
            VALUES ($1, $2, $3, $3::jsonb ->> 'host', $3::jsonb ->> 'decision', 422,
                    $4, $5, $6, $7, $8)
            "#,
            kind.as_str(),
            intent,
            detail,
            by.actor_kind().as_str(),
            by.api_key_id.map(|id| id.to_string()),
            by.name,
            by.request_id,
            by.client_addr,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The job's history: every event about it but its callback attempts (listed apart).
    pub async fn job_events(&self, job: JobId) -> StoreResult<Vec<JobEvent>> {
        Ok(sqlx::query_as!(
            JobEvent,
            r#"
            SELECT id, at, kind, from_status AS "from_status: JobStatus",
                   to_status AS "to_status: JobStatus", coalesce(attempt, 0) AS "attempt!",
                   instance_id, actor_kind, actor_name, detail
            FROM audit_events
            WHERE job_id = $1 AND kind NOT IN ('callback.out', 'callback.in')
            ORDER BY id
            "#,
            job.uuid(),
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
