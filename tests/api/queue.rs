//! The queue at the storage level: racing claimers, the claim plan, fencing and rescue.

use std::{collections::HashSet, time::Duration};

use orchestrator::{
    ids::JobId,
    model::{JobStatus, Mode, Principal},
    store::{Completion, CompletionStatus, FinishedAtOnce, InlineOutcome, NewJob, Store},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestDb, eventually};

pub(crate) async fn enqueue(store: &Store, n: usize) -> Vec<JobId> {
    enqueue_intent(store, "system.echo", &json!({}), 1000, n).await
}

/// `n` queued jobs of `intent` (agent mode) with `inputs`, each attempt allowed `timeout_ms`.
pub(crate) async fn enqueue_intent(
    store: &Store,
    intent: &str,
    inputs: &Value,
    timeout_ms: i32,
    n: usize,
) -> Vec<JobId> {
    let anonymous = Principal::anonymous();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = JobId::new();
        store
            .insert_job(
                &NewJob {
                    id,
                    intent,
                    mode: Mode::Agent,
                    requested_mode: Mode::Auto,
                    priority: 0,
                    max_attempts: 2,
                    attempt_timeout_ms: timeout_ms,
                    inputs,
                    callback_url: None,
                    request_id: None,
                    start_now: None,
                    lease_secs: 30.0,
                    principal: &anonymous,
                    run_at: None,
                    schedule_id: None,
                    concurrency_key: None,
                    concurrency_limit: None,
                },
                None,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn racing_claimers_never_claim_a_job_twice() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let ids = enqueue(&store, 600).await;

    let claimer = |owner: Uuid| {
        let store = store.clone();
        async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_jobs(owner, 7, 30.0).await.unwrap().jobs;
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        }
    };
    let (a, b, c, d) = tokio::join!(
        tokio::spawn(claimer(Uuid::now_v7())),
        tokio::spawn(claimer(Uuid::now_v7())),
        tokio::spawn(claimer(Uuid::now_v7())),
        tokio::spawn(claimer(Uuid::now_v7())),
    );
    let all: Vec<JobId> = [a, b, c, d].into_iter().flat_map(|r| r.unwrap()).collect();
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a job was handed out twice");
    assert_eq!(unique, ids.into_iter().collect::<HashSet<_>>());
    let claims =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM job_events WHERE kind = 'claimed'"#)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(claims, 600);
}

#[tokio::test]
async fn the_claim_query_uses_the_partial_index() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    enqueue(&store, 300).await;
    // Most rows are finished, as in a real table; only queued rows are in the partial index.
    sqlx::query!(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, attempt_timeout_ms,
                           inputs, finished_at)
         SELECT uuid_v7(), 'system.echo', 'agent', 'auto', 'succeeded', 1, 1000, '{}', now()
         FROM generate_series(1, 20000)"
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query!("ANALYZE jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    // The same selection the claim statement locks.
    let plan: Value = sqlx::query_scalar!(
        r#"EXPLAIN (FORMAT JSON)
           SELECT id FROM jobs
           WHERE status = 'queued' AND NOT parked AND run_at <= now()
           ORDER BY priority, run_at, id
           LIMIT 64
           FOR UPDATE SKIP LOCKED"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .expect("a plan");
    let text = plan.to_string();
    // Each partition of `jobs` is read through its piece of the partial claim index, in order.
    let claim_indexes: Vec<String> = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'jobs_claim_idx'::regclass"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let partitions_read = text.matches("\"Index Name\"").count();
    let through_claim_index = claim_indexes
        .iter()
        .filter(|name| text.contains(&format!("\"Index Name\":\"{name}\"")))
        .count();
    assert!(partitions_read >= 2, "plan: {text}");
    assert_eq!(through_claim_index, partitions_read, "plan: {text}");
    assert!(!text.contains("Seq Scan"), "plan: {text}");
    assert!(!text.contains("\"Sort\""), "no sort needed: {text}");
}

/// Waits until the job's lease has run out by the database's clock, the one `rescue_expired`
/// reads (`now()` is each statement's own here, so a later rescue sees the lease expired too).
async fn lease_runs_out(db: &TestDb, id: JobId) {
    let expired = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(lease_expires_at < now(), false) FROM jobs WHERE id = $1",
        )
        .bind(id.uuid())
        .fetch_one(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(expired, "the lease of job {id} did not run out");
}

fn done(id: JobId, attempt: i32) -> Completion {
    Completion {
        job_id: id,
        attempt,
        status: CompletionStatus::Succeeded,
        result: Some(json!({"by": attempt})),
        error_code: None,
        error_message: None,
        retry_at: None,
        callback_deadline: None,
    }
}

#[tokio::test]
async fn completion_is_fenced_on_the_lease_holder_and_attempt() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let [id] = enqueue(&store, 1).await[..] else {
        unreachable!()
    };
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();

    let claimed = store.claim_jobs(first, 1, 0.05).await.unwrap().jobs;
    assert_eq!(claimed[0].attempt, 1);
    // The first worker stalls past its lease; maintenance hands the job to another worker.
    lease_runs_out(&db, id).await;
    let (rescued, failed) = store.rescue_expired(10).await.unwrap();
    assert_eq!((rescued, failed.len()), (1, 0));
    let reclaimed = store.claim_jobs(second, 1, 30.0).await.unwrap().jobs;
    assert_eq!(reclaimed[0].attempt, 2);

    // The late finish of attempt 1 changes nothing.
    let late = store.complete_jobs(first, &[done(id, 1)]).await.unwrap();
    assert!(late.applied.is_empty());
    // Nor does a forged finish by the new holder for the old attempt.
    let wrong_attempt = store.complete_jobs(second, &[done(id, 1)]).await.unwrap();
    assert!(wrong_attempt.applied.is_empty());

    let ok = store.complete_jobs(second, &[done(id, 2)]).await.unwrap();
    assert_eq!(ok.applied, vec![id]);
    assert_eq!(ok.finished[0].status, JobStatus::Succeeded);
    let job = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.result, Some(json!({"by": 2})));
    assert_eq!(job.attempts, 2);

    // Completing twice is a no-op too.
    let again = store.complete_jobs(second, &[done(id, 2)]).await.unwrap();
    assert!(again.applied.is_empty());
}

#[tokio::test]
async fn rescue_fails_jobs_whose_attempts_are_spent() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let [id] = enqueue(&store, 1).await[..] else {
        unreachable!()
    };
    for attempt in 1..=2 {
        let c = store
            .claim_jobs(Uuid::now_v7(), 1, 0.01)
            .await
            .unwrap()
            .jobs;
        assert_eq!(c[0].attempt, attempt);
        lease_runs_out(&db, id).await;
        store.rescue_expired(10).await.unwrap();
    }
    let job = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some("lease_expired"));
    assert!(job.finished_at.is_some());
    let kinds: Vec<String> = store
        .job_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["created", "claimed", "rescued", "claimed", "rescued"]
    );
}

#[tokio::test]
async fn completions_in_one_batch_are_applied_together() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let ids = enqueue(&store, 50).await;
    let owner = Uuid::now_v7();
    let claimed = store.claim_jobs(owner, 50, 30.0).await.unwrap().jobs;
    assert_eq!(claimed.len(), 50);
    let batch: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, j)| Completion {
            status: if i % 2 == 0 {
                CompletionStatus::Succeeded
            } else {
                CompletionStatus::Retry
            },
            retry_at: (i % 2 == 1).then(|| chrono::Utc::now() + chrono::Duration::seconds(60)),
            error_code: (i % 2 == 1).then(|| "flaky".to_owned()),
            error_message: (i % 2 == 1).then(|| "try later".to_owned()),
            result: (i % 2 == 0).then(|| json!(i)),
            ..done(j.id, j.attempt)
        })
        .collect();
    let out = store.complete_jobs(owner, &batch).await.unwrap();
    assert_eq!(out.applied.len(), 50);
    assert_eq!(out.finished.len(), 25);
    let counts = sqlx::query!(
        r#"SELECT status AS "status: JobStatus", count(*) AS "n!" FROM jobs
           WHERE id = ANY($1) GROUP BY status ORDER BY status"#,
        &ids.iter().map(|i| i.uuid()).collect::<Vec<_>>()
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let counts: Vec<(JobStatus, i64)> = counts.into_iter().map(|r| (r.status, r.n)).collect();
    assert_eq!(
        counts,
        vec![(JobStatus::Queued, 25), (JobStatus::Succeeded, 25)]
    );
    // Retries wait for their time: nothing is claimable now.
    assert!(
        store
            .claim_jobs(owner, 50, 30.0)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
}

#[tokio::test]
async fn a_completion_batch_larger_than_one_notification_is_applied() {
    // NOTIFY payloads stop at 8000 bytes; 450 finished jobs need several notifications.
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    enqueue(&store, 450).await;
    let owner = Uuid::now_v7();
    let claimed = store.claim_jobs(owner, 450, 30.0).await.unwrap().jobs;
    let batch: Vec<Completion> = claimed.iter().map(|j| done(j.id, j.attempt)).collect();
    let out = store.complete_jobs(owner, &batch).await.unwrap();
    assert_eq!(out.finished.len(), 450);
}

#[tokio::test]
async fn the_database_notifies_on_the_channels_the_server_listens_to() {
    let db = crate::helpers::TestDb::new().await;
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE prosrc LIKE '%pg_notify%'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let known: Vec<&str> = orchestrator::store::Channel::ALL
        .iter()
        .map(|c| c.name())
        .collect();
    let mut named = 0;
    for source in &sources {
        for literal in source.split('\'').skip(1).step_by(2) {
            if literal.starts_with("orch_") {
                assert!(known.contains(&literal), "{literal} is not a Channel");
                named += 1;
            }
        }
    }
    assert!(
        named >= 2,
        "the notifying functions were found: {sources:?}"
    );
}

/// Statistics taken while the queue was empty, then a burst: planned by cost, the selection
/// reads every queued job of every partition and sorts them (Append + Sort); the claim plans
/// it with sorts forbidden, which leaves the ordered merge of the partitions' claim indexes.
#[tokio::test]
async fn the_claim_merges_partitions_in_order_even_with_statistics_of_an_empty_queue() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    enqueue(&store, 3000).await;
    let plan = |sorts: &'static str| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT set_config('enable_sort', $1, true)")
                .bind(sorts)
                .execute(&mut *tx)
                .await
                .unwrap();
            let plan: Value = sqlx::query_scalar(
                "EXPLAIN (FORMAT JSON)
                 SELECT id FROM jobs
                 WHERE status = 'queued' AND NOT parked AND run_at <= now()
                 ORDER BY priority, run_at, id LIMIT 64 FOR UPDATE SKIP LOCKED",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            plan.to_string()
        }
    };
    let by_cost = plan("on").await;
    assert!(by_cost.contains("\"Sort\""), "the hazard: {by_cost}");
    let claimed = plan("off").await;
    assert!(claimed.contains("Merge Append"), "{claimed}");
    assert!(!claimed.contains("\"Sort\""), "{claimed}");
    let claim = store.claim_jobs(Uuid::now_v7(), 64, 30.0).await.unwrap();
    assert_eq!(claim.jobs.len(), 64);
}

/// Index entries that the one connection of `pool` has read from the partitions of `index`
/// so far (its statistics flushed first, so the count includes its last statement).
async fn index_entries_read(pool: &sqlx::PgPool, index: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(sum(s.idx_tup_read), 0)::bigint
         FROM pg_stat_user_indexes s
         JOIN pg_inherits h ON h.inhrelid = s.indexrelid
         JOIN pg_class parent ON parent.oid = h.inhparent
         WHERE parent.relname = $1",
    )
    .bind(index)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The claim, the promotion of due scheduled jobs and the unparking of a hot key's jobs each
/// take a few rows in order from thousands. With statistics taken while `jobs` was empty, the
/// planner would read every matching row of every partition and sort them; these statements
/// must read only about the rows they take, from the partitions' indexes in order.
#[tokio::test]
async fn first_rows_statements_read_only_what_they_take_even_with_statistics_of_an_empty_table() {
    const ROWS: i64 = 20_000;
    let db = TestDb::new().await;
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    for (status, run_at, key, parked) in [
        ("queued", "now()", "NULL", "false"),
        ("scheduled", "now() - interval '1 second'", "NULL", "false"),
        ("queued", "now()", "'hot'", "true"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                               attempt_timeout_ms, inputs, principal, client_addr, run_at,
                               concurrency_key, concurrency_limit, parked)
             SELECT uuid_v7(), 'system.echo', 'agent', 'auto', '{status}', 0, 1, 1000, '{{}}',
                    'anonymous', '127.0.0.1', {run_at}, {key}, 1, {parked}
             FROM generate_series(1, $1)"
        ))
        .bind(ROWS)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO concurrency_slots (key, slot) VALUES ('hot', 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (one, store) = one_connection_store(&db.url).await;

    let before = index_entries_read(&one, "jobs_claim_idx").await;
    let claim = store.claim_jobs(Uuid::now_v7(), 64, 30.0).await.unwrap();
    assert_eq!(claim.jobs.len(), 64);
    let read = index_entries_read(&one, "jobs_claim_idx").await - before;
    assert!(read < 1_000, "the claim read {read} entries for 64 jobs");

    let before = index_entries_read(&one, "jobs_scheduled_idx").await;
    let promoted = store.promote_due_jobs(Uuid::now_v7(), 64).await.unwrap();
    assert_eq!(promoted, 64);
    let read = index_entries_read(&one, "jobs_scheduled_idx").await - before;
    assert!(
        read < 1_000,
        "the promotion read {read} entries for 64 jobs"
    );

    let before = index_entries_read(&one, "jobs_parked_idx").await;
    let unparked = store.unpark_jobs(10).await.unwrap();
    assert_eq!(unparked, 1);
    let read = index_entries_read(&one, "jobs_parked_idx").await - before;
    assert!(
        read < 1_000,
        "the unparking read {read} entries for one job"
    );

    // A claim finishing its jobs at once updates the rows it locked by their keys, without
    // reading the other queued ones through the status index.
    let before = index_entries_read(&one, "jobs_status_id_idx").await;
    let (mut claiming, candidates) = store
        .lock_due_jobs(64, &[("system.echo", Mode::Agent)])
        .await
        .unwrap();
    assert_eq!(candidates.len(), 64);
    let ran: Vec<FinishedAtOnce> = candidates
        .iter()
        .map(|c| FinishedAtOnce {
            id: c.id,
            outcome: InlineOutcome::Succeeded(json!({})),
            memory: None,
        })
        .collect();
    let finished = claiming.finish_at_once(Uuid::now_v7(), &ran).await.unwrap();
    assert_eq!(finished.len(), 64);
    claiming.lease(Uuid::now_v7(), 30.0, 0).await.unwrap();
    let read = index_entries_read(&one, "jobs_status_id_idx").await - before;
    assert!(
        read < 1_000,
        "finishing 64 jobs read {read} status-index entries"
    );
}

/// Succeeded jobs are most of the table and are not in the status index: a page of them walks
/// the primary key newest first, and the statuses the index keeps (failed here) are found
/// through it. Each reads about its page, not the 20,000 jobs.
#[tokio::test]
async fn listing_by_status_reads_about_a_page_whether_or_not_the_status_is_indexed() {
    const ROWS: i64 = 20_000;
    let db = TestDb::new().await;
    for (status, n) in [("failed", 3), ("succeeded", ROWS), ("failed", 2)] {
        sqlx::query(&format!(
            "INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                               attempt_timeout_ms, inputs, principal, client_addr, finished_at)
             SELECT uuid_v7(), 'system.echo', 'agent', 'auto', '{status}', 0, 1, 1000, '{{}}',
                    'anonymous', '127.0.0.1', now()
             FROM generate_series(1, $1)"
        ))
        .bind(n)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    let (one, store) = one_connection_store(&db.url).await;
    let by_status = |status| orchestrator::store::JobFilter {
        statuses: Some(vec![status]),
        limit: 50,
        ..Default::default()
    };

    let before = job_rows_read(&one).await;
    let page = store
        .list_jobs(&by_status(JobStatus::Succeeded))
        .await
        .unwrap();
    let read = job_rows_read(&one).await - before;
    assert_eq!(page.len(), 50);
    assert!(page.iter().all(|j| j.status == JobStatus::Succeeded));
    assert!(
        page.windows(2).all(|w| w[0].id.uuid() > w[1].id.uuid()),
        "newest first"
    );
    assert!(read < 1_000, "a page of succeeded jobs read {read} rows");

    let before = index_entries_read(&one, "jobs_status_id_idx").await;
    let failed = store
        .list_jobs(&by_status(JobStatus::Failed))
        .await
        .unwrap();
    let read = index_entries_read(&one, "jobs_status_id_idx").await - before;
    assert_eq!(failed.len(), 5);
    assert!(
        (1..=10).contains(&read),
        "the failed jobs were read through the status index ({read} entries)"
    );
}

/// Rows of `jobs` that the one connection of `pool` has read so far, by scans and through
/// indexes alike.
async fn job_rows_read(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(sum(s.seq_tup_read + COALESCE(s.idx_tup_fetch, 0)), 0)::bigint
         FROM pg_stat_user_tables s
         JOIN pg_inherits h ON h.inhrelid = s.relid
         WHERE h.inhparent = 'jobs'::regclass",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A store on a pool of one connection, so that the connection's statistics are its
/// statements' own.
async fn one_connection_store(url: &str) -> (sqlx::PgPool, Store) {
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    (one.clone(), Store::new(one))
}

/// The server's sessions never JIT-compile: with PostgreSQL's default `jit = on`, the claim
/// that finishes a batch of jobs spent almost all of its time compiling on every call.
#[tokio::test]
async fn the_servers_sessions_run_without_jit() {
    let db = TestDb::new().await;
    // Whatever the cluster's configuration, new sessions of this database default to JIT on
    // (PostgreSQL's own default), so the assertion is about what the server does.
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE \"{name}\" SET jit = on"))
        .execute(&db.pool)
        .await
        .unwrap();
    let fresh = one_connection_store(&db.url).await.0;
    let default: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&fresh)
        .await
        .unwrap();
    let config = orchestrator::db::DatabaseConfig {
        url: Some(db.url.clone()),
        embedded: false,
        ..Default::default()
    };
    let database = orchestrator::db::connect(
        &config,
        false,
        orchestrator::db::embedded::ClusterUser::Command,
    )
    .await
    .unwrap();
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(
        (default.as_str(), jit.as_str()),
        ("on", "off"),
        "the server's default and the server's sessions"
    );
}
