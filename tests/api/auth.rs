//! API keys: the authentication matrix, scopes, per-client visibility and idempotency, the
//! CLI and the `/keys` API.

use chrono::{Duration as ChronoDuration, Utc};
use orchestrator::{
    auth::admin::{KeyAdmin, create_key, revoke_key},
    store::Store,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, job_id, spawn_app, spawn_with};

const OPERATOR: KeyAdmin<'static> = KeyAdmin {
    actor_kind: orchestrator::model::ActorKind::Operator,
    actor_id: None,
    actor_name: "test",
    request_id: None,
};

async fn new_key(app: &TestApp, name: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    create_key(
        &Store::new(app.pool().clone()),
        name,
        &scopes,
        None,
        &OPERATOR,
    )
    .await
    .unwrap()
    .secret
}

async fn call(
    app: &TestApp,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", app.base);
    let mut req = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url),
    };
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn echo(n: i64) -> Value {
    json!({"intent": "system.echo", "inputs": {"n": n}})
}

#[tokio::test]
async fn without_keys_the_server_is_open_and_jobs_are_anonymous() {
    let app = spawn_app().await;
    let (status, body) = call(&app, None, "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = app.job(&job_id(&body)).await;
    assert_eq!(job["principal"], "anonymous");
    assert!(job["api_key_id"].is_null());
    assert_eq!(job["client_addr"], "127.0.0.1");
    assert!(job["request_id"].is_string());
}

#[tokio::test]
async fn the_authentication_matrix() {
    let app = spawn_app().await;
    let store = Store::new(app.pool().clone());
    let good = new_key(&app, "good", &["memory.*"]).await;
    let revoked = new_key(&app, "revoked", &["memory.*"]).await;
    revoke_key(&store, "revoked", &OPERATOR).await.unwrap();
    let expired = create_key(
        &store,
        "expired",
        &["memory.*".to_owned()],
        Some(Utc::now() - ChronoDuration::seconds(1)),
        &OPERATOR,
    )
    .await
    .unwrap()
    .secret;
    let write = json!({"intent": "memory.write", "inputs": {"text": "secret plans"}});

    let (status, problem) = call(&app, None, "POST", "/orchestrate", Some(write.clone())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no key once keys exist: {problem}"
    );
    assert_eq!(problem["code"], "unauthorized");
    for (key, what) in [
        ("orch_notarealkeyatallnotarealkeyatallnotarealk", "unknown"),
        (revoked.as_str(), "revoked"),
        (expired.as_str(), "expired"),
    ] {
        let (status, problem) =
            call(&app, Some(key), "POST", "/orchestrate", Some(write.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(if what == "unknown" { "not valid" } else { what })
        );
    }
    let (status, problem) = call(&app, Some(&good), "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["code"], "forbidden");
    assert_eq!(problem["missing_scope"], "system.echo");

    let (status, body) = call(
        &app,
        Some(&good),
        "POST",
        "/orchestrate",
        Some(write.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // X-API-Key works for clients that cannot set Authorization.
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("X-API-Key", &good)
        .json(&json!({"intent": "memory.search", "inputs": {"query": "plans"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = app
        .client
        .get(format!("{}/jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path} stays public");
    }
    // The ingest endpoint has its own verification, not API keys.
    let (status, problem) = call(&app, None, "POST", "/callbacks/ingest", Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Standard Webhooks"),
        "{problem}"
    );

    // Suggestions never name intents outside the key's scopes.
    let (status, problem) = call(
        &app,
        Some(&good),
        "POST",
        "/orchestrate",
        Some(json!({"intent": "system.ech", "inputs": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["suggestions"], json!([]));
    let (_, tools) = call(&app, Some(&good), "GET", "/tools", None).await;
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"].as_str().unwrap().starts_with("memory."))
    );

    // Failures are audited with the key's prefix, never the key.
    let failures = sqlx::query!(
        r#"SELECT count(*) AS "n!", count(*) FILTER (WHERE actor_name = 'revoked') AS "revoked!",
                  bool_or(coalesce(detail::text, '') LIKE '%' || $1 || '%') AS "leaked!"
           FROM audit_events WHERE kind = 'auth.failed'"#,
        revoked
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(failures.n >= 5, "{}", failures.n);
    assert_eq!(failures.revoked, 1);
    assert!(!failures.leaked);
}

#[tokio::test]
async fn auth_required_locks_everything_before_any_key_exists() {
    let app = spawn_with(|c| c.auth.required = true).await;
    let (status, _) = call(&app, None, "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, None, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_created_over_http_takes_effect_at_once() {
    let app = spawn_app().await;
    // Open mode bootstraps the first key.
    let (status, created) = call(
        &app,
        None,
        "POST",
        "/keys",
        Some(json!({"name": "admin", "scopes": ["keys:admin", "jobs:read:all", "*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let admin = created["key"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("orch_"));
    let (status, _) = call(&app, None, "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "enforced right away");

    let (status, reader) = call(
        &app,
        Some(&admin),
        "POST",
        "/keys",
        Some(json!({"name": "reader", "scopes": ["memory.search"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let reader = reader["key"].as_str().unwrap().to_owned();
    let (status, problem) = call(&app, Some(&reader), "GET", "/keys", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["missing_scope"], "keys:admin");
    let (status, problem) = call(
        &app,
        Some(&admin),
        "POST",
        "/keys",
        Some(json!({"name": "reader", "scopes": ["*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, problem) = call(
        &app,
        Some(&admin),
        "POST",
        "/keys",
        Some(json!({"name": "bad", "scopes": ["jobs:drop"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    let (_, keys) = call(&app, Some(&admin), "GET", "/keys", None).await;
    let listed: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["admin", "reader"]);
    assert!(
        keys.to_string().find(&reader).is_none(),
        "keys are never listed"
    );

    let (status, _) = call(&app, Some(&admin), "POST", "/keys/reader/revoke", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        Some(&reader),
        "POST",
        "/orchestrate",
        Some(json!({"intent": "memory.search", "inputs": {"query": "x"}})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "revocation takes effect at once"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar!("SELECT kind FROM audit_events WHERE kind LIKE 'key.%' ORDER BY id")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(kinds, ["key.created", "key.created", "key.revoked"]);
}

/// The listings of failed jobs take their ids from an index by key: a key never sees another
/// key's failed jobs there, not even by naming that key.
#[tokio::test]
async fn a_key_lists_only_its_own_failed_jobs_even_naming_another_key() {
    let app = spawn_app().await;
    let alice = new_key(&app, "alice", &["memory.*"]).await;
    let bob = new_key(&app, "bob", &["memory.*"]).await;
    let missing = json!({"intent": "memory.get",
                         "inputs": {"item_id": "mem_00000000000070008000000000000000"}});
    let (_, body) = call(&app, Some(&alice), "POST", "/orchestrate", Some(missing)).await;
    let failed = job_id(&body);
    let alice_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'alice'")
        .fetch_one(app.pool())
        .await
        .unwrap();

    let (_, own) = call(&app, Some(&alice), "GET", "/jobs?status=failed", None).await;
    assert_eq!(own["jobs"][0]["job_id"], failed.as_str(), "{own}");
    for path in [
        "/jobs?status=failed".to_owned(),
        "/jobs?status=failed&intent=memory.get".to_owned(),
        format!("/jobs?status=failed&api_key_id={alice_id}"),
        format!("/jobs?status=failed,cancelled,timed_out&intent=memory.get&api_key_id={alice_id}"),
    ] {
        let (status, page) = call(&app, Some(&bob), "GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert_eq!(
            page["jobs"],
            json!([]),
            "bob sees none of alice's jobs at {path}"
        );
    }
}

#[tokio::test]
async fn clients_see_only_their_own_jobs_unless_allowed_to_read_all() {
    let app = spawn_app().await;
    let alice = new_key(&app, "alice", &["system.*"]).await;
    let bob = new_key(&app, "bob", &["system.*"]).await;
    let auditor = new_key(&app, "auditor", &["jobs:read:all", "jobs:cancel"]).await;

    let (_, body) = call(&app, Some(&alice), "POST", "/orchestrate", Some(echo(1))).await;
    let id = job_id(&body);
    call(&app, Some(&bob), "POST", "/orchestrate", Some(echo(2))).await;

    let (status, job) = call(&app, Some(&alice), "GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["principal"], "alice");
    for path in [
        format!("/jobs/{id}"),
        format!("/jobs/{id}/events"),
        format!("/jobs/{id}/callbacks"),
    ] {
        let (status, _) = call(&app, Some(&bob), "GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot see {path}");
    }
    let (_, bobs) = call(&app, Some(&bob), "GET", "/jobs", None).await;
    let principals: Vec<&str> = bobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["principal"].as_str().unwrap())
        .collect();
    assert_eq!(principals, ["bob"]);
    let (_, all) = call(&app, Some(&auditor), "GET", "/jobs?status=succeeded", None).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let (status, _) = call(
        &app,
        Some(&auditor),
        "GET",
        &format!("/jobs/{id}/events"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, problem) = call(
        &app,
        Some(&alice),
        "POST",
        &format!("/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["missing_scope"], "jobs:cancel");
    let (status, _) = call(
        &app,
        Some(&auditor),
        "POST",
        &format!("/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "finished already, but visible and allowed"
    );
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_api_key() {
    let app = spawn_app().await;
    let alice = new_key(&app, "alice", &["system.*"]).await;
    let bob = new_key(&app, "bob", &["system.*"]).await;
    let send = |key: String, n: i64| {
        let app = &app;
        async move {
            let resp = app
                .client
                .post(format!("{}/orchestrate", app.base))
                .bearer_auth(key)
                .header("Idempotency-Key", "shared-key")
                .json(&echo(n))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s1, a) = send(alice.clone(), 1).await;
    let (s2, b) = send(bob.clone(), 2).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{b}");
    assert_ne!(a["job_id"], b["job_id"]);
    let (s3, again) = send(alice, 1).await;
    assert_eq!(s3, StatusCode::OK);
    assert_eq!(again["job_id"], a["job_id"]);
    assert_eq!(again["idempotent_replay"], true);
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_keys() {
    let app = spawn_app().await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(args)
            .env_remove("ORCHESTRATOR_CONFIG")
            .env("DATABASE_URL", &app.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key = cli(&[
        "keys",
        "create",
        "--name",
        "chatgpt",
        "--scopes",
        "memory.*,ssh.exec.peek",
    ])
    .trim()
    .to_owned();
    assert!(key.starts_with("orch_") && key.len() >= 48, "{key}");
    let listed = cli(&["keys", "list"]);
    assert!(
        listed.contains("chatgpt")
            && listed.contains("memory.*,ssh.exec.peek")
            && listed.contains("active")
    );
    assert!(!listed.contains(&key), "the key is shown only once");

    let (status, _) = call(
        &app,
        Some(&key),
        "POST",
        "/orchestrate",
        Some(json!({"intent": "memory.search", "inputs": {"query": "x"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let used = sqlx::query_scalar!("SELECT last_used_at FROM api_keys WHERE name = 'chatgpt'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let touched = crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
        sqlx::query_scalar!("SELECT last_used_at FROM api_keys WHERE name = 'chatgpt'")
            .fetch_one(app.pool())
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(used.is_some() || touched, "last use is recorded");

    cli(&["keys", "revoke", "chatgpt"]);
    assert!(cli(&["keys", "list"]).contains("revoked"));
    let (status, _) = call(
        &app,
        Some(&key),
        "POST",
        "/orchestrate",
        Some(json!({"intent": "memory.search", "inputs": {"query": "x"}})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "revoked from another process, seen through NOTIFY"
    );
}

#[tokio::test]
async fn revoking_or_expiring_every_key_never_reopens_the_api() {
    let app = spawn_app().await;
    let store = Store::new(app.pool().clone());
    let search = json!({"intent": "memory.search", "inputs": {"query": "plans"}});
    let (status, _) = call(&app, None, "POST", "/orchestrate", Some(search.clone())).await;
    assert_eq!(status, StatusCode::OK, "open before any key was created");

    new_key(&app, "only", &["memory.*"]).await;
    // Created outside the instance (as by the CLI): it hears of it by NOTIFY.
    assert!(
        refused_within_seconds(&app, &search).await,
        "the first key closes the API"
    );
    revoke_key(&store, "only", &OPERATOR).await.unwrap();
    let (status, problem) = call(&app, None, "POST", "/orchestrate", Some(search.clone())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the only key revoked: still closed: {problem}"
    );

    // Durable and shared: a fresh instance on the same database is closed too.
    let second = crate::helpers::spawn(crate::helpers::Spawn {
        db: Some(app.db.clone()),
        ..Default::default()
    })
    .await;
    let (status, _) = call(&second, None, "POST", "/orchestrate", Some(search.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Nobody takes it back through SQL either.
    let refused = sqlx::query("DELETE FROM server_settings WHERE name = 'auth.keys_required'")
        .execute(app.pool())
        .await;
    assert!(refused.is_err(), "the setting is permanent");

    // A key that expired at once closes a fresh database all the same.
    let other = spawn_app().await;
    create_key(
        &Store::new(other.pool().clone()),
        "brief",
        &["memory.*".to_owned()],
        Some(Utc::now() - ChronoDuration::seconds(1)),
        &OPERATOR,
    )
    .await
    .unwrap();
    assert!(
        refused_within_seconds(&other, &search).await,
        "an expired key closes the API too"
    );
}

/// Whether anonymous requests are refused within a few seconds (key changes made outside an
/// instance reach it by NOTIFY).
async fn refused_within_seconds(app: &TestApp, body: &Value) -> bool {
    crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        call(app, None, "POST", "/orchestrate", Some(body.clone()))
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await
}

#[tokio::test]
async fn auth_mode_required_locks_everything_before_any_key_exists() {
    let app = spawn_with(|c| c.auth.mode = orchestrator::auth::AuthMode::Required).await;
    let (status, problem) = call(&app, None, "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
}

#[tokio::test]
async fn a_key_creation_that_created_nothing_does_not_close_the_api() {
    let app = spawn_app().await;
    // Creating a key closes the API: a refused creation (the name is taken) must not be what
    // does it, so check the trigger fires per created row.
    sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) \
         VALUES (gen_random_uuid(), 'x', 'p', 'h', '{}') ON CONFLICT DO NOTHING",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let closed_by_insert: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM server_settings)")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(closed_by_insert);

    let fresh = spawn_app().await;
    sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, key_hash, scopes) \
         SELECT gen_random_uuid(), 'x', 'p', 'h', '{}' WHERE false",
    )
    .execute(fresh.pool())
    .await
    .unwrap();
    let (status, _) = call(&fresh, None, "POST", "/orchestrate", Some(echo(1))).await;
    assert_eq!(status, StatusCode::OK, "no key was created: still open");
}
