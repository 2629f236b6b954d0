//! The dashboard in a real browser: tests/ui/dashboard.mjs drives Debian's Chromium through
//! playwright-core against a running server; this test makes the keys and jobs and opens the
//! gate when the script asks. Screenshots are left in target/ui-screenshots.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{Spawn, eventually, installed_by, job_id, prerequisite, spawn},
    test_tools::{Flaky, Gate},
};

#[tokio::test]
async fn an_operator_signs_in_watches_a_job_finish_and_cancels_another() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("target/browser");
    let core = installed_by(
        ".ci/install-browser",
        "BROWSER_DIR",
        &browser_dir,
        browser_dir.join("node_modules/playwright-core"),
    );
    if !prerequisite(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium (.ci/install-browser)",
    ) {
        return;
    }
    let (gate, hold, bulk, pick) = (
        Gate::new("test.gate"),
        Gate::new("test.hold"),
        Gate::new("test.bulk"),
        Gate::new("test.pick"),
    );
    // Fails once for good, then works (the retry from its page).
    let broken = Flaky::new("test.broken", 1, false, 1);
    let app = spawn(Spawn {
        tools: vec![
            gate.clone(),
            hold.clone(),
            bulk.clone(),
            pick.clone(),
            broken.clone(),
        ],
        // Behind a proxy under a path: every link and redirect must carry it.
        // Eight gated jobs hold their slots while the page is driven: room for the rest.
        configure: Box::new(|c| {
            c.server.base_path = "/ops".into();
            c.workers.concurrency = 16;
        }),
        ..Default::default()
    })
    .await;
    let admin = app
        .key(
            "operator",
            &[
                "*",
                "jobs:read:all",
                "jobs:cancel",
                "jobs:retry",
                "jobs:read:payloads",
                "keys:admin",
                "callbacks:retry",
            ],
        )
        .await;
    let reader = app.key("auditor", &["*", "jobs:read:all"]).await;
    let start = |intent: &'static str| {
        let (app, admin) = (&app, admin.clone());
        async move {
            let resp = app
                .client
                .post(format!("{}/orchestrate", app.base))
                .bearer_auth(admin)
                .json(&json!({"intent": intent, "inputs": {"n": 1}, "async": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            job_id(&resp.json().await.unwrap())
        }
    };
    let gated = start("test.gate").await;
    // Three jobs for the bulk cancel by filter.
    let mut bulk_jobs = Vec::new();
    for _ in 0..3 {
        bulk_jobs.push(start("test.bulk").await);
    }
    let held = start("test.hold").await;
    let other = start("test.hold").await;
    let picks = [start("test.pick").await, start("test.pick").await];
    let broken_job = start("test.broken").await;
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .bearer_auth(&admin)
        .header("idempotency-key", "order-42")
        .json(&json!({"intent": "system.echo", "inputs": {"order": 42}}))
        .send()
        .await
        .unwrap();
    let keyed = job_id(&resp.json().await.unwrap());
    let status_of = |job: String| {
        let (app, admin) = (&app, admin.clone());
        async move { app.get_json_as(&admin, &format!("/jobs/{job}")).await.1["status"].clone() }
    };
    let failed = eventually(Duration::from_secs(20), || async {
        status_of(broken_job.clone()).await == "failed"
    })
    .await;
    assert!(failed, "{broken_job} fails its one attempt");
    for job in [&gated, &held, &other] {
        let running = eventually(Duration::from_secs(20), || async {
            status_of(job.clone()).await == "running"
        })
        .await;
        assert!(running, "{job} runs");
    }

    // A callback that cannot be delivered (nothing listens there): exhausted after its tries.
    let hook = format!("http://127.0.0.1:{}/hook", crate::process::free_port());
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .bearer_auth(&admin)
        .json(&json!({"intent": "system.echo", "inputs": {"text": "x"}, "callback_url": hook}))
        .send()
        .await
        .unwrap();
    let undelivered = job_id(&resp.json().await.unwrap());
    let delivery = |job: String| {
        let pool = app.pool().clone();
        async move {
            sqlx::query_as::<_, (String, i32)>(
                "SELECT status::text, manual_retries FROM callback_deliveries \
                 WHERE job_id = $1::text::uuid",
            )
            .bind(job.trim_start_matches("job_"))
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let exhausted = eventually(Duration::from_secs(20), || async {
        delivery(undelivered.clone())
            .await
            .is_some_and(|(s, _)| s == "exhausted")
    })
    .await;
    assert!(exhausted, "the callback ran out of attempts");

    // The charts read the hourly rollups (a minute behind the jobs): two hours of them.
    sqlx::query(
        "INSERT INTO job_stats_hourly (hour, intent, mode, status, jobs, attempts, retried_jobs, \
                                       duration_ms_sum, duration_ms_max) \
         SELECT date_bin('1 hour', now() - h * interval '1 hour', TIMESTAMPTZ '2000-01-01'), \
                'memory.write', 'agent', s.status::job_status, s.jobs, s.jobs, 0, 0, 0 \
         FROM (VALUES (0), (3)) hours(h), \
              (VALUES ('succeeded', 7), ('failed', 3)) s(status, jobs)",
    )
    .execute(app.pool())
    .await
    .unwrap();

    let shots = root.join("target/ui-screenshots");
    let mut node = Command::new("node")
        .arg(root.join("tests/ui/dashboard.mjs"))
        .env("PLAYWRIGHT_CORE", &core)
        .env("BASE", &app.base)
        .env("SHOTS", &shots)
        .env("ADMIN_KEY", &admin)
        .env("READER_KEY", &reader)
        .env("GATED_JOB", &gated)
        .env("HELD_JOB", &held)
        .env("OTHER_JOB", &other)
        .env("UNDELIVERED_JOB", &undelivered)
        .env("BROKEN_JOB", &broken_job)
        .env("KEYED_JOB", &keyed)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut to_script = node.stdin.take().unwrap();
    let from_script = BufReader::new(node.stdout.take().unwrap());
    // The script's lines arrive on a thread of their own (a blocking read).
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in from_script.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut passed = false;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(120), lines.recv()).await {
        match line.as_str() {
            "open-gate" => {
                gate.open();
                writeln!(to_script, "ok").unwrap();
            }
            "PASS" => passed = true,
            other => eprintln!("dashboard.mjs: {other}"),
        }
    }
    drop(to_script);
    let status = node.wait().unwrap();
    assert!(
        status.success() && passed,
        "the browser test failed ({status})"
    );
    // The cancel through the page reached the job; the forged one did not.
    let cancelled = eventually(Duration::from_secs(20), || async {
        status_of(held.clone()).await == "cancelled"
    })
    .await;
    assert!(cancelled);
    assert_eq!(status_of(other.clone()).await, "running");
    for job in &picks {
        assert_eq!(
            status_of(job.clone()).await,
            "cancelled",
            "selected and cancelled"
        );
    }
    // Bulk-cancelled, then bulk-retried: back in the queue, each step audited as the operator.
    bulk.open();
    for job in &bulk_jobs {
        let (_, history) = app
            .get_json_as(&admin, &format!("/jobs/{job}/events"))
            .await;
        let steps: Vec<(String, String)> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            // Running (held by the gate): the cancel is asked of the worker, which ends it.
            .filter(|e| e["kind"] == "cancel_requested" || e["kind"] == "retried")
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["actor_name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                ("cancel_requested".to_owned(), "operator".to_owned()),
                ("retried".to_owned(), "operator".to_owned())
            ],
            "{job}"
        );
        let ran = eventually(Duration::from_secs(20), || async {
            status_of(job.clone()).await == "succeeded"
        })
        .await;
        assert!(ran, "{job} ran again");
    }
    assert_eq!(
        status_of(broken_job.clone()).await,
        "succeeded",
        "retried from its page"
    );
    // The pages' retries reached the delivery: one for the job and one for its host from the
    // callbacks page, one from the job's page.
    let retried_thrice = eventually(Duration::from_secs(20), || async {
        delivery(undelivered.clone()).await.unwrap().1 == 3
    })
    .await;
    assert!(retried_thrice);
    for shot in [
        "overview.png",
        "jobs.png",
        "job.png",
        "callbacks.png",
        "keys.png",
        "job-phone-read-only.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} saved");
    }
    hold.open();
    pick.open();
}
