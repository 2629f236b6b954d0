//! A request filed, run and finished in one transaction: the job row is written once, already
//! final, with its history and the tool's own rows, and the whole request costs one commit
//! (one WAL flush) instead of three (intake, the tool's statement, the completion). A call
//! that runs no statement of its own (`system.echo`, `memory.write`, whose item the filing
//! statement writes) goes further: its job joins the intake's batch, one commit for many.
//!
//! Only for tools whose whole effect is statements in this database (or nothing): if anything
//! fails before the commit, nothing of the request exists, so the client's retry (or the
//! claim/lease path the intake falls back to) starts from scratch — no lost job, no second
//! memory item.

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{IntakeFiled, IntakeJob, Store, StoreResult, intake_batch, memory};
use crate::{ids::MemoryId, model::JobStatus, store::MemoryItem};

/// How the tool's call ended, as the job row records it.
#[derive(Debug, Clone)]
pub enum InlineOutcome {
    Succeeded(Value),
    /// A failure another attempt would not fix (a missing item): the job ends `failed`.
    Failed {
        code: String,
        message: String,
    },
}

impl InlineOutcome {
    /// The job row's columns for it: status, result, error code, error message.
    pub fn columns(&self) -> (JobStatus, Option<&Value>, Option<&str>, Option<&str>) {
        match self {
            InlineOutcome::Succeeded(v) => (JobStatus::Succeeded, Some(v), None, None),
            InlineOutcome::Failed { code, message } => (
                JobStatus::Failed,
                None,
                Some(code.as_str()),
                Some(message.as_str()),
            ),
        }
    }
}

/// One request's transaction, begun by the tool's first statement (`memory.get`,
/// `memory.delete`); a call that runs none files its job through the intake's batch instead.
/// Dropped without [`InlineTx::commit`], it rolls back.
pub struct InlineTx {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    /// A memory item to be written with the job, by the statement that files it.
    memory_with_job: Option<MemoryItemWithJob>,
}

/// A memory item written by the statement that files its job (`memory.write` at once): no
/// statement of its own, so the request can join the intake's batch (group commit).
#[derive(Debug, Clone)]
pub struct MemoryItemWithJob {
    pub id: MemoryId,
    pub text: String,
    pub tags: Vec<String>,
    pub metadata: Value,
}

/// What a statement writes for jobs already run, as column arrays, one entry per job (NULL
/// where a job has not run, or writes no memory item): the job row's outcome columns
/// ([`InlineOutcome::columns`]) and the item written with it.
#[derive(Default)]
pub(super) struct RunColumns<'a> {
    pub statuses: Vec<Option<JobStatus>>,
    pub results: Vec<Option<&'a Value>>,
    pub error_codes: Vec<Option<&'a str>>,
    pub error_messages: Vec<Option<&'a str>>,
    pub memory_ids: Vec<Option<uuid::Uuid>>,
    pub memory_texts: Vec<Option<&'a str>>,
    /// Tag lists differ in length: a text[][] must be rectangular, a jsonb[] need not.
    pub memory_tags: Vec<Option<Value>>,
    pub memory_metadata: Vec<Option<&'a Value>>,
}

impl<'a> RunColumns<'a> {
    pub fn push(
        &mut self,
        outcome: Option<&'a InlineOutcome>,
        item: Option<&'a MemoryItemWithJob>,
    ) {
        let (status, result, code, message) = match outcome.map(InlineOutcome::columns) {
            Some((status, result, code, message)) => (Some(status), result, code, message),
            None => (None, None, None, None),
        };
        self.statuses.push(status);
        self.results.push(result);
        self.error_codes.push(code);
        self.error_messages.push(message);
        self.memory_ids.push(item.map(|m| m.id.uuid()));
        self.memory_texts.push(item.map(|m| m.text.as_str()));
        self.memory_tags
            .push(item.map(|m| Value::from(m.tags.clone())));
        self.memory_metadata.push(item.map(|m| &m.metadata));
    }
}

impl Store {
    pub fn begin_inline(&self) -> InlineTx {
        InlineTx {
            pool: self.pool.clone(),
            tx: None,
            memory_with_job: None,
        }
    }
}

impl InlineTx {
    async fn conn(&mut self) -> StoreResult<&mut PgConnection> {
        if self.tx.is_none() {
            self.tx = Some(super::begin(&self.pool).await?);
        }
        Ok(self.tx.as_mut().expect("begun above"))
    }

    /// Whether the call ran a statement. If not, the job (with what the call left to write
    /// with it, [`InlineTx::take_memory_with_job`]) is filed with others' (group commit)
    /// instead of in this transaction.
    pub fn ran_statements(&self) -> bool {
        self.tx.is_some()
    }

    /// The memory item the call left to write with its job, for a batch to write.
    pub fn take_memory_with_job(&mut self) -> Option<MemoryItemWithJob> {
        self.memory_with_job.take()
    }

    /// Writes `item` with the job (under it: `source_job_id`), by the statement that files
    /// the job.
    pub fn write_memory_with_job(&mut self, item: MemoryItemWithJob) {
        self.memory_with_job = Some(item);
    }

    pub async fn get_memory(&mut self, id: MemoryId) -> StoreResult<Option<MemoryItem>> {
        memory::get(self.conn().await?, id).await
    }

    pub async fn delete_memory(&mut self, id: MemoryId) -> StoreResult<bool> {
        memory::delete(self.conn().await?, id).await
    }

    /// Writes `job` (already run: [`IntakeJob::ran`]) with its idempotency key, its history
    /// and what it writes with it, by the intake's own statement, in this transaction. `None`:
    /// the key already answers for another live job; the caller rolls back. The live streams'
    /// NOTIFY is deferred: the caller sends one after the commit.
    pub async fn file_finished(&mut self, job: &IntakeJob) -> StoreResult<Option<IntakeFiled>> {
        debug_assert!(
            job.ran.is_some(),
            "a job filed in its call's transaction has run"
        );
        let filed =
            intake_batch::insert_intake_jobs(self.conn().await?, std::slice::from_ref(job)).await?;
        Ok(filed.into_iter().next().map(|(_, filed)| filed))
    }

    /// Commits the tool's statements with the job (a job filed alone is committed already).
    pub async fn commit(self) -> StoreResult<()> {
        if let Some(tx) = self.tx {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for InlineTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineTx")
    }
}
