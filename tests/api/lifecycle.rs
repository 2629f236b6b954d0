//! Instances coming and going: cancellation, graceful shutdown, crash rescue, and two
//! instances sharing one database.

use std::{sync::Arc, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use orchestrator::ids::JobId;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{
        QUICK_RESCUE_LEASE, Spawn, TestDb, eventually, job_id, rescue_quickly, spawn, spawn_with,
    },
    mock_http::{MockServer, Reply},
    process::ready_within,
    test_tools::{Recorder, Recording},
};

async fn event_kinds(app: &crate::helpers::TestApp, id: &str) -> Vec<String> {
    let (_, events) = app.get_json(&format!("/jobs/{id}/events")).await;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_at_once() {
    // An intake-only instance: nothing claims the job.
    let app = spawn_with(|c| c.workers.concurrency = 0).await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {}, "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job_id(&body);
    assert_eq!(app.job(&id).await["status"], "queued");

    let (status, job) = app
        .post_json(&format!("/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["error"]["code"], "cancelled");
    assert!(job["finished_at"].is_string());

    let (status, problem) = app
        .post_json(&format!("/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "job_finished");
    assert_eq!(event_kinds(&app, &id).await, ["created", "cancelled"]);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_the_tool() {
    let app = spawn_with(|_| {}).await;
    let (status, body) = app
        .orchestrate_json(
            json!({"intent": "system.sleep", "inputs": {"ms": 60000}, "timeout_ms": 200}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job_id(&body);
    assert_eq!(app.job(&id).await["status"], "running");

    let started = std::time::Instant::now();
    let (status, job) = app
        .post_json(&format!("/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert!(started.elapsed() < Duration::from_secs(5));
    let kinds = event_kinds(&app, &id).await;
    let kinds: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "claimed")
        .collect();
    assert_eq!(kinds, ["created", "cancel_requested", "cancelled"]);
}

#[tokio::test]
async fn cancel_and_status_of_unknown_or_malformed_jobs() {
    let app = spawn_with(|_| {}).await;
    let unknown = JobId::new().to_string();
    let (status, problem) = app
        .post_json(&format!("/jobs/{unknown}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "job_not_found");
    let (status, _) = app.get_json(&format!("/jobs/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = app.get_json("/jobs/job_123").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "job_id");
}

/// Starts `instance` (given the `test.record` tool of `recorder`) and a `test.record` job of `ms`
/// on it; returns once the tool has started — known from the tool's own record, not from the
/// row's `running`, which the claim writes before the attempt starts (a job claimed but not yet
/// started is handed back at shutdown by design).
async fn start_recorded_job(
    instance: Spawn,
    recorder: &Arc<Recorder>,
    ms: u64,
) -> (crate::helpers::TestApp, String, JobId) {
    let app = spawn(Spawn {
        tools: vec![Recording::new(recorder.clone())],
        ..instance
    })
    .await;
    let (status, body) = app
        .orchestrate_json(json!({"intent": "test.record", "inputs": {"ms": ms}, "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    let job: JobId = id.parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            recorder.runs_of(job) == 1
        })
        .await,
        "the tool started"
    );
    (app, id, job)
}

/// An instance with a grace period of `grace` and a started job of `ms`.
async fn with_started_job(
    grace: Duration,
    ms: u64,
) -> (crate::helpers::TestApp, sqlx::PgPool, String) {
    let instance = Spawn {
        configure: Box::new(move |c| c.server.shutdown_grace = grace),
        ..Default::default()
    };
    let (app, id, _) = start_recorded_job(instance, &Arc::new(Recorder::default()), ms).await;
    let pool = app.pool().clone();
    (app, pool, id)
}

#[tokio::test]
async fn graceful_shutdown_lets_running_jobs_finish() {
    let (mut app, pool, id) = with_started_job(Duration::from_secs(5), 800).await;
    app.stop().await.expect("clean exit");
    assert_eq!(status_of(&pool, &id).await, "succeeded");
}

#[tokio::test]
async fn graceful_shutdown_releases_jobs_that_outlast_the_grace_period() {
    let (mut app, pool, id) = with_started_job(Duration::from_millis(300), 60000).await;
    let started = std::time::Instant::now();
    app.stop().await.expect("clean exit");
    assert!(started.elapsed() < Duration::from_secs(5));

    let row = sqlx::query!(
        "SELECT status::text AS \"status!\", attempts, lease_owner FROM jobs WHERE id = $1",
        uuid::Uuid::parse_str(&id[4..]).unwrap()
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.status, "queued", "handed back for another instance");
    assert_eq!(row.attempts, 0, "the interrupted attempt is not counted");
    assert!(row.lease_owner.is_none());
}

async fn status_of(pool: &sqlx::PgPool, id: &str) -> String {
    sqlx::query_scalar!(
        "SELECT status::text AS \"s!\" FROM jobs WHERE id = $1",
        uuid::Uuid::parse_str(&id[4..]).unwrap()
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An instance (without maintenance, so it never rescues its own job; a 2-s lease) running a long
/// `test.record` job; returns it with the job's id once the tool has started.
async fn start_long_job(
    db: TestDb,
    recorder: &Arc<Recorder>,
) -> (crate::helpers::TestApp, String, JobId) {
    let instance = Spawn {
        db: Some(db),
        configure: Box::new(|c| {
            c.workers.maintenance_interval = Duration::from_secs(60);
            rescue_quickly(c);
        }),
        ..Default::default()
    };
    start_recorded_job(instance, recorder, 60000).await
}

/// A second instance rescues the job once its lease (2 s) expires and runs it (now short)
/// to the end: attempt 2, and one run per attempt.
async fn rescued_elsewhere(db: &TestDb, recorder: &Arc<Recorder>, id: &str) -> Value {
    let job: JobId = id.parse().unwrap();
    sqlx::query!(
        "UPDATE jobs SET inputs = '{\"ms\": 1}' WHERE id = $1",
        job.uuid()
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let survivor = spawn(Spawn {
        db: Some(db.clone()),
        tools: vec![Recording::new(recorder.clone())],
        ..Default::default()
    })
    .await;
    let finished = survivor.wait_for_status(id, "succeeded").await;
    assert_eq!(finished["attempts"], 2);
    assert_eq!(finished["result"]["attempt"], 2);
    assert_eq!(
        recorder.runs_of(job),
        2,
        "one run per attempt, none twice at once"
    );
    let kinds = event_kinds(&survivor, id).await;
    assert_eq!(
        kinds,
        ["created", "claimed", "rescued", "claimed", "succeeded"]
    );
    finished
}

#[tokio::test]
async fn a_job_whose_worker_vanished_is_rescued_and_completed_once() {
    let db = TestDb::new().await;
    let recorder = Arc::new(Recorder::default());
    let (mut doomed, id, _) = start_long_job(db.clone(), &recorder).await;
    doomed.kill();
    rescued_elsewhere(&db, &recorder, &id).await;
}

#[tokio::test]
async fn two_instances_share_the_work_and_no_job_runs_twice() {
    let db = TestDb::new().await;
    let recorder = Arc::new(Recorder::default());
    let instance = |db: &TestDb| Spawn {
        db: Some(db.clone()),
        tools: vec![Recording::new(recorder.clone())],
        configure: Box::new(|c| c.workers.concurrency = 4),
        ..Default::default()
    };
    let a = spawn(instance(&db)).await;
    let b = spawn(instance(&db)).await;

    let submit = |app: &crate::helpers::TestApp, i: usize| {
        let client = app.client.clone();
        let url = format!("{}/orchestrate", app.base);
        async move {
            let v: Value = client
                .post(url)
                .json(&json!({"intent": "test.record", "inputs": {"ms": 5, "i": i}, "async": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            job_id(&v)
        }
    };
    let mut ids = Vec::new();
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        let batch = chunk
            .iter()
            .map(|&i| submit(if i % 2 == 0 { &a } else { &b }, i));
        ids.extend(futures::future::join_all(batch).await);
    }
    let all_done = eventually(Duration::from_secs(90), || async {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM jobs WHERE status = 'succeeded'"#)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == 200
    })
    .await;
    assert!(all_done, "all 200 jobs finished");
    assert_eq!(recorder.total(), 200);
    assert_eq!(recorder.max_runs(), 1, "no job ran twice");

    let by_instance = sqlx::query!(
        r#"SELECT instance_id AS "instance!", count(*) AS "n!" FROM job_events
           WHERE kind = 'claimed' GROUP BY instance_id"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let claimers: Vec<uuid::Uuid> = by_instance.iter().map(|r| r.instance).collect();
    assert!(
        claimers.contains(&a.instance_id) && claimers.contains(&b.instance_id),
        "both instances claimed work: {by_instance:?}"
    );
    assert_eq!(by_instance.iter().map(|r| r.n).sum::<i64>(), 200);
}

#[tokio::test]
async fn other_instances_wake_at_once_through_notify_and_wake_waiters() {
    let db = TestDb::new().await;
    // The intake instance runs nothing; the worker instance polls only once a minute, so a
    // prompt pick-up proves the NOTIFY path.
    let intake = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(|c| c.workers.concurrency = 0),
        ..Default::default()
    })
    .await;
    let _worker = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(|c| c.workers.poll_interval = Duration::from_secs(60)),
        ..Default::default()
    })
    .await;
    // Both instances listen before the job exists (the worker's first, empty claim runs
    // while its listener connects), so the worker can only learn of the job by NOTIFY.
    let listening = eventually(Duration::from_secs(5), || async {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM pg_stat_activity
               WHERE datname = current_database() AND query LIKE 'LISTEN%'"#
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            >= 2
    })
    .await;
    assert!(listening);

    let started = std::time::Instant::now();
    let (status, body) = intake
        .orchestrate_json(
            json!({"intent": "system.echo", "inputs": {"hello": "there"}, "timeout_ms": 5000}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the waiter on the intake instance was woken: {body}"
    );
    assert_eq!(body["result"], json!({"hello": "there"}));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_worker_cut_off_from_the_database_stops_its_attempt_before_the_lease_runs_out() {
    let db = TestDb::new().await;
    let url = url::Url::parse(&db.url).unwrap();
    let proxy = crate::proxy::Proxy::start((
        url.host_str().unwrap().to_owned(),
        url.port().unwrap_or(5432),
    ))
    .await;
    let mut via_proxy = db.clone();
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    via_proxy.url = proxied.to_string();

    let recorder = Arc::new(Recorder::default());
    let lease = QUICK_RESCUE_LEASE;
    let (_partitioned, id, job) = start_long_job(via_proxy, &recorder).await;

    let cut_at = std::time::Instant::now();
    proxy.cut();
    let stopped = eventually(lease + Duration::from_secs(2), || async {
        recorder.cancelled.lock().unwrap().contains_key(&job)
    })
    .await;
    assert!(stopped, "the attempt was stopped");
    let stopped_after = recorder.cancelled.lock().unwrap()[&job] - cut_at;
    assert!(
        stopped_after < lease,
        "stopped {stopped_after:?} after the cut, within the lease"
    );

    rescued_elsewhere(&db, &recorder, &id).await;
}

/// SIGTERM reaches the binary while an attempt is running: it finishes that attempt and exits
/// 0. The attempt is a flow call held open by its peer, so the test signals only once the call
/// has arrived (a job merely claimed, not yet started, is handed back to the queue at shutdown
/// by design, which a signal sent as soon as the row says `running` could meet).
#[tokio::test]
async fn the_binary_finishes_its_jobs_and_exits_0_on_sigterm() {
    let db = TestDb::new().await;
    let peer = MockServer::start().await;
    peer.otherwise(
        "/slow",
        Reply::json(200, json!({"done": true})).after(Duration::from_millis(700)),
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[callbacks]\nallow_networks = [\"127.0.0.0/8\"]\n\
             [flows.\"test.slow\"]\nengine = \"generic\"\nurl = \"{}\"\n",
            peer.url("/slow")
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("serve")
        .env("ORCHESTRATOR_CONFIG", config.path())
        .env("DATABASE_URL", &db.url)
        .env("ORCH__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ORCH__DATABASE__EMBEDDED", "false")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let up = ready_within(&client, &base, Duration::from_secs(20)).await;
    assert!(up, "the server came up");

    let body: Value = client
        .post(format!("{base}/orchestrate"))
        .json(&json!({"intent": "test.slow", "inputs": {"n": 1}, "async": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job_id(&body);
    peer.wait_for("/slow", 1).await;
    let pid = child.id().expect("running") as i32;
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM to our own child");
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(status_of(&db.pool, &id).await, "succeeded");
    assert_eq!(peer.requests("/slow").len(), 1, "called once");
}
