//! Jobs for later (`run_at`, `delay_ms`) and schedules: exactly one job per fire time across
//! instances, fire times in the inputs, overlap and catch-up policies, the `/schedules` API
//! and `[[schedules]]` in the configuration.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Spawn, TestApp, eventually, job_id, spawn, spawn_app, spawn_with},
    test_tools::Gate,
};

async fn status_of(app: &TestApp, id: &str) -> Value {
    app.job(id).await["status"].clone()
}

#[tokio::test]
async fn a_job_for_later_waits_as_scheduled_then_runs_and_can_be_cancelled() {
    let app = spawn_app().await;
    let sent = chrono::Utc::now();
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"text": "later"},
                                 "delay_ms": 1500, "idempotency_key": "later-1"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "answered at once: {body}");
    let later = job_id(&body);
    assert_eq!(status_of(&app, &later).await, "scheduled");
    // The same request again (a client's retry) is the same job.
    let (_, again) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"text": "later"},
                                 "delay_ms": 1500, "idempotency_key": "later-1"}))
        .await;
    assert_eq!(job_id(&again), later);

    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"text": "never"},
                                 "run_at": in_an_hour}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let cancelled = job_id(&body);
    let (status, body) = app
        .post_json(&format!("/jobs/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");

    let done = app.wait_for_status(&later, "succeeded").await;
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(done[field].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // Its time counts from the request's arrival (after `sent`; the server is this process,
    // on the same clock), not from `created_at`, the commit of an intake batch that may come
    // later on a busy machine.
    let (run_at, started) = (time("run_at"), time("started_at"));
    assert!(
        run_at >= sent + chrono::Duration::milliseconds(1500),
        "due 1.5 s after the request: sent {sent}, due {run_at}"
    );
    assert!(
        started >= run_at,
        "not before its time: due {run_at}, started {started}"
    );
    let (_, history) = app.get_json(&format!("/jobs/{later}/events")).await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["created", "due", "claimed", "succeeded"],
        "{history}"
    );
    assert_eq!(history["events"][0]["to_status"], "scheduled");

    for (body, field) in [
        (
            json!({"intent": "system.echo", "inputs": {}, "delay_ms": 1, "run_at": in_an_hour}),
            "run_at",
        ),
        (
            json!({"intent": "system.echo", "inputs": {}, "run_at": "tomorrow"}),
            "run_at",
        ),
        (
            json!({"intent": "system.echo", "inputs": {}, "run_at": "2099-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"intent": "system.echo", "inputs": {}, "delay_ms": -1}),
            "delay_ms",
        ),
    ] {
        let (status, problem) = app.orchestrate_json(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

async fn create(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(format!("{}/schedules", app.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The actor kind the trail records for the creation of schedule `name`.
async fn schedule_created_by(app: &TestApp, name: &str) -> String {
    sqlx::query_scalar(
        "SELECT actor_kind FROM audit_events WHERE kind = 'schedule.created' AND target = $1",
    )
    .bind(name)
    .fetch_one(app.pool())
    .await
    .unwrap()
}

/// Fires of a schedule, oldest first: (fire time, job id or none, outcome).
async fn fires(
    app: &TestApp,
    schedule: &str,
) -> Vec<(chrono::DateTime<chrono::Utc>, Option<uuid::Uuid>, String)> {
    sqlx::query_as(
        "SELECT fire_time, job_id, outcome FROM schedule_fires \
         WHERE schedule_id = $1::text::uuid ORDER BY fire_time",
    )
    .bind(schedule)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn two_instances_file_exactly_one_job_per_fire_with_the_fire_times_in_its_inputs() {
    let first = spawn_app().await;
    let second = spawn(Spawn {
        db: Some(first.db.clone()),
        ..Default::default()
    })
    .await;
    let admin = first
        .key("admin", &["*", "schedules:admin", "jobs:read:all"])
        .await;
    let (status, schedule) = create(
        &first,
        &admin,
        json!({"name": "every-second", "intent": "system.echo", "cron": "* * * * * *",
               "overlap": "allow",
               "inputs": {"text": "{{ fire_time }}", "since": "{{ previous_fire_time }}"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    assert_eq!(schedule["source"], "api");
    assert_eq!(schedule["principal"], "admin");
    let id = schedule["schedule_id"].as_str().unwrap().to_owned();

    let enough = eventually(Duration::from_secs(20), || async {
        fires(&first, &id).await.len() >= 4
    })
    .await;
    assert!(enough, "it fires every second");
    let (status, _) = first
        .post_as(&admin, &format!("/schedules/{id}/pause"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let recorded = fires(&first, &id).await;
    let (_, listed) = first
        .get_json_as(&admin, &format!("/jobs?schedule_id={id}&limit=100"))
        .await;
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), recorded.len(), "one job per fire: {recorded:?}");
    let mut previous: Option<String> = None;
    for (fire_time, job, outcome) in &recorded {
        assert_eq!(outcome, "fired");
        let job = orchestrator::ids::JobId::from(job.expect("a job")).to_string();
        let (_, body) = first.get_json_as(&admin, &format!("/jobs/{job}")).await;
        assert_eq!(body["schedule_id"], id.as_str());
        let at = fire_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(body["inputs"]["text"], at.as_str(), "{body}");
        if let Some(previous) = &previous {
            assert_eq!(
                body["inputs"]["since"],
                previous.as_str(),
                "since the last run"
            );
        }
        previous = Some(at);
    }
    // Whichever instance filed each, every fire is audited once.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE kind = 'schedule.fired' AND target = 'every-second'",
    )
    .fetch_one(first.pool())
    .await
    .unwrap();
    assert_eq!(audited as usize, recorded.len());

    // Paused: no next fire; triggered: one job at once all the same.
    let (_, paused) = first.get_json_as(&admin, &format!("/schedules/{id}")).await;
    assert_eq!(paused["paused"], true);
    assert!(paused["next_fire_at"].is_null());
    let (status, triggered) = second
        .post_as(&admin, &format!("/schedules/{id}/trigger"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{triggered}");
    assert!(triggered["job_id"].as_str().unwrap().starts_with("job_"));
    // Jobs of a schedule made through the API are filed for the key that made it.
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.actor_kind FROM audit_events e JOIN jobs j ON j.id = e.job_id
         WHERE j.schedule_id = $1 AND e.kind = 'created'",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_all(first.pool())
    .await
    .unwrap();
    assert_eq!(kinds, ["api_key"]);
    assert_eq!(schedule_created_by(&first, "every-second").await, "api_key");
    let (_, resumed) = first
        .post_as(&admin, &format!("/schedules/{id}/resume"))
        .await;
    assert!(resumed["next_fire_at"].is_string(), "{resumed}");
    let (status, _) = first
        .client
        .delete(format!("{}/schedules/{id}", first.base))
        .bearer_auth(&admin)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(second);
}

#[tokio::test]
async fn a_busy_schedule_skips_and_a_late_one_catches_up_by_its_policy() {
    let gate = Gate::new("test.gate");
    let app = spawn(Spawn {
        tools: vec![gate.clone()],
        ..Default::default()
    })
    .await;
    let admin = app
        .key("admin", &["*", "schedules:admin", "jobs:read:all"])
        .await;
    let (_, busy) = create(
        &app,
        &admin,
        json!({"name": "busy", "intent": "test.gate", "cron": "* * * * * *", "overlap": "skip"}),
    )
    .await;
    let busy = busy["schedule_id"].as_str().unwrap().to_owned();
    let skipped_some = eventually(Duration::from_secs(20), || async {
        fires(&app, &busy)
            .await
            .iter()
            .filter(|f| f.2 == "skipped")
            .count()
            >= 2
    })
    .await;
    assert!(skipped_some, "fires while the first run holds are skipped");
    let (_, paused) = app
        .post_as(&admin, &format!("/schedules/{busy}/pause"))
        .await;
    assert_eq!(paused["paused"], true);
    let all = fires(&app, &busy).await;
    assert_eq!(
        all.iter().filter(|f| f.1.is_some()).count(),
        1,
        "one run: {all:?}"
    );
    gate.open();

    // Down for ten minutes (its next fire time long past): `all` files the last 3 missed
    // fires, `latest` one.
    for (name, policy, expected) in [
        ("all", "all", 3),
        ("latest", "latest", 1),
        ("none", "none", 0usize),
    ] {
        let (status, made) = create(
            &app,
            &admin,
            json!({"name": name, "intent": "system.echo", "cron": "0 * * * * *",
                   "catch_up": policy, "catch_up_max": 3, "paused": true,
                   "inputs": {"text": "{{ fire_time }}"}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        let id = made["schedule_id"].as_str().unwrap().to_owned();
        sqlx::query(
            "UPDATE schedules SET paused = false, \
                    next_fire_at = date_trunc('minute', now()) - interval '10 minutes' \
             WHERE id = $1::text::uuid",
        )
        .bind(&id)
        .execute(app.pool())
        .await
        .unwrap();
        let caught_up = eventually(Duration::from_secs(20), || async {
            let moved: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT next_fire_at FROM schedules WHERE id = $1::text::uuid")
                    .bind(&id)
                    .fetch_one(app.pool())
                    .await
                    .unwrap();
            moved.is_some_and(|t| t > chrono::Utc::now() - chrono::Duration::seconds(1))
        })
        .await;
        assert!(caught_up, "{name} moved on");
        let filed = fires(&app, &id).await;
        if policy == "none" {
            // Only a fire within a minute of its time (this minute's, if it has begun).
            assert!(filed.len() <= 1, "{filed:?}");
            assert!(
                filed
                    .iter()
                    .all(|f| f.0 > chrono::Utc::now() - chrono::Duration::seconds(70)),
                "no missed fire runs: {filed:?}"
            );
            continue;
        }
        assert_eq!(filed.len(), expected, "{name}: {filed:?}");
        for pair in filed.windows(2) {
            assert_eq!(
                pair[1].0 - pair[0].0,
                chrono::Duration::minutes(1),
                "{name}: the latest minutes"
            );
        }
    }
}

#[tokio::test]
async fn schedules_are_checked_and_those_of_the_configuration_live_in_the_file() {
    let app = spawn_with(|c| {
        c.schedules = vec![
            serde_json::from_value(json!({
                "name": "triage", "intent": "system.echo", "cron": "0 0 * * * *",
                "timezone": "Europe/Berlin", "inputs": {"since": "{{ previous_fire_time }}"}
            }))
            .unwrap(),
        ];
    })
    .await;
    let admin = app.key("admin", &["*", "schedules:admin"]).await;
    let narrow = app.key("narrow", &["memory.*", "schedules:admin"]).await;
    let plain = app.key("plain", &["*"]).await;
    let (_, list) = app.get_json_as(&admin, "/schedules").await;
    let triage = &list["schedules"][0];
    assert_eq!(triage["name"], "triage");
    assert_eq!(triage["source"], "config");
    assert_eq!(triage["timezone"], "Europe/Berlin");
    assert_eq!(triage["overlap"], "skip");
    assert_eq!(triage["catch_up"], "latest");
    let id = triage["schedule_id"].as_str().unwrap();
    let resp = app
        .client
        .delete(format!("{}/schedules/{id}", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "schedule_in_config");
    // Its jobs are filed for the operator who wrote the file, and audited so (not as
    // anonymous requests).
    let (status, triggered) = app
        .post_as(&admin, &format!("/schedules/{id}/trigger"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{triggered}");
    let job = triggered["job_id"].as_str().unwrap();
    let job = uuid::Uuid::parse_str(&job["job_".len()..]).unwrap();
    let (kind, name): (String, String) = sqlx::query_as(
        "SELECT actor_kind, actor_name FROM audit_events WHERE job_id = $1 AND kind = 'created'",
    )
    .bind(job)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), name.as_str()),
        ("operator", "configuration")
    );
    assert_eq!(schedule_created_by(&app, "triage").await, "operator");

    let base = json!({"name": "ok", "intent": "system.echo", "cron": "0 * * * *"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("cron", json!("every hour")), "cron"),
        (with("timezone", json!("Mars/Olympus")), "timezone"),
        (with("inputs", json!({"a": "{{ nope }}"})), "inputs"),
        (with("name", json!("no spaces")), "name"),
        (with("catch_up", json!("sometimes")), "catch_up"),
    ] {
        let (status, problem) = create(&app, &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = create(&app, &admin, with("intent", json!("no.such"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = create(&app, &narrow, base.clone()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "its jobs run as the key: {problem}"
    );
    let (status, problem) = create(&app, &plain, base.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["missing_scope"], "schedules:admin");
    let (status, _) = create(&app, &admin, base.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, problem) = create(&app, &admin, base.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "schedule_name_taken");
    let (status, problem) = app.get_json_as(&admin, "/schedules/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, problem) = app
        .get_json_as(&admin, "/schedules/0192f0c0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "schedule_not_found");
}

#[tokio::test]
async fn fire_records_past_their_use_are_purged_and_the_ones_schedulers_read_stay() {
    let db = crate::helpers::TestDb::new().await;
    let store = orchestrator::store::Store::new(db.pool.clone());
    sqlx::query(
        "INSERT INTO schedules (id, name, intent, cron, overlap, catch_up, source, principal,
                                last_fire_at)
         VALUES ('00000000-0000-7000-8000-000000000001', 'nightly', 'system.echo', '0 0 * * *',
                 'skip', 'none', 'api', 'anonymous', now() - interval '1 day')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // (fire time days ago, filed a job, recorded days ago)
    for (ago, job, recorded) in [
        (90, true, 90),  // old: goes
        (80, false, 80), // old and skipped: goes
        (60, true, 60),  // the latest fire that filed a job: stays (overlap rules read it)
        (45, false, 45), // after it, skipped: goes
        (20, false, 20), // recorded 20 days ago: stays (kept 30 days)
        (1, false, 1),   // the last fire: stays
    ] {
        sqlx::query(
            "INSERT INTO schedule_fires (schedule_id, fire_time, job_id, outcome, created_at)
             VALUES ('00000000-0000-7000-8000-000000000001',
                     date_trunc('second', now()) - make_interval(days => $1),
                     CASE WHEN $2 THEN gen_random_uuid() END,
                     CASE WHEN $2 THEN 'fired' ELSE 'skipped' END,
                     now() - make_interval(days => $3))",
        )
        .bind(ago)
        .bind(job)
        .bind(recorded)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert_eq!(store.purge_old_schedule_fires(30, 100).await.unwrap(), 3);
    let left: Vec<i32> = sqlx::query_scalar(
        "SELECT extract(day FROM date_trunc('second', now()) - fire_time)::int
         FROM schedule_fires ORDER BY fire_time",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, [60, 20, 1]);
}
