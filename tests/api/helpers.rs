//! The shared harness: a real PostgreSQL (a fresh database per test, copied from a migrated
//! template), real server instances on loopback, and helpers that wait on conditions.

use std::{
    future::Future,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use orchestrator::{
    app::{Application, BuildOptions},
    config::Config,
    db::embedded::EmbeddedPostgres,
    db::{self, MIGRATOR},
    tools::Tool,
};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::{
    Connection, Executor, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where test databases live: TEST_DATABASE_URL / DATABASE_URL when a server answers there,
/// else a private cluster under `target/` that stays up for later runs.
async fn server_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        let configured = std::env::var("TEST_DATABASE_URL")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let opts = PgConnectOptions::from_str(&configured).expect("a valid database URL");
        if db::server_answers(&opts).await {
            return with_database(&configured, "postgres");
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-pgdata");
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, true))
            .await
            .unwrap()
            .expect("a private PostgreSQL cluster for the tests");
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
        pg.detach();
        url
    })
    .await
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("a valid database URL");
    u.set_path(&format!("/{name}"));
    u.set_query(None);
    u.to_string()
}

/// A migrated template, made once per migration set and UTC day; tests copy it (much faster
/// than migrating every database). Per day because the migration that partitions history puts
/// everything before the next UTC midnight in `jobs_p_initial`: a template from an earlier day
/// sends today's jobs to a day partition instead, and the retention tests that file jobs into
/// the initial partition failed on a suite run just after midnight.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let admin_url = server_url().await;
            let fingerprint: String = MIGRATOR
                .iter()
                .map(|m| format!("{}{}", m.version, hex::encode(&m.checksum)))
                .collect();
            let digest = {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(fingerprint.as_bytes()))
            };
            let name = format!(
                "orch_test_tpl_{}_{}",
                &digest[..16],
                chrono::Utc::now().format("%Y%m%d")
            );
            let mut admin = PgConnection::connect(admin_url)
                .await
                .expect("admin connection");
            // Several test processes may race to build it.
            admin
                .execute("SELECT pg_advisory_lock(727274)")
                .await
                .unwrap();
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let building = format!("{name}_building");
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)").as_str())
                    .await
                    .unwrap();
                admin
                    .execute(format!("CREATE DATABASE {building}").as_str())
                    .await
                    .unwrap();
                let pool = PgPool::connect(&with_database(admin_url, &building))
                    .await
                    .unwrap();
                MIGRATOR.run(&pool).await.expect("migrations apply");
                pool.close().await;
                admin
                    .execute(format!("ALTER DATABASE {building} RENAME TO {name}").as_str())
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(727274)")
                .await
                .unwrap();
            start_sweeping_old_databases(admin_url);
            name
        })
        .await
}

/// Test databases are named with their creation time; drops those left by runs long gone.
/// In the background: each DROP DATABASE waits for a checkpoint (about 0.1 s on an idle
/// machine, seconds under load), and a day of runs leaves over a thousand of them, which
/// would hold up every test. One sweeper at a time across test processes; whatever is left
/// when the process exits is swept by a later run.
fn start_sweeping_old_databases(admin_url: &'static str) {
    // A thread with its own runtime: each test's runtime ends with the test.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let Ok(mut admin) = PgConnection::connect(admin_url).await else {
                return;
            };
            let sweeping: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(727275)")
                .fetch_one(&mut admin)
                .await
                .unwrap_or(false);
            if sweeping {
                sweep_old_databases(&mut admin).await;
            }
        });
    });
}

async fn sweep_old_databases(admin: &mut PgConnection) {
    // Templates of days before yesterday (a run that began before midnight may still copy
    // yesterday's), and those named before templates carried their day.
    let yesterday: i64 = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y%m%d")
        .to_string()
        .parse()
        .unwrap_or(0);
    let templates: Vec<String> =
        // Not `…_building`: another test process may be migrating that one right now.
        sqlx::query_scalar(
            "SELECT datname FROM pg_database \
             WHERE datname ~ '^orch_test_tpl_[0-9a-f]{16}(_[0-9]{8})?$'",
        )
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in templates {
        let day: i64 = name
            .rsplit('_')
            .next()
            .filter(|d| d.len() == 8)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if day < yesterday {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname ~ '^orch_test_[0-9]+_'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    for name in names {
        let born: i64 = name
            .trim_start_matches("orch_test_")
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now - born > 1800 {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// A fresh, migrated database of its own.
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::create(Some(template().await)).await
    }

    /// A database with nothing in it, not even the migrations.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let admin_url = server_url().await;
        let name = format!(
            "orch_test_{}_{}",
            chrono::Utc::now().timestamp(),
            Uuid::new_v4().simple()
        );
        let mut admin = PgConnection::connect(admin_url).await.unwrap();
        let from = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        admin
            .execute(format!("CREATE DATABASE {name}{from}").as_str())
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        if template.is_some() {
            // The template may have been migrated days ago: the partitions of history must
            // reach the present, as the server makes them at start.
            sqlx::query("SELECT ensure_history_partitions(7, now(), now() + interval '14 days')")
                .execute(&pool)
                .await
                .expect("history partitions");
        }
        Self { url, pool }
    }
}

pub const SIGNING_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const INGEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Fast-moving settings for tests: short leases and intervals, loopback callbacks allowed.
pub fn test_config(db: &TestDb) -> Config {
    let mut c = Config::default();
    c.database.url = Some(db.url.clone());
    c.database.max_connections = 8;
    // Generous: test machines may be busy; an acquire timeout would read as a 503.
    c.database.acquire_timeout = Duration::from_secs(20);
    c.database.embedded = false;
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace = Duration::from_secs(3);
    c.workers.concurrency = 8;
    c.workers.poll_interval = Duration::from_millis(200);
    c.workers.maintenance_interval = Duration::from_millis(200);
    // Long enough that a test process or database stalled for a few seconds (a busy CI
    // machine) does not make a worker give up its own attempt; tests that wait for a rescue
    // shorten it with `rescue_quickly`.
    c.workers.lease = Duration::from_secs(20);
    c.workers.heartbeat_interval = Duration::from_secs(2);
    c.workers.retry_base = Duration::from_millis(50);
    c.workers.retry_max = Duration::from_millis(400);
    c.callbacks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    c.callbacks.signing_secret = SIGNING_SECRET.into();
    c.callbacks.ingest_secret = INGEST_SECRET.into();
    c.callbacks.retry_schedule = vec![Duration::from_millis(100); 3];
    c.callbacks.timeout = Duration::from_secs(2);
    // Test servers listen on a port chosen at start; `/mcp` checks the Host header.
    c.mcp.allowed_hosts = vec!["127.0.0.1".into()];
    c
}

/// The lease of `rescue_quickly`'s instances.
pub const QUICK_RESCUE_LEASE: Duration = Duration::from_secs(2);

/// For instances whose jobs another instance must rescue within a test's patience: a 2-s
/// lease renewed every 500 ms (a stall of 1.5 s makes such an instance stop its own attempt).
pub fn rescue_quickly(c: &mut Config) {
    c.workers.lease = QUICK_RESCUE_LEASE;
    c.workers.heartbeat_interval = QUICK_RESCUE_LEASE / 4;
}

/// Key administration by the test, as an operator at the command line.
const OPERATOR: orchestrator::auth::admin::KeyAdmin<'static> =
    orchestrator::auth::admin::KeyAdmin {
        actor_kind: orchestrator::model::ActorKind::Operator,
        actor_id: None,
        actor_name: "test",
        request_id: None,
    };

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub instance_id: Uuid,
    /// The instance's live catalog (tests add and remove intents).
    pub registry: Arc<orchestrator::catalog::Registry>,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Each instance runs on a runtime of its own, so that killing it takes every task down.
    runtime: Option<tokio::runtime::Runtime>,
}

pub struct Spawn {
    pub db: Option<TestDb>,
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
    pub tools: Vec<Arc<dyn Tool>>,
    /// Apply the migrations at start, as `serve` does (test databases are copies of a
    /// migrated template, so most tests need not).
    pub migrate: bool,
}

impl Default for Spawn {
    fn default() -> Self {
        Self {
            db: None,
            configure: Box::new(|_| {}),
            tools: Vec::new(),
            migrate: false,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn(Spawn::default()).await
}

pub async fn spawn_with(configure: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    spawn(Spawn {
        configure: Box::new(configure),
        ..Default::default()
    })
    .await
}

/// Logs of the apps under test, when RUST_LOG asks for them (captured per test).
fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub async fn spawn(s: Spawn) -> TestApp {
    init_test_logging();
    let db = match s.db {
        Some(db) => db,
        None => TestDb::new().await,
    };
    let mut config = test_config(&db);
    (s.configure)(&mut config);
    let base_path = config.server.base_path.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tools, migrate) = (s.tools, s.migrate);
    let app = runtime
        .spawn(async move {
            Application::build(
                config,
                BuildOptions {
                    migrate,
                    extra_tools: tools,
                },
            )
            .await
        })
        .await
        .unwrap()
        .expect("app builds");
    let base = format!("http://{}{base_path}", app.local_addr());
    let instance_id = app.state().intake.workers().instance_id();
    let registry = app.state().registry.clone();
    let shutdown = app.shutdown_token();
    let handle = runtime.spawn(app.run_until_stopped());
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        db,
        instance_id,
        registry,
        shutdown,
        handle: Some(handle),
        runtime: Some(runtime),
    }
}

impl TestApp {
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    pub async fn orchestrate(&self, body: Value) -> Response {
        self.client
            .post(format!("{}/orchestrate", self.base))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn orchestrate_json(&self, body: Value) -> (StatusCode, Value) {
        let resp = self.orchestrate(body).await;
        let status = resp.status();
        (status, resp.json().await.expect("JSON body"))
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A new API key with these scopes (which closes an open API for good).
    pub async fn key(&self, name: &str, scopes: &[&str]) -> String {
        orchestrator::auth::admin::create_key(
            &orchestrator::store::Store::new(self.pool().clone()),
            name,
            &scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            None,
            &OPERATOR,
        )
        .await
        .expect("key created")
        .secret
    }

    /// Revokes a key as an operator would (`orchestrator keys revoke`: audited, notified).
    pub async fn revoke_key(&self, name: &str) {
        orchestrator::auth::admin::revoke_key(
            &orchestrator::store::Store::new(self.pool().clone()),
            name,
            &OPERATOR,
        )
        .await
        .expect("key revoked")
        .expect("an active key of that name");
    }

    /// POST without a body, with `Authorization: Bearer <key>`.
    pub async fn post_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET with `Authorization: Bearer <key>`.
    pub async fn get_json_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn job(&self, job_id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/jobs/{job_id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /jobs/{job_id}: {body}");
        body
    }

    /// Polls the job (test-side only) until its status is `want`.
    pub async fn wait_for_status(&self, job_id: &str, want: &str) -> Value {
        self.wait_for_status_within(job_id, want, Duration::from_secs(20))
            .await
    }

    /// [`TestApp::wait_for_status`] with a deadline of its own (for jobs that wait on
    /// external processes starting).
    pub async fn wait_for_status_within(
        &self,
        job_id: &str,
        want: &str,
        deadline: Duration,
    ) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let found = eventually(deadline, || async {
            let job = self.job(job_id).await;
            let reached = job["status"] == want;
            *last.lock().unwrap() = job;
            reached
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(
            found,
            "job {job_id} never reached {want}; last seen: {last}"
        );
        last
    }

    /// Graceful stop; returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let result = match self.handle.take() {
            Some(h) => h.await.expect("server task"),
            None => Ok(()),
        };
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        result
    }

    /// Simulates a crash: every task of the instance vanishes without any shutdown work.
    pub fn kill(&mut self) {
        self.handle.take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Re-checks `cond` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether a test's prerequisite (a program, a host name) is present. A test without it is
/// skipped with a note on stderr, except under `CI=true`, where a missing prerequisite fails
/// the test instead: CI must not pass what it did not run.
pub fn prerequisite(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is missing"
        );
        eprintln!("skipped: {what} is missing");
    }
    present
}

pub fn job_id(body: &Value) -> String {
    body["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id in {body}"))
        .to_owned()
}

/// `path`, installed first by `script` (run at most once per test run, with `dir_env` set to
/// `dir`) when it is missing, so a plain `cargo test` works on a fresh machine.
pub fn installed_by(
    script: &str,
    dir_env: &str,
    dir: &std::path::Path,
    path: std::path::PathBuf,
) -> std::path::PathBuf {
    static RUNS: std::sync::Mutex<Vec<(String, Result<(), String>)>> =
        std::sync::Mutex::new(Vec::new());
    if !path.exists() {
        let mut runs = RUNS.lock().unwrap();
        if !runs.iter().any(|(s, _)| s == script) {
            let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
            let outcome = std::process::Command::new(&full)
                .env(dir_env, dir)
                .status()
                .map_err(|e| format!("{} did not start: {e}", full.display()))
                .and_then(|status| {
                    status
                        .success()
                        .then_some(())
                        .ok_or_else(|| format!("{script} failed: {status}"))
                });
            runs.push((script.to_owned(), outcome));
        }
        if let Some((_, Err(why))) = runs.iter().find(|(s, _)| s == script) {
            panic!("what the tests need is not installed: {why}");
        }
    }
    assert!(
        path.exists(),
        "{} is missing after {script} ran",
        path.display()
    );
    path
}
