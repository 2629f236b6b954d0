//! The example workflows of `examples/n8n/` in a real n8n: the test variants (whose work is a
//! Code node) are imported with n8n's own CLI, activated, and run through `POST /orchestrate`
//! with the example `[flows]` configs — answering in the response (sync) and calling back to
//! `/callbacks/ingest` with the job's token (async).
//!
//! n8n is installed at a pinned version by `.ci/install-n8n` into `target/n8n` (or `N8N_DIR`).
//! The install takes minutes, so no test starts it: without n8n this test is skipped, or fails
//! under `CI=true` (`.ci/run` runs it only when the cache is there).

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use figment::providers::Format;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use orchestrator::tools::flow::{Completion, FlowConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, TestDb, eventually, job_id, prerequisite, spawn_with},
    process::free_port,
};

/// Where the example configs point; replaced by the test's n8n.
const EXAMPLE_BASE: &str = "http://n8n:5678";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> PathBuf {
    root().join("examples/n8n")
}

/// n8n's CLI, when `.ci/install-n8n` has installed it.
fn n8n_cli() -> Option<PathBuf> {
    let dir = std::env::var_os("N8N_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/n8n"));
    let cli = dir.join("node_modules/n8n/bin/n8n");
    prerequisite(
        cli.exists(),
        "n8n (run .ci/install-n8n: about 4.5 minutes on a clean cache)",
    )
    .then_some(cli)
}

/// A headless n8n on a free loopback port, with a user folder of its own under target/ and its
/// data in a schema of a fresh PostgreSQL database; nothing reaches the network.
struct N8n {
    base: String,
    folder: PathBuf,
    env: BTreeMap<&'static str, String>,
    cli: PathBuf,
    /// `n8n start`, once started (behind a lock: the wait for it reads it through `&self`).
    child: Mutex<Option<Child>>,
}

impl N8n {
    async fn new(cli: PathBuf) -> Self {
        let db = TestDb::new().await;
        sqlx::query("CREATE SCHEMA n8n")
            .execute(&db.pool)
            .await
            .unwrap();
        let url = url::Url::parse(&db.url).unwrap();
        let folder = root().join(format!("target/n8n-test/{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&folder).unwrap();
        let port = free_port();
        let env = BTreeMap::from([
            ("N8N_USER_FOLDER", folder.display().to_string()),
            ("N8N_ENCRYPTION_KEY", "orchestrator-tests-only".into()),
            ("N8N_LISTEN_ADDRESS", "127.0.0.1".into()),
            ("N8N_HOST", "127.0.0.1".into()),
            ("N8N_PORT", port.to_string()),
            ("N8N_PROTOCOL", "http".into()),
            ("DB_TYPE", "postgresdb".into()),
            ("DB_POSTGRESDB_HOST", url.host_str().unwrap().into()),
            ("DB_POSTGRESDB_PORT", url.port().unwrap_or(5432).to_string()),
            ("DB_POSTGRESDB_USER", url.username().into()),
            (
                "DB_POSTGRESDB_PASSWORD",
                url.password().unwrap_or("").into(),
            ),
            (
                "DB_POSTGRESDB_DATABASE",
                url.path().trim_start_matches('/').into(),
            ),
            ("DB_POSTGRESDB_SCHEMA", "n8n".into()),
            // No telemetry, version checks, templates, banners, license renewal or community
            // packages: nothing leaves the machine.
            ("N8N_DIAGNOSTICS_ENABLED", "false".into()),
            ("N8N_VERSION_NOTIFICATIONS_ENABLED", "false".into()),
            ("N8N_PERSONALIZATION_ENABLED", "false".into()),
            ("N8N_TEMPLATES_ENABLED", "false".into()),
            ("N8N_HIRING_BANNER_ENABLED", "false".into()),
            ("N8N_LICENSE_AUTO_RENEW_ENABLED", "false".into()),
            ("N8N_COMMUNITY_PACKAGES_ENABLED", "false".into()),
            ("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false".into()),
            // Code nodes in n8n's own process: task runners would need a broker port each.
            ("N8N_RUNNERS_ENABLED", "false".into()),
            ("N8N_LOG_LEVEL", "warn".into()),
        ]);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            folder,
            env,
            cli,
            child: Mutex::new(None),
        }
    }

    fn command(&self, args: &[&str], log: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.cli);
        cmd.args(args)
            .envs(&self.env)
            .current_dir(&self.folder)
            .stdin(Stdio::null());
        let log = std::fs::File::create(self.folder.join(log)).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        cmd
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.folder.join(name)).unwrap_or_default()
    }

    /// A one-shot CLI command, to its end (with a deadline).
    async fn run(&self, args: &[&str], log: &str) {
        let mut child = tokio::process::Command::from(self.command(args, log))
            .kill_on_drop(true)
            .spawn()
            .expect("n8n's CLI starts");
        let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
            .await
            .unwrap_or_else(|_| panic!("n8n {args:?} did not end within 3 minutes"))
            .unwrap();
        assert!(
            status.success(),
            "n8n {args:?}: {status}\n{}",
            self.log(log)
        );
    }

    /// Imports every workflow of `dir` (n8n validates them), activates them all, starts the
    /// server and waits until each workflow's webhook is registered.
    async fn serve(&self, dir: &Path, webhook_paths: &[&str]) {
        let input = format!("--input={}", dir.display());
        self.run(&["import:workflow", "--separate", &input], "import.log")
            .await;
        self.run(
            &["update:workflow", "--all", "--active=true"],
            "activate.log",
        )
        .await;
        let mut cmd = self.command(&["start"], "n8n.log");
        // Its own process group: stopping it stops whatever it started.
        cmd.process_group(0);
        *self.child.lock().unwrap() = Some(cmd.spawn().expect("n8n starts"));

        let client = reqwest::Client::new();
        let registered = eventually(Duration::from_secs(180), || async {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap();
            if let Some(status) = exited {
                panic!("n8n exited ({status}):\n{}", self.log("n8n.log"));
            }
            let mut all = true;
            for path in webhook_paths {
                // A webhook registered for POST answers a GET with 404 "not registered for
                // GET requests"; one not (yet) registered, "… is not registered".
                let answer = client
                    .get(format!("{}/webhook/{path}", self.base))
                    .send()
                    .await;
                let ready = match answer {
                    Ok(resp) => resp
                        .text()
                        .await
                        .unwrap_or_default()
                        .contains("not registered for GET requests"),
                    Err(_) => false,
                };
                all &= ready;
            }
            all
        })
        .await;
        assert!(
            registered,
            "n8n's webhooks were not registered within 3 minutes:\n{}",
            self.log("n8n.log")
        );
    }
}

impl Drop for N8n {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().ok().and_then(Option::take) {
            let group = Pid::from_raw(child.id() as i32);
            let _ = killpg(group, Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// The `[flows]` of an example config, valid as they are, pointed at `base`.
fn example_flows(file: &str, base: &str) -> Vec<(String, FlowConfig)> {
    #[derive(serde::Deserialize)]
    struct Example {
        flows: BTreeMap<String, FlowConfig>,
    }
    let example: Example =
        figment::Figment::from(figment::providers::Toml::file(examples().join(file)))
            .extract()
            .unwrap_or_else(|e| panic!("examples/n8n/{file}: {e}"));
    example
        .flows
        .into_iter()
        .map(|(intent, mut flow)| {
            let problems = flow.problems(&intent);
            assert!(problems.is_empty(), "{file}: {problems:?}");
            assert!(flow.url.starts_with(EXAMPLE_BASE), "{}", flow.url);
            flow.url = flow.url.replacen(EXAMPLE_BASE, base, 1);
            (intent, flow)
        })
        .collect()
}

/// An orchestrator whose `public_url` is its real address (n8n calls back there).
async fn orchestrator(flows: Vec<(String, FlowConfig)>) -> TestApp {
    let port = free_port();
    spawn_with(move |c| {
        c.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.server.public_url = format!("http://127.0.0.1:{port}");
        c.flows.extend(flows);
    })
    .await
}

/// Runs the intent and returns its finished job (waiting in the request, then polling).
async fn run(app: &TestApp, intent: &str, inputs: Value) -> Value {
    let (status, body) = app
        .orchestrate_json(json!({"intent": intent, "inputs": inputs, "timeout_ms": 30_000}))
        .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{intent}: {status} {body}"
    );
    let id = job_id(&body);
    let finished = eventually(Duration::from_secs(60), || async {
        let job = app.job(&id).await;
        ["succeeded", "failed"].contains(&job["status"].as_str().unwrap_or(""))
    })
    .await;
    let job = app.job(&id).await;
    assert!(finished, "{intent} never finished: {job}");
    assert_eq!(job["mode"], "flow", "{job}");
    job
}

fn succeeded(job: &Value) -> &Value {
    assert_eq!(job["status"], "succeeded", "{job}");
    &job["result"]
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

/// Every intent once, and calendar.schedule once with inputs its workflow refuses.
async fn exercise(app: &TestApp, completion: Completion) {
    let job = run(
        app,
        "gmail.triage",
        json!({"since": "1 hour ago", "labels": ["inbox"]}),
    )
    .await;
    let triage = succeeded(&job);
    assert_eq!(triage["processed"], 3, "{triage}");
    assert_eq!(triage["since"], "1 hour ago");
    assert!(
        triage["query"].as_str().unwrap().ends_with(" label:inbox"),
        "{triage}"
    );
    assert_eq!(ids(&triage["urgent"]), ["msg-1"]);
    assert_eq!(ids(&triage["needs_reply"]), ["msg-2"]);
    assert_eq!(ids(&triage["low_priority"]), ["msg-3"]);

    let job = run(
        app,
        "slack.summarize",
        json!({"channel": "C0123456789", "since": "2 hours ago"}),
    )
    .await;
    let summary = succeeded(&job);
    assert_eq!(summary["channel"], "C0123456789");
    assert_eq!(summary["message_count"], 3, "a join is not a message");
    assert_eq!(
        summary["participants"],
        json!([{"user": "U01ALICE", "messages": 2}, {"user": "U02BOB", "messages": 1}])
    );
    assert_eq!(summary["highlights"][0]["user"], "U02BOB", "{summary}");
    assert!(
        summary["summary"]
            .as_str()
            .unwrap()
            .starts_with("3 messages from 2 people."),
        "{summary}"
    );

    let job = run(
        app,
        "calendar.schedule",
        json!({
            "title": "Design review",
            "start": "2030-01-15T10:00:00Z",
            "duration_minutes": 45,
            "attendees": ["alice@example.com", "bob@example.com"]
        }),
    )
    .await;
    let event = succeeded(&job);
    assert_eq!(event["title"], "Design review");
    assert_eq!(event["start"], "2030-01-15T10:00:00.000Z");
    assert_eq!(event["end"], "2030-01-15T10:45:00.000Z");
    assert_eq!(
        event["attendees"],
        json!(["alice@example.com", "bob@example.com"])
    );
    assert!(event["event_id"].as_str().unwrap().starts_with("evt"));

    // The workflow refuses: sync answers 422 (failed at once, not retried); async calls back
    // with status error.
    let job = run(
        app,
        "calendar.schedule",
        json!({
            "title": "Backwards",
            "start": "2030-01-15T10:00:00Z",
            "end": "2030-01-15T09:00:00Z",
            "attendees": ["alice@example.com"]
        }),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    let code = match completion {
        Completion::Sync => "flow_rejected",
        Completion::Async => "flow_error",
    };
    assert_eq!(job["error"]["code"], code, "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("end: must be a date after start"),
        "{job}"
    );
}

#[tokio::test]
async fn the_example_workflows_run_in_a_real_n8n_answering_and_calling_back() {
    let Some(cli) = n8n_cli() else { return };
    let n8n = N8n::new(cli).await;
    n8n.serve(
        &examples().join("test"),
        &[
            "gmail-triage",
            "slack-summarize",
            "calendar-schedule",
            "gmail-triage-async",
            "slack-summarize-async",
            "calendar-schedule-async",
        ],
    )
    .await;

    // Sync: the Webhook node answers with what the Respond node sends.
    let app = orchestrator(example_flows("flows.toml", &n8n.base)).await;
    exercise(&app, Completion::Sync).await;
    let ingested: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE kind = 'callback.in'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(ingested, 0, "sync flows answer in the response");

    // Async: n8n answers "Workflow was started"; its HTTP Request node reports to
    // /callbacks/ingest with the job's token.
    let app = orchestrator(example_flows("flows.async.toml", &n8n.base)).await;
    exercise(&app, Completion::Async).await;
    let ingests: Vec<(Option<String>, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT auth_method, outcome, http_status FROM audit_events \
         WHERE kind = 'callback.in' ORDER BY id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(ingests.len(), 4, "one callback a job: {ingests:?}");
    for (auth, _, status) in &ingests {
        assert_eq!(auth.as_deref(), Some("token"), "{ingests:?}");
        assert_eq!(*status, Some(200), "{ingests:?}");
    }
}

/// The workflows of a folder of examples, by file name.
fn workflows(dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

#[test]
fn every_example_workflow_uses_nodes_and_credentials_of_the_pinned_n8n_and_matches_its_config() {
    let Some(cli) = n8n_cli() else { return };
    let node_modules = cli.ancestors().nth(3).unwrap();
    let types = node_modules.join("n8n-nodes-base/dist/types");
    let read = |f: &str| -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(types.join(f)).unwrap()).unwrap()
    };
    let (nodes, credentials) = (read("nodes.json"), read("credentials.json"));
    let urls: Vec<String> = ["flows.toml", "flows.async.toml"]
        .iter()
        .flat_map(|f| example_flows(f, EXAMPLE_BASE))
        .map(|(_, flow)| flow.url)
        .collect();
    let real = workflows(&examples());
    let test = workflows(&examples().join("test"));
    assert_eq!(real.len(), 6);
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        test.keys().collect::<Vec<_>>()
    );
    for (file, wf) in real.iter().chain(&test) {
        let names: Vec<&str> = wf["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        for node in wf["nodes"].as_array().unwrap() {
            let kind = node["type"].as_str().unwrap();
            let version = &node["typeVersion"];
            let known = nodes.iter().find(|d| {
                Some(d["name"].as_str().unwrap()) == kind.strip_prefix("n8n-nodes-base.")
                    && (d["version"] == *version
                        || d["version"].as_array().is_some_and(|v| v.contains(version)))
            });
            let known = known.unwrap_or_else(|| panic!("{file}: {kind} v{version} is unknown"));
            for (credential, _) in node["credentials"].as_object().into_iter().flatten() {
                assert!(
                    credentials.iter().any(|c| c["name"] == *credential)
                        && known["credentials"]
                            .as_array()
                            .is_some_and(|cs| cs.iter().any(|c| c["name"] == *credential)),
                    "{file}: {kind} takes no {credential} credential"
                );
            }
        }
        for (from, outputs) in wf["connections"].as_object().unwrap() {
            assert!(names.contains(&from.as_str()), "{file}: {from}");
            for to in outputs["main"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|o| o.as_array().unwrap())
            {
                assert!(
                    names.contains(&to["node"].as_str().unwrap()),
                    "{file}: {to}"
                );
            }
        }
        let webhook = &wf["nodes"][0];
        assert_eq!(webhook["name"], "Webhook", "{file}");
        let path = webhook["parameters"]["path"].as_str().unwrap();
        assert!(
            urls.contains(&format!("{EXAMPLE_BASE}/webhook/{path}")),
            "{file}: no example config calls /webhook/{path}"
        );
        let text = wf.to_string();
        if file.ends_with(".async.json") {
            assert!(path.ends_with("-async"), "{file}");
            assert!(webhook["parameters"].get("responseMode").is_none());
            assert!(text.contains(".callback.url") && text.contains(".callback.token"));
        } else {
            assert_eq!(webhook["parameters"]["responseMode"], "responseNode");
            assert!(text.contains("n8n-nodes-base.respondToWebhook"), "{file}");
        }
    }
}
