//! The reporting views on a seeded data set, the rollup they read, and payload retention.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use orchestrator::{model::JobStatus, store::Store};

use crate::helpers::{TestDb, eventually, spawn};

/// Yesterday, 00:00 UTC: every seeded job finished that day.
fn seeded_day() -> (NaiveDate, DateTime<Utc>) {
    let day = (Utc::now() - chrono::Duration::days(1)).date_naive();
    (day, day.and_hms_opt(0, 0, 0).unwrap().and_utc())
}

/// memory.write: 100 jobs lasting 10, 20, … 1000 ms; 90 succeeded, 8 failed, 2 timed out; the
/// first 10 took two attempts. gmail.triage: 20 jobs lasting 1, 2, … 20 s, all succeeded. Each
/// with the final event the server records when a job ends (the rollups read those).
async fn seed_finished_jobs(db: &TestDb, midnight: DateTime<Utc>) {
    sqlx::query!(
        r#"
        INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                          attempt_timeout_ms, inputs, attempts, created_at, started_at,
                          finished_at, duration_ms)
        SELECT uuid_v7(), 'memory.write', 'agent'::job_mode, 'auto'::job_mode,
               CASE WHEN i <= 90 THEN 'succeeded' WHEN i <= 98 THEN 'failed'
                    ELSE 'timed_out' END::job_status,
               3, 10000, '{}'::jsonb, CASE WHEN i <= 10 THEN 2 ELSE 1 END,
               f - make_interval(secs => i * 10 / 1000.0), f - make_interval(secs => i * 10 / 1000.0),
               f, i * 10
        FROM generate_series(1, 100) i,
             LATERAL (SELECT $1::timestamptz + make_interval(hours => 10, secs => i) AS f) t
        UNION ALL
        SELECT uuid_v7(), 'gmail.triage', 'flow', 'auto', 'succeeded', 3, 30000, '{}', 1,
               f - make_interval(secs => i), f - make_interval(secs => i), f, i * 1000
        FROM generate_series(1, 20) i,
             LATERAL (SELECT $1::timestamptz + make_interval(hours => 14, secs => i) AS f) t
        "#,
        midnight
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query!(
        r#"
        INSERT INTO audit_events (at, kind, job_id, intent, mode, from_status, to_status, attempt,
                                  duration_ms, actor_kind)
        SELECT finished_at, status::text, id, intent, mode, 'running', status, attempts,
               duration_ms, 'instance'
        FROM jobs ORDER BY finished_at
        "#
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

fn close_to(actual: i64, exact: i64) -> bool {
    // The histogram's buckets are 10 % wide: its percentiles are within ±5 % of the truth.
    ((actual - exact).abs() as f64) <= 0.05 * exact as f64 + 1.0
}

#[tokio::test]
async fn job_reports_count_rates_and_percentiles_from_the_rollup() {
    let db = TestDb::new().await;
    let (day, midnight) = seeded_day();
    seed_finished_jobs(&db, midnight).await;
    let store = Store::new(db.pool.clone());
    assert_eq!(store.roll_up_finished_jobs().await.unwrap(), Some(120));
    assert_eq!(
        store.roll_up_finished_jobs().await.unwrap(),
        Some(0),
        "nothing counted twice"
    );

    let daily = sqlx::query!(
        r#"SELECT intent AS "intent!", mode::text AS "mode!", status::text AS "status!", jobs AS "jobs!"
           FROM report_jobs_daily WHERE day = $1 ORDER BY intent, status"#,
        day
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let daily: Vec<(String, String, String, i64)> = daily
        .into_iter()
        .map(|r| (r.intent, r.mode, r.status, r.jobs))
        .collect();
    let row = |i: &str, m: &str, s: &str, n: i64| (i.to_owned(), m.to_owned(), s.to_owned(), n);
    assert_eq!(
        daily,
        [
            row("gmail.triage", "flow", "succeeded", 20),
            row("memory.write", "agent", "succeeded", 90),
            row("memory.write", "agent", "failed", 8),
            row("memory.write", "agent", "timed_out", 2),
        ]
    );

    let rates = sqlx::query!(
        r#"SELECT jobs AS "jobs!", failed AS "failed!", failure_rate::float8 AS "failure_rate!",
                  retried_jobs AS "retried!", retry_rate::float8 AS "retry_rate!",
                  attempts_per_job::float8 AS "attempts_per_job!"
           FROM report_failure_rates_daily WHERE day = $1 AND intent = 'memory.write'"#,
        day
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((rates.jobs, rates.failed, rates.retried), (100, 10, 10));
    assert_eq!(rates.failure_rate, 0.1);
    assert_eq!(rates.retry_rate, 0.1);
    assert_eq!(rates.attempts_per_job, 1.1);

    let percentiles = sqlx::query!(
        r#"SELECT intent AS "intent!", jobs AS "jobs!", p50_ms AS "p50!", p95_ms AS "p95!",
                  p99_ms AS "p99!"
           FROM report_duration_percentiles($1::timestamptz, $1::timestamptz + interval '1 day')"#,
        midnight
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(percentiles.len(), 2);
    let (gmail, memory) = (&percentiles[0], &percentiles[1]);
    assert_eq!((gmail.intent.as_str(), gmail.jobs), ("gmail.triage", 20));
    assert!(
        close_to(gmail.p50, 10_000) && close_to(gmail.p95, 19_000) && close_to(gmail.p99, 20_000),
        "gmail: {} {} {}",
        gmail.p50,
        gmail.p95,
        gmail.p99
    );
    assert_eq!((memory.intent.as_str(), memory.jobs), ("memory.write", 100));
    assert!(
        close_to(memory.p50, 500) && close_to(memory.p95, 950) && close_to(memory.p99, 990),
        "memory: {} {} {}",
        memory.p50,
        memory.p95,
        memory.p99
    );

    let by_day = sqlx::query!(
        r#"SELECT p50_ms AS "p50!", jobs AS "jobs!" FROM report_durations_daily
           WHERE day = $1 AND intent = 'memory.write'"#,
        day
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((by_day.p50, by_day.jobs), (memory.p50, 100));
    let outside = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM report_duration_percentiles($1::timestamptz - interval '1 day', $1::timestamptz)"#,
        midnight
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(outside, 0, "the period bounds the report");
}

#[tokio::test]
async fn callback_ssh_and_backlog_reports() {
    let db = TestDb::new().await;
    let (day, midnight) = seeded_day();
    sqlx::query!(
        r#"
        INSERT INTO audit_events (at, kind, outcome, target, target_host, duration_ms, attempt)
        SELECT $1::timestamptz + make_interval(hours => 9, secs => i), 'callback.out',
               CASE WHEN i <= 6 THEN 'delivered' WHEN i = 7 THEN 'retry' ELSE 'exhausted' END,
               'https://a.example/hook', 'a.example', i * 100, 1
        FROM generate_series(1, 8) i
        UNION ALL
        SELECT $1::timestamptz + make_interval(hours => 9, secs => 100 + i), 'callback.out', 'delivered',
               'https://b.example/hook', 'b.example', i * 100 - 50, 1
        FROM generate_series(1, 2) i
        "#,
        midnight
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let hosts = sqlx::query!(
        r#"SELECT host AS "host!", attempts AS "attempts!", delivered AS "delivered!",
                  given_up AS "given_up!", success_rate::float8 AS "rate!", p50_ms AS "p50!"
           FROM report_callback_delivery_daily WHERE day = $1 ORDER BY host"#,
        day
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(
        (
            hosts[0].host.as_str(),
            hosts[0].attempts,
            hosts[0].delivered,
            hosts[0].given_up
        ),
        ("a.example", 8, 6, 1)
    );
    assert_eq!(hosts[0].rate, 0.75);
    assert_eq!(hosts[0].p50, 450.0);
    assert_eq!(
        (hosts[1].host.as_str(), hosts[1].rate, hosts[1].p50),
        ("b.example", 1.0, 100.0)
    );

    sqlx::query!(
        r#"
        WITH ran AS (SELECT gen_random_uuid() AS job)
        INSERT INTO audit_events (at, kind, outcome, actor_kind, actor_name, target, job_id,
                                  attempt, detail)
        SELECT $1::timestamptz + interval '11 hours', 'ssh.run', 'run', 'api_key', 'alice',
               'web-1', job, 1,
               '{"host":"web-1","command":"uptime","argv":["uptime"],"decision":"run"}'::jsonb
        FROM ran
        UNION ALL
        SELECT $1::timestamptz + interval '11 hours 1 second', 'ssh.exit', 'ran', 'api_key',
               'alice', 'web-1', job, 1,
               '{"host":"web-1","command":"uptime","decision":"ran","exit_code":0}'::jsonb
        FROM ran
        UNION ALL
        SELECT $1::timestamptz + interval '12 hours', 'ssh.dry_run', 'dry_run', 'api_key', 'bob',
               'db-1', gen_random_uuid(), 1,
               '{"host":"db-1","command":"rm -rf /","argv":["rm","-rf","/"],"decision":"dry_run","reasons":["recursive rm of /"]}'::jsonb
        "#,
        midnight
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let ssh = sqlx::query!(
        r#"SELECT principal, host, command, decision, reason, exit_code
           FROM report_ssh_commands WHERE at >= $1 ORDER BY at"#,
        midnight
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(ssh.len(), 2);
    assert_eq!(
        (
            ssh[0].principal.as_deref(),
            ssh[0].host.as_deref(),
            ssh[0].command.as_deref()
        ),
        (Some("alice"), Some("web-1"), Some("uptime"))
    );
    assert_eq!(
        (ssh[0].decision.as_deref(), ssh[0].exit_code),
        (Some("run"), Some(0))
    );
    assert_eq!(
        (ssh[1].principal.as_deref(), ssh[1].decision.as_deref()),
        (Some("bob"), Some("dry_run"))
    );
    assert_eq!(ssh[1].reason.as_deref(), Some("recursive rm of /"));

    sqlx::query!(
        r#"
        INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                          attempt_timeout_ms, inputs, created_at, run_at, lease_owner,
                          lease_expires_at, callback_deadline_at, attempts)
        VALUES (uuid_v7(), 'memory.write', 'agent', 'auto', 'queued', 3, 1000, '{}',
                now() - interval '20 minutes', now() - interval '10 minutes', NULL, NULL, NULL, 0),
               (uuid_v7(), 'memory.write', 'agent', 'auto', 'queued', 3, 1000, '{}',
                now(), now(), NULL, NULL, NULL, 0),
               (uuid_v7(), 'memory.write', 'agent', 'auto', 'running', 3, 1000, '{}',
                now() - interval '1 hour', now(), gen_random_uuid(), now() - interval '1 minute', NULL, 1),
               (uuid_v7(), 'memory.write', 'agent', 'auto', 'running', 3, 1000, '{}',
                now(), now(), gen_random_uuid(), now() + interval '1 minute', NULL, 1),
               (uuid_v7(), 'gmail.triage', 'flow', 'auto', 'awaiting_callback', 3, 1000,
                '{}', now() - interval '2 hours', now(), NULL, NULL, now() - interval '1 hour', 1)
        "#
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let backlog = sqlx::query!(
        r#"SELECT status::text AS "status!", intent AS "intent!", jobs AS "jobs!", stuck AS "stuck!",
                  extract(epoch FROM oldest_age)::float8 AS "oldest_age_secs!"
           FROM report_backlog ORDER BY status, intent"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let summary: Vec<(String, i64, i64)> = backlog
        .iter()
        .map(|r| (r.status.clone(), r.jobs, r.stuck))
        .collect();
    assert_eq!(
        summary,
        [
            ("queued".to_owned(), 2, 1),
            ("running".to_owned(), 2, 1),
            ("awaiting_callback".to_owned(), 1, 1),
        ]
    );
    assert!(
        backlog[0].oldest_age_secs >= 590.0,
        "the oldest queued job waits since its run_at"
    );
}

#[tokio::test]
async fn retention_drops_old_payloads_and_keeps_reporting_columns() {
    let db = TestDb::new().await;
    sqlx::query!(
        r#"
        INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                          attempt_timeout_ms, inputs, result, attempts, created_at, finished_at,
                          duration_ms)
        VALUES ('00000000-0000-7000-8000-000000000001', 'memory.write', 'agent', 'auto',
                'succeeded', 3, 1000, '{"text":"old secret"}', '{"item_id":"x"}', 1,
                now() - interval '3 days', now() - interval '3 days', 42),
               ('00000000-0000-7000-8000-000000000002', 'memory.write', 'agent', 'auto',
                'succeeded', 3, 1000, '{"text":"recent"}', '{"item_id":"y"}', 1,
                now() - interval '1 hour', now() - interval '1 hour', 7)
        "#
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let _app = spawn(crate::helpers::Spawn {
        db: Some(db.clone()),
        configure: Box::new(|c| c.retention.payload_days = 2),
        ..Default::default()
    })
    .await;
    let purged = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar!(
            r#"SELECT payload_purged_at IS NOT NULL AS "p!" FROM jobs
               WHERE id = '00000000-0000-7000-8000-000000000001'"#
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(purged);
    let rows = sqlx::query!(
        r#"SELECT inputs, result, status::text AS "status!", duration_ms, intent FROM jobs ORDER BY id"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows[0].inputs, serde_json::json!({}));
    assert_eq!(rows[0].result, None);
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].duration_ms,
            rows[0].intent.as_str()
        ),
        ("succeeded", Some(42), "memory.write")
    );
    assert_eq!(
        rows[1].inputs,
        serde_json::json!({"text": "recent"}),
        "recent payloads stay"
    );
}

#[tokio::test]
async fn finished_in_the_last_day_counts_to_the_minute() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    // Final events a minute inside the day, hours inside it and a minute ago, and one a
    // minute outside it: usually in the same hour as the day's start, which the rollups fold
    // whole, so the instant decides only if that hour is read from the trail.
    sqlx::query!(
        r#"
        INSERT INTO audit_events (at, kind, job_id, intent, mode, from_status, to_status,
                                  attempt, duration_ms, actor_kind)
        SELECT at, s, uuid_v7(at), 'system.echo', 'agent', 'running', s::job_status, 1, 5,
               'instance'
        FROM (VALUES (now() - interval '23 hours 59 minutes', 'succeeded'),
                     (now() - interval '5 hours', 'failed'),
                     (now() - interval '20 seconds', 'succeeded'),
                     (now() - interval '24 hours 1 minute', 'failed')) AS t(at, s)
        ORDER BY at
        "#
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let counted = || async {
        let mut finished = store.finished_since(24.0).await.unwrap();
        finished.sort_by_key(|(status, _)| format!("{status:?}"));
        finished
    };
    let expected = vec![(JobStatus::Failed, 1), (JobStatus::Succeeded, 2)];
    // Before the rollups have run (all from the trail) and after (hours from the rollups).
    assert_eq!(counted().await, expected);
    assert_eq!(store.roll_up_finished_jobs().await.unwrap(), Some(3));
    assert_eq!(counted().await, expected);
}

#[tokio::test]
async fn payload_retention_walks_each_job_once_and_sets_aside_those_not_yet_due() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let now = Utc::now();
    let days_ago = now - chrono::Duration::days(3);
    // 1,200 jobs created and finished three days ago; one created then and still queued; one
    // created then that finished an hour ago; one created a minute ago.
    sqlx::query!(
        r#"
        INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts,
                          attempt_timeout_ms, inputs, result, created_at, finished_at)
        SELECT uuid_v7(t), 'system.echo', 'agent', 'auto', s::job_status, 1, 1000,
               '{"secret": 1}', CASE WHEN f IS NULL THEN NULL ELSE '{"secret": 1}'::jsonb END,
               t, f
        FROM (SELECT $1::timestamptz + make_interval(secs => i) AS t,
                     $1::timestamptz + make_interval(secs => i + 1) AS f, 'succeeded' AS s
              FROM generate_series(1, 1200) i
              UNION ALL
              SELECT $1::timestamptz + interval '2000 seconds', NULL, 'queued'
              UNION ALL
              SELECT $1::timestamptz + interval '3000 seconds', $2::timestamptz - interval '1 hour',
                     'succeeded'
              UNION ALL
              SELECT $2::timestamptz - interval '1 minute', $2::timestamptz, 'succeeded') AS jobs
        "#,
        days_ago,
        now,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let with_payload = || async {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs WHERE payload_purged_at IS NULL"#)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };

    // Two days' retention: each of the 1,202 old jobs is walked once, in pages.
    let cut = now - chrono::Duration::days(2);
    let mut steps = Vec::new();
    loop {
        let step = store.purge_payloads(cut, 500).await.unwrap();
        steps.push((step.walked, step.purged));
        if step.walked < 500 {
            break;
        }
    }
    assert_eq!(steps, vec![(500, 500), (500, 500), (202, 200)]);
    assert_eq!(with_payload().await, 3);
    assert_eq!(
        store.purge_payloads(cut, 500).await.unwrap().walked,
        0,
        "nothing walked twice"
    );
    // The queued job and the one that finished an hour ago are set aside, not due yet.
    assert_eq!(store.purge_deferred_payloads(cut).await.unwrap(), 0);
    sqlx::query!(
        "UPDATE jobs SET status = 'succeeded', finished_at = $1, result = '{}'
         WHERE status = 'queued'",
        now,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(store.purge_deferred_payloads(cut).await.unwrap(), 0);

    // Three days later both are due, and so is the newest job.
    let later = now + chrono::Duration::days(3);
    assert_eq!(store.purge_deferred_payloads(later).await.unwrap(), 2);
    assert_eq!(
        store.purge_payloads(later, 500).await.unwrap(),
        orchestrator::store::PurgeStep {
            walked: 1,
            purged: 1
        }
    );
    assert_eq!(with_payload().await, 0);
    let set_aside: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM payload_purge_deferred"#)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(set_aside, 0, "each leaves once purged");
}

/// Heap blocks a scan of one second of the trail reads (through the time BRIN; sequential
/// scans are off, as they would be on a trail too big to scan).
async fn blocks_read_for_one_second(db: &TestDb, from: DateTime<Utc>) -> i64 {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM audit_events \
         WHERE at >= $1 AND at < $1 + interval '1 second'",
    )
    .bind(from)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    fn blocks(node: &serde_json::Value) -> i64 {
        let own: i64 = ["Exact Heap Blocks", "Lossy Heap Blocks"]
            .iter()
            .filter_map(|k| node.get(*k).and_then(serde_json::Value::as_i64))
            .sum();
        let children = node.get("Plans").and_then(|p| p.as_array());
        own + children.map_or(0, |c| c.iter().map(blocks).sum())
    }
    blocks(&plan[0]["Plan"])
}

/// A BRIN scan reads a range nobody has summarized whole, and only VACUUM summarizes ranges
/// otherwise: under sustained load each rollup pass, and the live streams' reader, read every
/// page of the trail written since autovacuum last came by (2.2 s a pass in a bench). The
/// maintenance pass summarizes the new ranges of both the time and the transaction BRIN first.
#[tokio::test]
async fn the_rollup_summarizes_the_trails_new_ranges_and_then_reads_only_its_window() {
    let db = TestDb::new().await;
    let start = Utc::now() - chrono::Duration::minutes(10);
    // 60,000 final events over five minutes: five BRIN ranges of 128 pages, none summarized.
    sqlx::query(
        "INSERT INTO audit_events (at, job_id, intent, mode, kind, to_status, attempt,
                                   duration_ms, actor_kind)
         SELECT $1 + make_interval(secs => i * 0.005), uuid_v7(), 'system.echo', 'agent',
                'succeeded', 'succeeded'::job_status, 1, 1, 'instance'
         FROM generate_series(0, 59999) i",
    )
    .bind(start)
    .execute(&db.pool)
    .await
    .unwrap();
    let last_second = start + chrono::Duration::seconds(299);
    let before = blocks_read_for_one_second(&db, last_second).await;
    assert!(
        before >= 512,
        "unsummarized, the whole trail is read: {before} blocks"
    );

    // The maintenance pass, as every instance runs it (and `orchestrator maintain`).
    let store = Store::new(db.pool.clone());
    orchestrator::worker::maintenance_pass(
        &store,
        &orchestrator::worker::Waiters::default(),
        &orchestrator::config::Config::default().maintenance(),
    )
    .await;
    let folded: i64 = sqlx::query_scalar("SELECT sum(jobs)::bigint FROM job_stats_hourly")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(folded, 60_000, "the pass rolled the events up");
    let after = blocks_read_for_one_second(&db, last_second).await;
    assert!(
        after <= 256,
        "summarized, at most the two ranges around the second: {after} blocks (was {before})"
    );
    // Nor is anything left for the live streams' reader, which finds the tail by `xact`.
    let left: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(brin_summarize_new_values(p.inhrelid::regclass)), 0)::bigint
         FROM pg_inherits p
         WHERE p.inhparent IN ('audit_events_at_brin'::regclass,
                               'audit_events_xact_brin'::regclass)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "ranges left unsummarized");
}
