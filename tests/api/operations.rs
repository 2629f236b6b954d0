//! What an operator deploys and watches: the image's rules, the health check the container
//! runs, start-up failures, and the metrics to alert on — on the real binary.

use std::{collections::BTreeMap, io::Read, process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    checkers::checker,
    helpers::{TestDb, eventually, prerequisite, spawn_app},
    process::{Invocation, Served, free_port, text},
};

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_image_is_built_and_checked_the_way_the_readme_says() {
    let dockerfile = repo_file("Dockerfile");
    let lint = std::process::Command::new(checker("hadolint"))
        .args(["--failure-threshold", "info", "--no-color", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(dockerfile.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(lint.status.success(), "hadolint: {}", text(&lint.stdout));

    // Dependencies build in a layer of their own, before the sources are copied in.
    let cook = dockerfile
        .find("cargo chef cook")
        .expect("a cargo-chef dependency layer");
    let build = dockerfile.find("cargo build").unwrap();
    let sources = dockerfile[cook..]
        .find("COPY . .")
        .map(|i| i + cook)
        .unwrap();
    assert!(
        cook < sources && sources < build,
        "cook, then the sources, then build"
    );
    // Shipped without debug info.
    assert!(dockerfile.contains("--profile dist"));
    let cargo = repo_file("Cargo.toml");
    let dist = &cargo[cargo.find("[profile.dist]").expect("a dist profile")..];
    assert!(dist.contains("strip = true") && dist.contains("debug = false"));
    // The health check is the binary's own.
    assert!(dockerfile.contains(r#"CMD ["orchestrator", "healthcheck"]"#));
    let compose = repo_file("compose.yaml");
    assert!(compose.contains(r#"test: ["CMD", "orchestrator", "healthcheck"]"#));
    assert!(
        !compose
            .lines()
            .any(|l| l.contains("test:") && l.contains("/dev/tcp")),
        "dash has no /dev/tcp"
    );
    // A small build context: no build output, private cluster or history.
    let ignore = repo_file(".dockerignore");
    for entry in ["target/", ".orchestrator/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            "{entry} in .dockerignore"
        );
    }
}

#[tokio::test]
async fn the_healthcheck_command_passes_only_when_the_server_answers() {
    let app = spawn_app().await;
    let run = Invocation::default();
    let up = run.run(&["healthcheck", "--url", &format!("{}/healthz", app.base)]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let port = free_port();
    let down = run
        .clone()
        .env("ORCH__SERVER__LISTEN", format!("0.0.0.0:{port}"))
        .run(&["healthcheck"]);
    assert!(!down.status.success());
    assert!(
        text(&down.stderr).contains(&format!("127.0.0.1:{port}/healthz")),
        "an unspecified listen address is checked on loopback: {}",
        text(&down.stderr)
    );
}

#[tokio::test]
async fn a_port_in_use_is_one_clear_error_before_anything_else() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let db = TestDb::new().await;
    // A database that does not exist yet: binding first means it is never created.
    let missing = db.url.replace("/orch_test_", "/orch_never_");
    let mut served = Invocation::default()
        .env("DATABASE_URL", &missing)
        .serve(&addr.to_string());
    let status = served
        .exited(Duration::from_secs(20))
        .await
        .expect("exits at once");
    assert!(!status.success());
    let logs = served.logs();
    assert_eq!(
        logs.matches(&format!("binding {addr}")).count(),
        1,
        "one error naming the address:\n{logs}"
    );
    assert!(!logs.contains("migrations"), "{logs}");
    assert!(!logs.contains("cancelled"), "{logs}");
    let created: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(missing.rsplit('/').next().unwrap())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!created, "nothing was done before binding");
}

#[test]
fn printing_into_a_closed_pipe_is_not_a_panic() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn the_help_names_the_environment_and_every_option_is_explained() {
    let help = |args: &[&str]| {
        let out = Invocation::default().run(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let top = help(&["--help"]);
    for needle in [
        "DATABASE_URL",
        "ORCHESTRATOR_CONFIG",
        "serve",
        "migrate",
        "keys",
    ] {
        assert!(top.contains(needle), "--help names {needle}:\n{top}");
    }
    let create = help(&["keys", "create", "--help"]);
    for scope in orchestrator::auth::ADMIN_SCOPES {
        assert!(
            create.contains(scope),
            "keys create --help names {scope}:\n{create}"
        );
    }
    // Every option carries its explanation: on its line, or (long help) on the next one; clap
    // prints an option with none followed directly by the next option or the end.
    for args in [
        &["serve", "--help"][..],
        &["keys", "create", "--help"],
        &["migrate", "--help"],
    ] {
        let text = help(args);
        let lines: Vec<&str> = text.lines().collect();
        let bare: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let l = l.trim();
                let explained_here = l.contains("  ");
                let explained_below = lines.get(i + 1).is_some_and(|next| {
                    let next = next.trim();
                    !next.is_empty() && !next.starts_with('-')
                });
                (l.starts_with("--") || l.starts_with("-h")) && !explained_here && !explained_below
            })
            .map(|(_, l)| *l)
            .collect();
        assert!(
            bare.is_empty(),
            "options without help in {args:?}: {bare:?}"
        );
    }
}

/// One exposition: family name → (type, has HELP), and every sample line.
struct Exposition {
    families: BTreeMap<String, (String, bool)>,
    samples: Vec<String>,
}

fn parse_exposition(body: &str) -> Exposition {
    let mut families: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, help] => {
                assert!(!help.trim().is_empty(), "{name} has empty HELP");
                families.entry(name.to_string()).or_default().1 = true;
            }
            ["#", "TYPE", name, kind] => {
                families.entry(name.to_string()).or_default().0 = kind.to_string();
            }
            _ if line.is_empty() || line.starts_with('#') => {}
            _ => samples.push(line.to_owned()),
        }
    }
    Exposition { families, samples }
}

/// The value of the one sample whose line starts with `series` (name and labels as printed).
fn sample(exposition: &Exposition, series: &str) -> Option<f64> {
    exposition
        .samples
        .iter()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(served_base: &str) -> Exposition {
    let body = reqwest::get(format!("{served_base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_exposition(&body)
}

async fn started(run: &Invocation) -> (Served, String) {
    let port = free_port();
    let mut served = run.serve(&format!("127.0.0.1:{port}"));
    assert!(
        served.printed("listening", Duration::from_secs(60)).await,
        "{}",
        served.logs()
    );
    (served, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions_and_the_gauges_move() {
    let db = TestDb::new().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[flows.\"test.flow\"]\nengine = \"generic\"\nurl = \"http://127.0.0.1:9/secret-hook-path\"\n",
    )
    .unwrap();
    let base = Invocation::default()
        .env("DATABASE_URL", &db.url)
        .env("ORCHESTRATOR_CONFIG", config.path().to_str().unwrap())
        .env("ORCH__METRICS__GAUGE_INTERVAL_MS", "100");
    // Intake only: what it files waits in the queue.
    let (mut intake, intake_url) =
        started(&base.clone().env("ORCH__WORKERS__CONCURRENCY", "0")).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{intake_url}/orchestrate"))
        .json(&json!({"intent": "system.echo", "inputs": {"n": 1}, "async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "no worker: it waits");
    let job_status_url = resp.headers()["location"].to_str().unwrap().to_owned();
    let queued = "orchestrator_jobs{status=\"queued\"}";
    assert!(
        eventually(Duration::from_secs(10), || async {
            sample(&scrape(&intake_url).await, queued) == Some(1.0)
        })
        .await,
        "the queued gauge shows the waiting job"
    );
    let age = sample(
        &scrape(&intake_url).await,
        "orchestrator_oldest_queued_job_age_seconds",
    )
    .unwrap();
    assert!(age >= 0.0);

    // A worker instance runs it: the gauge falls back, and the job is counted once across
    // both instances although the intake instance also hears that it finished.
    let waiter = client
        .post(format!("{intake_url}/orchestrate"))
        .json(&json!({"intent": "system.sleep", "inputs": {"ms": 300}, "timeout_ms": 20000}))
        .send();
    let (mut worker, worker_url) = started(&base).await;
    let resp = waiter.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "woken across instances");
    let done = eventually(Duration::from_secs(10), || async {
        client
            .get(format!("{intake_url}{job_status_url}"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["status"]
            == "succeeded"
    })
    .await;
    assert!(done);
    assert!(
        eventually(Duration::from_secs(10), || async {
            sample(&scrape(&intake_url).await, queued) == Some(0.0)
        })
        .await
    );
    let finished = |e: &Exposition, intent: &str| {
        sample(
            e,
            &format!(
                "orchestrator_jobs_finished_total{{intent=\"{intent}\",status=\"succeeded\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // The worker counts a job just after the commit that finishes it, which may be a moment
    // after the intake instance's waiter heard of that commit.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let on_worker = scrape(&worker_url).await;
            finished(&on_worker, "system.sleep") >= 1.0
                && finished(&on_worker, "system.echo") >= 1.0
        })
        .await,
        "the worker counted both jobs: worker {:?}, intake {:?}, trail {:?}",
        {
            let w = scrape(&worker_url).await;
            (finished(&w, "system.sleep"), finished(&w, "system.echo"))
        },
        {
            let i = scrape(&intake_url).await;
            (finished(&i, "system.sleep"), finished(&i, "system.echo"))
        },
        sqlx::query_as::<_, (Option<String>, String, Option<uuid::Uuid>)>(
            "SELECT intent, kind, instance_id FROM audit_events ORDER BY id"
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    );
    let (on_intake, on_worker) = (scrape(&intake_url).await, scrape(&worker_url).await);
    assert_eq!(
        finished(&on_intake, "system.sleep"),
        0.0,
        "heard, not counted"
    );
    assert_eq!(finished(&on_worker, "system.sleep"), 1.0);
    assert_eq!(finished(&on_worker, "system.echo"), 1.0);

    for e in [&on_intake, &on_worker] {
        for (name, (kind, has_help)) in &e.families {
            assert!(*has_help, "{name} has HELP");
            assert!(name.starts_with("orchestrator_"), "{name} has the prefix");
            match kind.as_str() {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(
                    name.ends_with("_seconds") || name.ends_with("_size"),
                    "{name}: a histogram of seconds, or of a count"
                ),
                "gauge" => assert!(!name.ends_with("_total"), "{name}"),
                other => panic!("{name} has type {other:?}"),
            }
        }
        for gauge in [
            "orchestrator_jobs{status=\"running\"}",
            "orchestrator_jobs{status=\"awaiting_callback\"}",
            "orchestrator_callback_deliveries{status=\"pending\"}",
            "orchestrator_callback_deliveries{status=\"exhausted\"}",
            "orchestrator_db_pool_connections{state=\"idle\"}",
            "orchestrator_db_pool_connections{state=\"in_use\"}",
            "orchestrator_db_pool_max_connections",
            "orchestrator_flow_breaker_state{intent=\"test.flow\"}",
            "orchestrator_build_info{version=",
        ] {
            assert!(sample(e, gauge).is_some(), "{gauge} is exported");
        }
        assert!(
            !e.samples.iter().any(|s| s.contains("secret-hook-path")),
            "flow URLs stay out of /metrics"
        );
    }
    // The batch-size histogram counts jobs, not seconds.
    assert!(
        on_worker
            .samples
            .iter()
            .any(|s| { s.starts_with("orchestrator_completion_batch_size_bucket{le=\"256\"}") })
    );
    assert!(on_intake.samples.iter().any(|s| {
        s.starts_with("orchestrator_http_request_duration_seconds_bucket{method=\"POST\",route=\"/orchestrate\",status=\"202\"")
    }));

    // The access log: method, route, status, duration, request id and principal, at INFO.
    intake.stop().await;
    worker.stop().await;
    let logs = intake.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("access") && l.contains("route=\"/orchestrate\""))
        .unwrap_or_else(|| panic!("no access line:\n{logs}"));
    for field in [
        "INFO",
        "method=\"POST\"",
        "status=202",
        "duration_ms=",
        "request_id=\"",
        "principal=\"anonymous\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

/// The metric families a PromQL text names (`orchestrator_…`, histogram suffixes folded).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("orchestrator_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alert_rules_and_dashboard_use_what_the_server_exports() {
    let rules = repo_file("docs/monitoring/alerts.yml");
    let dashboard = repo_file("docs/monitoring/grafana-dashboard.json");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    // Every name the server describes (HELP), from the one list in telemetry.rs.
    let described = metric_names(&repo_file("src/telemetry/mod.rs"));
    for (file, text) in [
        ("alerts.yml", &rules),
        ("grafana-dashboard.json", &dashboard),
    ] {
        let used = metric_names(text);
        assert!(used.len() >= 8, "{file} uses {used:?}");
        for name in used {
            assert!(
                described.contains(&name),
                "{file} uses {name}, which the server does not export"
            );
        }
    }
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !prerequisite(
        promtool.exists(),
        "promtool (Debian package prometheus; .ci/run installs it)",
    ) {
        return;
    }
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
