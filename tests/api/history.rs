//! Partitioned history: retention drops whole partitions of `jobs` and `audit_events`, only
//! expired ones, each drop recorded in the audit trail; and the migration that partitions an
//! existing database keeps every row.

use std::borrow::Cow;

use chrono::{DateTime, Duration, DurationRound, Utc};
use orchestrator::{
    db::MIGRATOR,
    store::Store,
    worker::{HistorySettings, keep_history},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Spawn, TestDb, job_id, spawn};

const SETTINGS: HistorySettings = HistorySettings {
    partition_days: 7,
    jobs_days: 30,
    audit_days: 60,
};

fn uuid_of(job: &str) -> Uuid {
    Uuid::parse_str(job.trim_start_matches("job_")).unwrap()
}

async fn partitions(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar!(
        "SELECT name FROM history_partitions WHERE parent = $1 ORDER BY until_at",
        table
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn drops_recorded(pool: &PgPool) -> Vec<(String, Value)> {
    sqlx::query!(
        r#"SELECT target AS "target!", detail AS "detail!" FROM audit_events
           WHERE kind = 'retention.dropped' AND actor_kind = 'maintenance' ORDER BY id"#
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.target, r.detail))
    .collect()
}

async fn events_of(pool: &PgPool, job: Uuid) -> i64 {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_events WHERE job_id = $1"#,
        job
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The clock moves in the test, not in the database: retention runs as of days ahead. The
/// rollups read the database's own clock, so moving their watermark stands in for the
/// rollups of the days skipped.
async fn rolled_up_until(pool: &PgPool, at: DateTime<Utc>) {
    sqlx::query!(
        "UPDATE rollup_watermarks SET upto = $1 WHERE name = 'jobs'",
        at
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn expired_partitions_leave_whole_and_each_drop_is_recorded_in_the_trail() {
    let app = spawn(Spawn::default()).await;
    let pool = app.pool().clone();
    let store = Store::new(pool.clone());
    let mut finished = Vec::new();
    for n in 0..3 {
        let (status, body) = app
            .orchestrate_json(json!({"intent": "system.echo", "inputs": {"n": n}}))
            .await;
        assert_eq!(status, 200, "{body}");
        finished.push(job_id(&body));
    }
    // A job not due for 90 days: its partition must stay however old the partition is.
    let waiting = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                           attempt_timeout_ms, inputs, run_at)
         VALUES ($1, 'system.echo', 'agent', 'auto', 'scheduled', 1, 1000, '{}',
                 now() + interval '90 days')",
        waiting
    )
    .execute(&pool)
    .await
    .unwrap();
    let now = Utc::now();
    let jobs_before = partitions(&pool, "jobs").await;
    assert_eq!(jobs_before[0], "jobs_p_initial");

    // 60 days on: the first jobs partition is past 30 days, but one of its jobs has not run.
    // (The partitions made ahead of today are past 30 days too, and empty: they go.)
    let report = keep_history(&store, &SETTINGS, now + Duration::days(60)).await;
    assert!(
        report
            .dropped
            .iter()
            .all(|(name, rows)| name != "jobs_p_initial" && *rows == 0),
        "{:?}",
        report.dropped
    );
    assert!(
        report.partitions_made >= 2,
        "partitions made ahead of the clock, for both tables: {}",
        report.partitions_made
    );
    let covered: DateTime<Utc> = sqlx::query_scalar!(
        r#"SELECT min(until_at) AS "until!" FROM (
               SELECT parent, max(until_at) AS until_at FROM history_partitions GROUP BY parent) t"#
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(covered >= now + Duration::days(60 + 14));
    // The partitions made here have the storage settings of the newest one's indexes: room in
    // the leaves that a job's later versions and events go back to.
    let without_room: Vec<String> = sqlx::query_scalar(
        "SELECT i.inhrelid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('jobs_pkey'::regclass, 'jobs_intent_id_idx'::regclass,
                               'audit_events_job_idx'::regclass)
           AND c.reloptions IS DISTINCT FROM ARRAY['fillfactor=50']",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(without_room.is_empty(), "{without_room:?}");
    let made: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'jobs_pkey'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        made as usize > jobs_before.len(),
        "new partitions were made: {made}"
    );

    // Detached, checked and kept, even when asked for directly: the trail records no drop.
    let initial = store
        .history_partitions()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.table == "jobs")
        .unwrap();
    assert_eq!(
        (initial.name.as_str(), initial.from),
        ("jobs_p_initial", None)
    );
    let kept = store
        .drop_history_partition(&initial, 30, now + Duration::days(60))
        .await
        .unwrap();
    assert_eq!(kept, None);
    assert_eq!(partitions(&pool, "jobs").await[0], "jobs_p_initial");
    assert!(
        drops_recorded(&pool)
            .await
            .iter()
            .all(|(target, _)| target != "jobs_p_initial")
    );

    let (status, body) = app
        .post_json(&format!("/jobs/job_{}/cancel", waiting.simple()), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let report = keep_history(&store, &SETTINGS, now + Duration::days(60)).await;
    assert_eq!(report.dropped, vec![("jobs_p_initial".to_owned(), 4)]);
    for job in &finished {
        let (status, _) = app.get_json(&format!("/jobs/{job}")).await;
        assert_eq!(status, 404, "{job} left with its partition");
        assert!(
            events_of(&pool, uuid_of(job)).await >= 2,
            "its history stays for audit_days"
        );
    }
    let drops: Vec<_> = drops_recorded(&pool)
        .await
        .into_iter()
        .filter(|(target, _)| target == "jobs_p_initial")
        .collect();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].1["table"], "jobs");
    assert_eq!(drops[0].1["rows"], 4);
    assert_eq!(drops[0].1["rows_exact"], true);
    assert!(drops[0].1["until"].is_string());

    // 90 days on the trail's first partition is past 60 days, but not yet rolled up.
    let report = keep_history(&store, &SETTINGS, now + Duration::days(90)).await;
    assert!(
        report
            .dropped
            .iter()
            .all(|(name, _)| name.starts_with("jobs_")),
        "{:?}",
        report.dropped
    );
    rolled_up_until(&pool, now + Duration::days(90)).await;
    let report = keep_history(&store, &SETTINGS, now + Duration::days(90)).await;
    let audit_drop: Vec<_> = report
        .dropped
        .iter()
        .filter(|(name, _)| name == "audit_events_p_initial")
        .collect();
    assert_eq!(audit_drop.len(), 1, "{:?}", report.dropped);
    assert!(audit_drop[0].1 >= 3 * 2, "the events of the jobs, at least");
    assert_eq!(events_of(&pool, uuid_of(&finished[0])).await, 0);
    // The record of the jobs partition's drop is younger than 60 days at that time: it stays,
    // and so does the record of this drop.
    let drops: Vec<String> = drops_recorded(&pool)
        .await
        .into_iter()
        .map(|(target, _)| target)
        .collect();
    assert!(drops.contains(&"jobs_p_initial".to_owned()), "{drops:?}");
    assert!(
        drops.contains(&"audit_events_p_initial".to_owned()),
        "{drops:?}"
    );
    assert!(
        !partitions(&pool, "audit_events")
            .await
            .contains(&"audit_events_p_initial".to_owned())
    );

    // Dropping partitions is the only way out: rows and partitions still refuse it.
    let refused = sqlx::query!("DELETE FROM audit_events WHERE kind = 'retention.dropped'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let newest = partitions(&pool, "audit_events").await.pop().unwrap();
    let refused = sqlx::query(&format!("TRUNCATE {newest}"))
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}

#[tokio::test]
async fn retention_keeps_everything_by_default() {
    let app = spawn(Spawn::default()).await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let store = Store::new(app.pool().clone());
    // The server made its partitions at start: two lengths (30 days by default) ahead.
    let ahead = store.history_partitions_ahead(Utc::now()).await.unwrap();
    assert!(ahead > 59.0 * 86_400.0, "{ahead} s ahead");
    rolled_up_until(app.pool(), Utc::now() + Duration::days(3650)).await;
    let keep_all = HistorySettings {
        partition_days: 7,
        jobs_days: 0,
        audit_days: 0,
    };
    let report = keep_history(&store, &keep_all, Utc::now() + Duration::days(3650)).await;
    assert!(report.dropped.is_empty());
    assert_eq!(partitions(app.pool(), "jobs").await[0], "jobs_p_initial");
    let (status, _) = app.get_json(&format!("/jobs/{}", job_id(&body))).await;
    assert_eq!(status, 200);
}

/// Applies the migrations before the partitioning one: the database as an earlier release
/// left it.
async fn migrated_before_partitioning(db: &TestDb) {
    let earlier = orchestrator::db::MIGRATOR
        .iter()
        .filter(|m| m.version < 20261209000000)
        .cloned()
        .collect::<Vec<_>>();
    let migrator = sqlx::migrate::Migrator {
        migrations: Cow::Owned(earlier),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator.run(&db.pool).await.unwrap();
}

#[tokio::test]
async fn partitioning_an_existing_database_keeps_every_row_view_key_and_trigger() {
    let db = TestDb::empty().await;
    migrated_before_partitioning(&db).await;
    let pool = &db.pool;
    // 2,000 finished jobs over the last 20 days with their events, one queued job holding a
    // rate reservation, one running job with a callback URL.
    sqlx::query(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                           attempt_timeout_ms, inputs, created_at, finished_at, duration_ms)
         SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
                 || substr(md5(i::text), 1, 19))::uuid,
                'system.echo', 'agent', 'auto', 'succeeded', 1, 1000, '{}', t, t, 1
         FROM generate_series(1, 2000) i,
              LATERAL (SELECT now() - make_interval(mins => i * 14) AS t) s",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_events (at, job_id, intent, mode, kind, to_status, actor_kind)
         SELECT created_at, id, intent, mode, 'created', 'queued'::job_status, 'anonymous' FROM jobs
         UNION ALL
         SELECT finished_at, id, intent, mode, 'succeeded', 'succeeded'::job_status, 'instance'
         FROM jobs",
    )
    .execute(pool)
    .await
    .unwrap();
    let (queued, running) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                           attempt_timeout_ms, inputs, lease_owner, callback_url)
         VALUES ($1, 'system.echo', 'agent', 'auto', 'queued', 1, 1000, '{}', NULL, NULL),
                ($2, 'system.echo', 'agent', 'auto', 'running', 1, 1000, '{}',
                 gen_random_uuid(), 'https://example.com/hook')",
    )
    .bind(queued)
    .bind(running)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO rate_reservations (job_id, slot) VALUES ($1, now())")
        .bind(queued)
        .execute(pool)
        .await
        .unwrap();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    const VIEWS: [&str; 4] = [
        "SELECT count(*) FROM job_events",
        "SELECT count(*) FROM report_backlog",
        "SELECT count(*) FROM callback_audits",
        "SELECT count(*) FROM report_ssh_commands",
    ];
    let mut before = vec![
        count("SELECT count(*) FROM jobs").await,
        count("SELECT count(*) FROM audit_events").await,
    ];
    for view in VIEWS {
        before.push(count(view).await);
    }
    let last_event = count("SELECT max(id) FROM audit_events").await;

    MIGRATOR
        .run(pool)
        .await
        .expect("the partitioning migration applies");

    let mut after = vec![
        count("SELECT count(*) FROM jobs").await,
        count("SELECT count(*) FROM audit_events").await,
    ];
    for view in VIEWS {
        after.push(count(view).await);
    }
    assert_eq!(after, before);
    assert_eq!(
        count("SELECT count(*) FROM pg_class WHERE relname IN ('jobs', 'audit_events') AND relkind = 'p'")
            .await,
        2
    );
    assert_eq!(count("SELECT count(*) FROM jobs_p_initial").await, 2002);
    // Every index of the old tables was attached to its partitioned one, none built twice.
    for (table, partition) in [
        ("jobs", "jobs_p_initial"),
        ("audit_events", "audit_events_p_initial"),
    ] {
        let parent_indexes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass")
                .bind(table)
                .fetch_one(pool)
                .await
                .unwrap();
        let attached: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
             WHERE i.indrelid = $1::regclass",
        )
        .bind(partition)
        .fetch_one(pool)
        .await
        .unwrap();
        let all: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass")
                .bind(partition)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!((attached, all), (parent_indexes, parent_indexes), "{table}");
    }
    // The trail's ids go on from where they were.
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (kind, actor_kind) VALUES ('created', 'anonymous') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(next, last_event + 1);
    // The foreign key now points at the partitioned table.
    let orphan = sqlx::query("INSERT INTO rate_reservations (job_id, slot) VALUES ($1, now())")
        .bind(Uuid::now_v7())
        .execute(pool)
        .await
        .unwrap_err();
    assert!(orphan.to_string().contains("foreign key"), "{orphan}");
    // Triggers fire once per change, not once from the old table and once from the new one.
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, finished_at = now()
         WHERE id = $1",
    )
    .bind(running)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(
        count("SELECT count(*) FROM callback_deliveries").await,
        1,
        "one delivery for the finished job"
    );
    // A job filed a week from now falls into a partition of its own time.
    let later: String = sqlx::query_scalar(
        "INSERT INTO jobs (id, intent, mode, requested_mode, max_attempts, attempt_timeout_ms,
                           inputs)
         VALUES (uuid_v7(now() + interval '3 days'), 'system.echo', 'agent', 'auto', 1, 1000,
                 '{}')
         RETURNING tableoid::regclass::text",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(later.starts_with("jobs_p2"), "{later}");
}

#[tokio::test]
async fn partition_ddl_does_not_hold_the_queue_behind_it() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    // A transaction in flight on both tables, as claims and completions always are.
    let mut busy = db.pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM jobs")
        .execute(&mut *busy)
        .await
        .unwrap();
    sqlx::query("INSERT INTO audit_events (kind, actor_kind) VALUES ('created', 'anonymous')")
        .execute(&mut *busy)
        .await
        .unwrap();

    // Making partitions takes a lock that statements pass: it does not wait for this one.
    let now = Utc::now();
    let started = std::time::Instant::now();
    let made = store
        .ensure_history_partitions(30, now, now + Duration::days(120))
        .await
        .unwrap();
    assert!(made >= 2 * 3, "made {made}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
         JOIN history_partitions p ON i.indrelid = p.name::regclass
         WHERE p.parent = 'jobs' AND p.from_at > now() + interval '60 days'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        indexes >= 11,
        "the parent's indexes are made on each partition: {indexes}"
    );

    // Dropping needs a table to itself: it gives up at once rather than queue every new
    // statement behind it, and goes through once the table is free.
    let expired = HistorySettings {
        partition_days: 30,
        jobs_days: 1,
        audit_days: 0,
    };
    let later = now + Duration::days(400);
    // (The clock moves on 400 days: the drop is recorded in a partition of that time.)
    store
        .ensure_history_partitions(30, later, later + Duration::days(60))
        .await
        .unwrap();
    let candidates = store
        .expired_history_partitions(expired.jobs_days, expired.audit_days, later)
        .await
        .unwrap();
    let empty = candidates
        .iter()
        .find(|p| p.table == "jobs" && p.from.is_some())
        .expect("an expired, empty partition of jobs")
        .clone();
    let started = std::time::Instant::now();
    assert_eq!(
        store
            .drop_history_partition(&empty, expired.jobs_days, later)
            .await
            .unwrap(),
        None
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    busy.commit().await.unwrap();
    assert_eq!(
        store
            .drop_history_partition(&empty, expired.jobs_days, later)
            .await
            .unwrap(),
        Some(0)
    );
}

/// The late-finish check keys its index by the hour a job finished in; whether a job is past
/// retention is still decided to the instant, in the listing and again after DETACH.
#[tokio::test]
async fn a_job_finished_after_the_cut_keeps_its_partition_to_the_second() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let hour = |t: DateTime<Utc>| t.duration_trunc(Duration::hours(1)).unwrap();
    // Half past an hour, so a second either side of the cut is the same hour.
    let later = hour(Utc::now() + Duration::days(60)) + Duration::minutes(30);
    let cut = later - Duration::days(SETTINGS.jobs_days.into());
    store
        .ensure_history_partitions(30, later, later + Duration::days(60))
        .await
        .unwrap();
    // Created at the epoch (its id's time), so in the first partition; finished a second
    // after the cut.
    let job = Uuid::parse_str("00000000-0000-7000-8000-000000000001").unwrap();
    sqlx::query!(
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                           attempt_timeout_ms, inputs, created_at, finished_at)
         VALUES ($1, 'system.echo', 'agent', 'auto', 'succeeded', 1, 1000, '{}',
                 now(), $2)",
        job,
        cut + Duration::seconds(1),
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let initial_listed = || async {
        store
            .expired_history_partitions(SETTINGS.jobs_days, 0, later)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "jobs_p_initial")
    };
    let initial = store
        .history_partitions()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "jobs_p_initial")
        .unwrap();

    assert_eq!(initial_listed().await, None);
    assert_eq!(
        store
            .drop_history_partition(&initial, SETTINGS.jobs_days, later)
            .await
            .unwrap(),
        None,
        "checked again after DETACH, and kept"
    );
    assert_eq!(partitions(&db.pool, "jobs").await[0], "jobs_p_initial");

    sqlx::query!(
        "UPDATE jobs SET finished_at = $2 WHERE id = $1",
        job,
        cut - Duration::seconds(1),
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(initial_listed().await.as_ref(), Some(&initial));
    assert_eq!(
        store
            .drop_history_partition(&initial, SETTINGS.jobs_days, later)
            .await
            .unwrap(),
        Some(1)
    );
    assert_ne!(partitions(&db.pool, "jobs").await[0], "jobs_p_initial");
}
