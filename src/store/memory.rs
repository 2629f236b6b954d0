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
    /// Ranking every match of a common word is what made searches slow (p99 138 ms at 1M items:
    /// a word in 9 % of the items is 90,000 rows to read and rank). So a common query ranks
    /// only its newest `CANDIDATES` matches, and a rare one all of its matches. Which is which
    /// comes from the table's statistics (`pg_stats`: how often each of the commonest words and
    /// tags occurs): a query expected to match at least `COMMON_MATCHES` items is common.
    /// A common query walks the recency buckets (16,384 items each, see the `memory_recency`
    /// migration) newest first and stops taking matches once it has `CANDIDATES`; a bucket's
    /// matches are an intersection inside the GIN index (words, tags and bucket in one index),
    /// so a bucket without any costs well under a millisecond, and a word common overall but
    /// absent from the newest items (the topic drifted) is found in the first bucket that
    /// holds it. Recency is a bucket's: in the bucket where the walk stops, which matches fill
    /// the last places is the heap's order, not their age.
    pub async fn search_memory(
        &self,
        query: &str,
        tags: &[String],
        limit: i64,
    ) -> StoreResult<Vec<MemoryHit>> {
        let mut conn = self.pool.acquire().await?;
        let words: Vec<String> = sqlx::query_scalar!(
            r#"SELECT tsvector_to_array(to_tsvector('english', $1)) AS "words!""#,
            query
        )
        .fetch_one(&mut *conn)
        .await?;
        let expected = {
            let stale = self
                .word_stats()
                .read_at
                .is_none_or(|at| at.elapsed() > WORD_STATS_MAX_AGE);
            if stale {
                let fresh = read_word_stats(&mut conn).await?;
                *self.word_stats() = fresh;
            }
            self.word_stats().expected_matches(&words, tags)
        };
        let walk = expected >= COMMON_MATCHES;
        search(&mut conn, query, tags, limit, walk).await
    }

    fn word_stats(&self) -> std::sync::MutexGuard<'_, WordStats> {
        // Plain numbers, valid whatever a panicking holder did.
        self.word_stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Items per recency bucket, as the `memory_recency` migration numbers them.
const RECENCY_BUCKET: i64 = 16_384;
/// The most matches a common query ranks: its newest.
const CANDIDATES: i64 = 500;
/// A query the statistics expect to match at least this many items is common. Below it,
/// ranking every match (a few milliseconds) costs less than walking the buckets for them.
const COMMON_MATCHES: f64 = 2_000.0;
/// How long the statistics read from `pg_stats` serve before they are read again (autovacuum
/// refreshes them as the table changes by a tenth).
const WORD_STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often the commonest words and tags of memory items occur: PostgreSQL's statistics for
/// the two columns (`pg_stats.most_common_elems`, the 1,000 commonest at the default target).
#[derive(Debug, Default)]
pub(super) struct WordStats {
    read_at: Option<std::time::Instant>,
    items: f64,
    words: std::collections::HashMap<String, f64>,
    tags: std::collections::HashMap<String, f64>,
}

impl WordStats {
    /// Items expected to hold every one of `words` (stemmed) and `tags`, taking them as
    /// independent (a query with `or` is taken as needing all its words: it may be ranked
    /// whole when it is common, which is slower but exact). A word or tag missing from the
    /// statistics is rarer than all of them: counted as none, so a query with one is rare
    /// (ranked whole, which is cheap for it). A query without words (only stop words) matches
    /// nothing, and without statistics (a table never analyzed) every query is rare.
    fn expected_matches(&self, words: &[String], tags: &[String]) -> f64 {
        if words.is_empty() {
            return 0.0;
        }
        let frequency = |of: &std::collections::HashMap<String, f64>, key: &String| {
            of.get(key).copied().unwrap_or(0.0)
        };
        let words: f64 = words.iter().map(|w| frequency(&self.words, w)).product();
        let tags: f64 = tags.iter().map(|t| frequency(&self.tags, t)).product();
        self.items * words * tags
    }
}

async fn read_word_stats(conn: &mut PgConnection) -> StoreResult<WordStats> {
    let items = sqlx::query_scalar!(
        r#"SELECT GREATEST(reltuples, 0)::float8 AS "n!" FROM pg_class
           WHERE oid = 'memory_items'::regclass"#
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"
        SELECT attname::text AS "column!", most_common_elems::text::text[] AS "elems!",
               most_common_elem_freqs AS "freqs!"
        FROM pg_stats
        WHERE schemaname = current_schema() AND tablename = 'memory_items'
          AND attname IN ('search_vector', 'tags') AND most_common_elems IS NOT NULL
        "#
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut stats = WordStats {
        read_at: Some(std::time::Instant::now()),
        items,
        ..WordStats::default()
    };
    for row in rows {
        // The frequencies go with the elements one to one (three summary numbers follow).
        let pairs = row
            .elems
            .into_iter()
            .zip(row.freqs.into_iter().map(f64::from));
        match row.column.as_str() {
            "search_vector" => stats.words.extend(pairs),
            _ => stats.tags.extend(pairs),
        }
    }
    Ok(stats)
}

/// The `limit` best-ranked matches of `query` carrying every tag in `tags`: among the first
/// `CANDIDATES` found walking the recency buckets newest first (`walk`), or among all of them.
/// Four statements: `tags @> '{}'` would make the GIN index walk every tag entry.
async fn search(
    conn: &mut PgConnection,
    query: &str,
    tags: &[String],
    limit: i64,
    walk: bool,
) -> StoreResult<Vec<MemoryHit>> {
    let candidates = CANDIDATES.max(limit);
    let rows: Vec<HitRow> = match (walk, tags.is_empty()) {
        (true, true) => {
            sqlx::query_as!(
                HitRow,
                r#"
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q),
                newest AS MATERIALIZED (
                    SELECT GREATEST(0, (last_value - (NOT is_called)::int - 1) / $3)::int4 AS b
                    FROM memory_items_recency_seq
                ), candidate AS MATERIALIZED (
                    SELECT c.*
                    FROM generate_series((SELECT b FROM newest), 0, -1) AS w(b)
                    CROSS JOIN LATERAL (
                        SELECT id, text, tags, metadata, created_at, search_vector
                        FROM memory_items
                        WHERE search_vector @@ (SELECT q FROM q) AND recency && ARRAY[w.b]
                        LIMIT $4
                    ) c
                    LIMIT $4
                )
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM candidate
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
                RECENCY_BUCKET,
                candidates,
            )
            .fetch_all(&mut *conn)
            .await?
        }
        (true, false) => {
            sqlx::query_as!(
                HitRow,
                r#"
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q),
                newest AS MATERIALIZED (
                    SELECT GREATEST(0, (last_value - (NOT is_called)::int - 1) / $3)::int4 AS b
                    FROM memory_items_recency_seq
                ), candidate AS MATERIALIZED (
                    SELECT c.*
                    FROM generate_series((SELECT b FROM newest), 0, -1) AS w(b)
                    CROSS JOIN LATERAL (
                        SELECT id, text, tags, metadata, created_at, search_vector
                        FROM memory_items
                        WHERE search_vector @@ (SELECT q FROM q) AND recency && ARRAY[w.b]
                          AND tags @> $5
                        LIMIT $4
                    ) c
                    LIMIT $4
                )
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM candidate
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
                RECENCY_BUCKET,
                candidates,
                tags,
            )
            .fetch_all(&mut *conn)
            .await?
        }
        (false, true) => {
            sqlx::query_as!(
                HitRow,
                r#"
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q)
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM memory_items
                WHERE search_vector @@ (SELECT q FROM q)
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
            )
            .fetch_all(&mut *conn)
            .await?
        }
        (false, false) => {
            sqlx::query_as!(
                HitRow,
                r#"
                WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $1) AS q)
                SELECT id AS "id!", text AS "text!", tags AS "tags!", metadata AS "metadata!",
                       created_at AS "created_at!",
                       ts_rank_cd(search_vector, (SELECT q FROM q), 32)::float8 AS "score!"
                FROM memory_items
                WHERE search_vector @@ (SELECT q FROM q) AND tags @> $3
                ORDER BY 6 DESC, created_at DESC
                LIMIT $2
                "#,
                query,
                limit,
                tags,
            )
            .fetch_all(&mut *conn)
            .await?
        }
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

#[cfg(test)]
mod tests {
    use super::WordStats;

    fn stats() -> WordStats {
        WordStats {
            read_at: None,
            items: 1_000_000.0,
            words: [("common".into(), 0.1), ("usual".into(), 0.02)].into(),
            tags: [("everyone".into(), 1.0), ("team".into(), 0.05)].into(),
        }
    }

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn expected_matches_take_words_and_tags_as_independent() {
        let stats = stats();
        assert_eq!(stats.expected_matches(&s(&["common"]), &[]), 100_000.0);
        assert_eq!(
            stats.expected_matches(&s(&["common", "usual"]), &[]),
            2_000.0
        );
        assert_eq!(
            stats.expected_matches(&s(&["common"]), &s(&["everyone", "team"])),
            5_000.0
        );
    }

    #[test]
    fn a_word_or_tag_missing_from_the_statistics_makes_a_query_rare() {
        let stats = stats();
        assert_eq!(stats.expected_matches(&s(&["common", "zyzzyva"]), &[]), 0.0);
        assert_eq!(
            stats.expected_matches(&s(&["common"]), &s(&["nobody"])),
            0.0
        );
        assert_eq!(
            WordStats::default().expected_matches(&s(&["common"]), &[]),
            0.0
        );
        assert_eq!(stats.expected_matches(&[], &s(&["everyone"])), 0.0);
    }
}
