//! Memory items: durable notes with tags, searched with Postgres full-text search.

use chrono::{DateTime, Utc};
use serde_json::Value;

use sqlx::PgConnection;

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
    /// Written by a job on the claim/lease path, the commit does not wait for the disk: the
    /// job's completion (a synchronous commit, later in the same WAL) makes it durable before
    /// anyone is told, and a job that never completes is run again, writing the item again
    /// under its source job.
    pub async fn insert_memory(&self, item: &NewMemoryItem<'_>) -> StoreResult<MemoryItem> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, item, true).await
    }

    /// Ranked full-text search (websearch syntax); items must carry every tag in `tags`.
    ///
    /// Ranking every match of a common word is what made searches slow (p99 138 ms at 1M items,
    /// 481 ms at 16 clients: a word in 9 % of the items is 90,000 rows to rank). So a query is
    /// first probed against the newest 2,000 items (walking the primary key: ids are UUIDv7, in
    /// time order): when at least 8 of them (0.4 %) match, the query is common and only its
    /// newest matches are ranked (at most 500, found within the newest 20,000 items).
    /// Every other query — rare words, most multi-word and tagged queries — is ranked over all
    /// its matches through the GIN index, exactly as before, and so is a common one whose window
    /// held fewer matches than asked for (then instead of the window's, never besides them).
    /// Each route is switched by a one-time filter, so the plan's shape is the same with custom
    /// and generic plans (a planner left to choose between the two indexes picked the GIN one
    /// for every word once the plan went generic).
    /// `LIMIT (SELECT $2)` lets PostgreSQL settle on the generic plan instead of planning every
    /// call. (The numbers are literals in both statements below; measured in bench/README.md.)
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
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q),
                probe AS MATERIALIZED (
                    SELECT count(*) AS n
                    FROM (SELECT search_vector FROM memory_items ORDER BY id DESC LIMIT 2000) r
                    WHERE r.search_vector @@ (SELECT q FROM q)
                ), recent AS MATERIALIZED (
                    SELECT id, text, tags, metadata, created_at, search_vector
                    FROM (SELECT id, text, tags, metadata, created_at, search_vector
                          FROM memory_items ORDER BY id DESC LIMIT 20000) r
                    WHERE (SELECT n FROM probe) >= 8 AND r.search_vector @@ (SELECT q FROM q)
                    ORDER BY r.id DESC
                    LIMIT 500
                ), candidate AS (
                    SELECT * FROM recent WHERE (SELECT count(*) FROM recent) >= $2
                    UNION ALL
                    SELECT id, text, tags, metadata, created_at, search_vector
                    FROM memory_items
                    WHERE (SELECT count(*) FROM recent) < $2
                      AND search_vector @@ (SELECT q FROM q)
                )
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM candidate
                ORDER BY 6 DESC, created_at DESC
                LIMIT (SELECT $2::bigint)
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
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q),
                probe AS MATERIALIZED (
                    SELECT count(*) AS n
                    FROM (SELECT search_vector, tags FROM memory_items
                          ORDER BY id DESC LIMIT 2000) r
                    WHERE r.search_vector @@ (SELECT q FROM q) AND r.tags @> $3
                ), recent AS MATERIALIZED (
                    SELECT id, text, tags, metadata, created_at, search_vector
                    FROM (SELECT id, text, tags, metadata, created_at, search_vector
                          FROM memory_items ORDER BY id DESC LIMIT 20000) r
                    WHERE (SELECT n FROM probe) >= 8 AND r.search_vector @@ (SELECT q FROM q)
                      AND r.tags @> $3
                    ORDER BY r.id DESC
                    LIMIT 500
                ), candidate AS (
                    SELECT * FROM recent WHERE (SELECT count(*) FROM recent) >= $2
                    UNION ALL
                    SELECT id, text, tags, metadata, created_at, search_vector
                    FROM memory_items
                    WHERE (SELECT count(*) FROM recent) < $2
                      AND search_vector @@ (SELECT q FROM q) AND tags @> $3
                )
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM candidate
                ORDER BY 6 DESC, created_at DESC
                LIMIT (SELECT $2::bigint)
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
        let mut conn = self.pool.acquire().await?;
        get(&mut conn, id).await
    }

    pub async fn delete_memory(&self, id: MemoryId) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        delete(&mut conn, id).await
    }
}

/// Its own statement on the pool, or part of a request's one transaction (`InlineTx`), where
/// `relaxed` is false: that commit is the answer's, so it waits for the disk.
pub(super) async fn insert(
    conn: &mut PgConnection,
    item: &NewMemoryItem<'_>,
    relaxed: bool,
) -> StoreResult<MemoryItem> {
    let r = sqlx::query!(
        r#"
        WITH commit_mode AS (
            SELECT set_config('synchronous_commit',
                              CASE WHEN $5::uuid IS NOT NULL AND $6 THEN 'off' ELSE 'on' END,
                              true)
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
        relaxed,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(MemoryItem {
        id: r.id.into(),
        text: r.text,
        tags: r.tags,
        metadata: r.metadata,
        created_at: r.created_at,
    })
}

pub(super) async fn get(conn: &mut PgConnection, id: MemoryId) -> StoreResult<Option<MemoryItem>> {
    let row = sqlx::query!(
        "SELECT id, text, tags, metadata, created_at FROM memory_items WHERE id = $1",
        id.uuid(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| MemoryItem {
        id: r.id.into(),
        text: r.text,
        tags: r.tags,
        metadata: r.metadata,
        created_at: r.created_at,
    }))
}

pub(super) async fn delete(conn: &mut PgConnection, id: MemoryId) -> StoreResult<bool> {
    let done = sqlx::query!("DELETE FROM memory_items WHERE id = $1", id.uuid())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
