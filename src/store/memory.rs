//! Memory items: durable notes with tags, searched with Postgres full-text search.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Store, StoreResult};
use crate::ids::{JobId, MemoryId};

#[derive(Debug)]
pub struct NewMemoryItem<'a> {
    pub id: MemoryId,
    pub text: &'a str,
    pub tags: &'a [String],
    pub metadata: &'a Value,
    /// The job writing it: a second attempt of the same job returns the first item.
    pub source_job: Option<JobId>,
}

#[derive(Debug, Clone)]
pub struct MemoryItem {
    pub id: MemoryId,
    pub text: String,
    pub tags: Vec<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

struct HitRow {
    id: uuid::Uuid,
    text: String,
    tags: Vec<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
    score: f64,
}

#[derive(Debug, Clone)]
pub struct MemoryHit {
    pub item: MemoryItem,
    pub score: f64,
}

impl Store {
    /// Written by a job, the commit does not wait for the disk: the job's completion (a
    /// synchronous commit, later in the same WAL) makes it durable before anyone is told, and a
    /// job that never completes is run again, writing the item again under its source job.
    pub async fn insert_memory(&self, item: &NewMemoryItem<'_>) -> StoreResult<MemoryItem> {
        let r = sqlx::query!(
            r#"
            WITH commit_mode AS (
                SELECT set_config('synchronous_commit',
                                  CASE WHEN $5::uuid IS NULL THEN 'on' ELSE 'off' END, true)
            )
            INSERT INTO memory_items (id, text, tags, metadata, source_job_id)
            SELECT $1, $2, $3, $4, $5 FROM commit_mode
            ON CONFLICT (source_job_id) DO UPDATE SET source_job_id = EXCLUDED.source_job_id
            RETURNING id, text, tags, metadata, created_at
            "#,
            item.id.uuid(),
            item.text,
            item.tags,
            item.metadata,
            item.source_job.map(JobId::uuid),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(MemoryItem {
            id: r.id.into(),
            text: r.text,
            tags: r.tags,
            metadata: r.metadata,
            created_at: r.created_at,
        })
    }

    /// Ranked full-text search (websearch syntax); items must carry every tag in `tags`.
    pub async fn search_memory(
        &self,
        query: &str,
        tags: &[String],
        limit: i64,
    ) -> StoreResult<Vec<MemoryHit>> {
        // Two statements: `tags @> '{}'` would make the GIN index walk every tag entry.
        let rows: Vec<HitRow> = if tags.is_empty() {
            sqlx::query_as!(
                HitRow,
                r#"
                SELECT id, text, tags, metadata, created_at,
                       ts_rank_cd(search_vector, q, 32)::float8 AS "score!"
                FROM memory_items, websearch_to_tsquery('english', $1) AS q
                WHERE search_vector @@ q
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query_as!(
                HitRow,
                r#"
                SELECT id, text, tags, metadata, created_at,
                       ts_rank_cd(search_vector, q, 32)::float8 AS "score!"
                FROM memory_items, websearch_to_tsquery('english', $1) AS q
                WHERE search_vector @@ q AND tags @> $3
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
                tags,
            )
            .fetch_all(&self.pool)
            .await?
        };
        Ok(rows
            .into_iter()
            .map(|r| MemoryHit {
                item: MemoryItem {
                    id: r.id.into(),
                    text: r.text,
                    tags: r.tags,
                    metadata: r.metadata,
                    created_at: r.created_at,
                },
                score: r.score,
            })
            .collect())
    }

    pub async fn get_memory(&self, id: MemoryId) -> StoreResult<Option<MemoryItem>> {
        let row = sqlx::query!(
            "SELECT id, text, tags, metadata, created_at FROM memory_items WHERE id = $1",
            id.uuid(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| MemoryItem {
            id: r.id.into(),
            text: r.text,
            tags: r.tags,
            metadata: r.metadata,
            created_at: r.created_at,
        }))
    }

    pub async fn delete_memory(&self, id: MemoryId) -> StoreResult<bool> {
        let done = sqlx::query!("DELETE FROM memory_items WHERE id = $1", id.uuid())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
