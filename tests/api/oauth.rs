//! OAuth 2.1 for `/mcp`: the built-in authorization server driven by rmcp's OAuth client (the
//! whole flow, from the 401 to revocation) and by raw HTTP for what a client should never send;
//! Client ID Metadata Documents served on loopback.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{StatusCode, redirect::Policy};
use rmcp::{
    ServiceExt,
    transport::{
        StreamableHttpClientTransport,
        auth::{AuthClient, AuthorizationManager, AuthorizationRequest, AuthorizationSession},
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{TestApp, eventually, spawn_with},
    mcp_server::{SESSION, TestClient, call, connect_to, structured},
    process::free_port,
};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// An instance whose `public_url` is its real address (tokens are bound to `<public_url>/mcp`).
pub async fn spawn_oauth(
    configure: impl FnOnce(&mut orchestrator::config::Config) + Send + 'static,
) -> TestApp {
    let port = free_port();
    spawn_with(move |c| {
        c.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.server.public_url = format!("http://127.0.0.1:{port}");
        c.oauth.client_metadata_allow_http = true;
        configure(c);
    })
    .await
}

/// A client that does not follow redirects (the test reads them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The consent form's hidden fields, as a browser would submit them.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| {
            let attr = |name: &str| {
                let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                let len = rest[start..].find('"').unwrap();
                unescape(&rest[start..start + len])
            };
            (attr("name"), attr("value"))
        })
        .collect()
}

/// Opens the consent page at `url` and submits it with `key` and `decision`; the redirect.
pub async fn submit_consent(url: &str, key: Option<&str>, decision: &str) -> reqwest::Response {
    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the consent page opens");
    let action = {
        let u = url::Url::parse(url).unwrap();
        format!("{}/oauth/authorize", u.origin().ascii_serialization())
    };
    let html = page.text().await.unwrap();
    let mut form = hidden_fields(&html);
    if let Some(key) = key {
        form.push(("api_key".into(), key.into()));
    }
    form.push(("decision".into(), decision.into()));
    browser().post(action).form(&form).send().await.unwrap()
}

fn location(resp: &reqwest::Response) -> url::Url {
    url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap()
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Registers a public client with RFC 7591.
pub async fn register(app: &TestApp, redirect: &str) -> String {
    let resp = browser()
        .post(format!("{}/oauth/register", app.base))
        .json(
            &json!({"client_name": "Raw Test Client", "redirect_uris": [redirect],
                      "token_endpoint_auth_method": "none"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

pub fn authorize_url(app: &TestApp, client_id: &str, challenge: &str, scope: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", app.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st-123")
        .append_pair("scope", scope)
        .append_pair("resource", &format!("{}/mcp", app.base));
    url.to_string()
}

/// Approves `client_id` with `key`: the authorization code.
pub async fn approve(
    app: &TestApp,
    client_id: &str,
    challenge: &str,
    scope: &str,
    key: &str,
) -> String {
    let resp = submit_consent(
        &authorize_url(app, client_id, challenge, scope),
        Some(key),
        "approve",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let back = location(&resp);
    assert_eq!(query(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(
        query(&back, "iss").as_deref(),
        Some(app.base.as_str()),
        "RFC 9207"
    );
    query(&back, "code").unwrap_or_else(|| panic!("a code: {back}"))
}

pub async fn token_request(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = browser()
        .post(format!("{}/oauth/token", app.base))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    (status, resp.json().await.unwrap())
}

pub async fn exchange(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    token_request(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await
}

pub async fn refresh(app: &TestApp, client_id: &str, refresh_token: &str) -> (StatusCode, Value) {
    token_request(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The whole flow by raw HTTP: (client_id, token answer).
pub async fn tokens_for(app: &TestApp, key: &str, scope: &str) -> (String, Value) {
    let client_id = register(app, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = approve(app, &client_id, &challenge, scope, key).await;
    let (status, tokens) = exchange(app, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (client_id, tokens)
}

/// `/mcp`'s answer to a stateless `tools/list` with `token`, and its challenge.
pub async fn mcp_status(app: &TestApp, token: &str) -> (StatusCode, String) {
    let resp = app
        .client
        .post(format!("{}/mcp", app.base))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta":
            crate::mcp_server::stateless_meta(json!({}))}}),
        )
        .send()
        .await
        .unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status(), challenge)
}

async fn audit_kinds(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT kind, outcome FROM audit_events WHERE kind LIKE 'oauth.%' ORDER BY id")
        .fetch_all(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_rmcp_client_discovers_registers_is_approved_calls_refreshes_and_is_revoked() {
    let app = spawn_oauth(|c| c.mcp.call_wait = Duration::from_millis(300)).await;
    let key = app.key("alice", &["*"]).await;
    let mcp = format!("{}/mcp", app.base);

    // Discovery starts from the 401's challenge.
    let resp = app
        .client
        .post(&mcp)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\", scope=\"*\"",
            app.base
        )
    );

    let manager = AuthorizationManager::new(mcp.as_str()).await.unwrap();
    let resolved = manager
        .resolve_metadata_from_challenge(Some(&challenge))
        .await
        .expect("metadata discovered from the challenge");
    assert!(resolved.source.is_discovered(), "{:?}", resolved.source);
    let mut manager = manager;
    manager.set_metadata(resolved.metadata);
    // Registration (RFC 7591: the client names no metadata document) and the authorization URL.
    let session = AuthorizationSession::new(
        manager,
        AuthorizationRequest::new(REDIRECT).with_client_name("rmcp test client"),
    )
    .await
    .map_err(|(_, e)| e)
    .expect("registered");
    let consent = browser()
        .get(session.get_authorization_url())
        .send()
        .await
        .unwrap();
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("rmcp test client"),
        "the client's name is shown"
    );
    assert!(html.contains("127.0.0.1"), "and where the answer goes");
    assert!(html.contains("name=\"api_key\""));
    // The person signs in with their key and approves.
    let back = submit_consent(session.get_authorization_url(), Some(&key), "approve").await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let back = back.headers()["location"].to_str().unwrap().to_owned();
    session
        .handle_callback_url(&back)
        .await
        .expect("the code is exchanged (iss checked)");
    let manager = session.auth_manager;
    let (client_id, first) = manager.get_credentials().await.unwrap();
    let first = serde_json::to_value(first.expect("tokens")).unwrap();
    assert!(first["access_token"].as_str().unwrap().starts_with("oat_"));
    // rmcp asks for every scope the metadata lists; the key holds `*`, so all are granted.
    let granted: Vec<&str> = first["scope"].as_str().unwrap().split(' ').collect();
    assert!(granted.contains(&"*"), "{granted:?}");

    let auth = AuthClient::new(reqwest::Client::default(), manager);
    let transport = StreamableHttpClientTransport::with_client(
        auth.clone(),
        StreamableHttpClientTransportConfig::with_uri(mcp.clone()),
    );
    let client = TestClient::new(SESSION)
        .serve(transport)
        .await
        .expect("connected with the token");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(names.iter().any(|n| n == "memory_write"), "{names:?}");
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let wrote = call(
        &client,
        "memory_write",
        json!({"text": format!("oauth note {marker}"), "tags": ["oauth"]}),
    )
    .await;
    assert_eq!(wrote.is_error, Some(false), "{wrote:?}");
    let found = call(&client, "memory_search", json!({"query": marker})).await;
    assert!(
        structured(&found).to_string().contains(&marker),
        "{}",
        structured(&found)
    );
    // A long call answers with a job handle, then job_status.
    let handle = call(&client, "system_sleep", json!({"ms": 1200})).await;
    let job_id = structured(&handle)["job_id"].as_str().unwrap().to_owned();
    let done = eventually(Duration::from_secs(20), || async {
        let r = call(
            &client,
            "job_status",
            json!({"job_id": job_id, "wait_ms": 300}),
        )
        .await;
        structured(&r)["job_status"] == "succeeded"
    })
    .await;
    assert!(done, "job_status reports the result");
    // The job was created by the key that approved the grant.
    let job_uuid = uuid::Uuid::parse_str(job_id.trim_start_matches("job_")).unwrap();
    let owner: Option<uuid::Uuid> = sqlx::query_scalar("SELECT api_key_id FROM jobs WHERE id = $1")
        .bind(job_uuid)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let key_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'alice'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(owner, Some(key_id));
    client.cancel().await.ok();

    // Refresh: a new pair; the refresh token rotates.
    let refreshed = auth
        .auth_manager
        .lock()
        .await
        .refresh_token()
        .await
        .unwrap();
    let refreshed = serde_json::to_value(refreshed).unwrap();
    assert_ne!(refreshed["access_token"], first["access_token"]);
    assert_ne!(refreshed["refresh_token"], first["refresh_token"]);
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&app, access).await.0, StatusCode::OK);

    // Revocation (RFC 7009) of the refresh token ends the grant: its access tokens stop working.
    let revoked = browser()
        .post(format!("{}/oauth/revoke", app.base))
        .form(&[
            ("token", refreshed["refresh_token"].as_str().unwrap()),
            ("client_id", client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let (status, challenge) = mcp_status(&app, access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    let kinds = audit_kinds(&app).await;
    for want in [
        ("oauth.client_registered", "ok"),
        ("oauth.grant", "approved"),
        ("oauth.token_issued", "ok"),
        ("oauth.token_refreshed", "ok"),
        ("oauth.grant_revoked", "ok"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, o)| k == want.0 && o.as_deref() == Some(want.1)),
            "{want:?} in {kinds:?}"
        );
    }
    let issued = [&first, &refreshed]
        .iter()
        .flat_map(|t| [t["access_token"].clone(), t["refresh_token"].clone()])
        .map(|t| t.as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let secrets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events a, unnest($1::text[]) AS t(token)
         WHERE strpos(concat(a.detail::text, a.error, a.excerpt), t.token) > 0",
    )
    .bind(&issued)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(secrets, 0, "no token in the audit trail");
}

#[tokio::test]
async fn discovery_documents_name_the_server_the_endpoints_and_what_they_support() {
    let app = spawn_oauth(|_| {}).await;
    let (status, prm) = app.get_json("/.well-known/oauth-protected-resource").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prm["resource"], format!("{}/mcp", app.base));
    assert_eq!(prm["authorization_servers"], json!([app.base]));
    let scopes = prm["scopes_supported"].as_array().unwrap();
    assert!(
        scopes.contains(&json!("*")) && scopes.contains(&json!("memory.*")),
        "{scopes:?}"
    );
    let (_, same) = app
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(same, prm, "the RFC 9728 path-suffixed form too");
    let (status, asm) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(asm["issuer"], app.base);
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(asm["client_id_metadata_document_supported"], true);
    assert_eq!(asm["authorization_response_iss_parameter_supported"], true);
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
    ] {
        assert!(
            asm[endpoint].as_str().unwrap().starts_with(&app.base),
            "{endpoint}"
        );
    }
}

#[tokio::test]
async fn a_grant_holds_what_was_asked_and_the_key_holds_and_nothing_more() {
    let app = spawn_oauth(|_| {}).await;
    let key = app.key("notes", &["memory.*"]).await;
    let (_, tokens) = tokens_for(&app, &key, "*").await;
    assert_eq!(tokens["scope"], "memory.*", "requested * ∩ memory.*");
    let client = connect_to(
        &format!("{}/mcp", app.base),
        tokens["access_token"].as_str().unwrap(),
        SESSION,
    )
    .await
    .unwrap();
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let intents: Vec<&String> = names.iter().filter(|n| !n.starts_with("job_")).collect();
    assert!(
        !intents.is_empty() && intents.iter().all(|n| n.starts_with("memory_")),
        "{names:?}"
    );
    let refused = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("system_echo")
                .with_arguments(crate::mcp_server::args(json!({"text": "hi"}))),
        )
        .await;
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("rror") || refused.contains("is_error: Some(true)"),
        "{refused}"
    );
    client.cancel().await.ok();

    // A key with none of the requested scopes grants nothing.
    let (verifier, challenge) = pkce();
    let _ = verifier;
    let client_id = register(&app, REDIRECT).await;
    let back = submit_consent(
        &authorize_url(&app, &client_id, &challenge, "ssh.exec"),
        Some(&key),
        "approve",
    )
    .await;
    let back = location(&back);
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_scope"));
}

#[tokio::test]
async fn codes_are_single_use_bound_to_pkce_redirect_and_client() {
    let app = spawn_oauth(|_| {}).await;
    let key = app.key("alice", &["*"]).await;
    let client_id = register(&app, REDIRECT).await;

    // PKCE mismatch: refused, and the code is spent.
    let (_, challenge) = pkce();
    let code = approve(&app, &client_id, &challenge, "memory.*", &key).await;
    let (wrong_verifier, _) = pkce();
    let (status, body) = exchange(&app, &client_id, &code, &wrong_verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // Redirect URI mismatch at the token endpoint.
    let (verifier, challenge) = pkce();
    let code = approve(&app, &client_id, &challenge, "memory.*", &key).await;
    let (status, body) = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Another client cannot redeem the code.
    let other = register(&app, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = approve(&app, &client_id, &challenge, "memory.*", &key).await;
    let (status, body) = exchange(&app, &other, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // A replayed code fails, and revokes what the first use obtained.
    let (verifier, challenge) = pkce();
    let code = approve(&app, &client_id, &challenge, "memory.*", &key).await;
    let (status, first) = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&app, access).await.0, StatusCode::OK);
    let (status, body) = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(mcp_status(&app, access).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = refresh(&app, &client_id, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE kind = 'oauth.refused'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(refused >= 4, "refusals are audited ({refused})");
}

#[tokio::test]
async fn the_authorization_endpoint_refuses_without_redirecting_where_it_cannot_trust() {
    let app = spawn_oauth(|_| {}).await;
    let key = app.key("alice", &["*"]).await;
    let client_id = register(&app, REDIRECT).await;
    let (_, challenge) = pkce();

    // An unregistered redirect URI: an error page, never a redirect there.
    let url = authorize_url(&app, &client_id, &challenge, "*").replace("callback", "evil");
    let resp = browser().get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("redirect_uri"));
    // An unknown client: the same.
    let resp = browser()
        .get(authorize_url(&app, "oc_nobody", &challenge, "*"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("location").is_none());

    // A trusted redirect URI hears of the rest: no PKCE, a foreign resource.
    let no_pkce = authorize_url(&app, &client_id, &challenge, "*")
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let resp = browser().get(no_pkce).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        query(&location(&resp), "error").as_deref(),
        Some("invalid_request")
    );
    let foreign = authorize_url(&app, &client_id, &challenge, "*").replace(
        &url::form_urlencoded::byte_serialize(format!("{}/mcp", app.base).as_bytes())
            .collect::<String>(),
        "https%3A%2F%2Fother.example%2Fmcp",
    );
    let resp = browser().get(foreign).send().await.unwrap();
    assert_eq!(
        query(&location(&resp), "error").as_deref(),
        Some("invalid_target")
    );

    // A wrong key is asked again; a denial goes back as access_denied and is audited.
    let resp = submit_consent(
        &authorize_url(&app, &client_id, &challenge, "*"),
        Some("orch_not-a-key"),
        "approve",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("not valid"));
    let audited = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM audit_events WHERE kind = 'auth.failed' AND target = '/oauth/authorize'",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(
        audited,
        "a wrong key on the consent page is a failed sign-in"
    );
    let resp = submit_consent(
        &authorize_url(&app, &client_id, &challenge, "*"),
        None,
        "deny",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let back = location(&resp);
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&back, "state").as_deref(), Some("st-123"));
    assert!(
        audit_kinds(&app)
            .await
            .iter()
            .any(|(k, o)| k == "oauth.grant" && o.as_deref() == Some("denied"))
    );
    let _ = key;

    // Registration refuses what it cannot honour, with RFC 7591's codes.
    for (metadata, code) in [
        (
            json!({"redirect_uris": ["http://example.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": "nope"}), "invalid_client_metadata"),
    ] {
        let resp = browser()
            .post(format!("{}/oauth/register", app.base))
            .json(&metadata)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{metadata}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code, "{metadata}");
    }
}

#[tokio::test]
async fn tokens_stop_working_when_expired_revoked_for_another_resource_or_their_key_is_revoked() {
    let app = spawn_oauth(|_| {}).await;
    let key = app.key("alice", &["*"]).await;

    // A token that expires while it is cached is refused from the moment it expires (the
    // cache keeps each token's expiry).
    let (_, tokens) = tokens_for(&app, &key, "*").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE oauth_tokens SET expires_at = now() + interval '1500 milliseconds'
         WHERE token_hash = sha256($1::text::bytea)",
    )
    .bind(&access)
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(mcp_status(&app, &access).await.0, StatusCode::OK);
    let last = std::sync::Mutex::new((StatusCode::OK, String::new()));
    // Sooner than the cache's 5 s would let a stale entry pass.
    let refused = eventually(Duration::from_secs(4), || async {
        let answer = mcp_status(&app, &access).await;
        let refused = answer.0 == StatusCode::UNAUTHORIZED;
        *last.lock().unwrap() = answer;
        refused
    })
    .await;
    let (_, challenge) = last.into_inner().unwrap();
    assert!(refused, "the expired token is refused");
    assert!(
        challenge.contains("invalid_token") && challenge.contains("resource_metadata="),
        "{challenge}"
    );

    // Revoking the access token itself.
    let (client_id, tokens) = tokens_for(&app, &key, "*").await;
    let access = tokens["access_token"].as_str().unwrap();
    browser()
        .post(format!("{}/oauth/revoke", app.base))
        .form(&[("token", access), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(mcp_status(&app, access).await.0, StatusCode::UNAUTHORIZED);

    // A token whose grant is for another resource (audience) is refused.
    let (_, tokens) = tokens_for(&app, &key, "*").await;
    let access = tokens["access_token"].as_str().unwrap();
    sqlx::query("UPDATE oauth_grants SET resource = 'https://other.example/mcp'")
        .execute(app.pool())
        .await
        .unwrap();
    let (status, challenge) = mcp_status(&app, access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("not this server"), "{challenge}");
    sqlx::query("UPDATE oauth_grants SET resource = $1")
        .bind(format!("{}/mcp", app.base))
        .execute(app.pool())
        .await
        .unwrap();

    // Refresh token reuse revokes the grant.
    let (client_id, tokens) = tokens_for(&app, &key, "*").await;
    let once = tokens["refresh_token"].as_str().unwrap();
    let (status, second) = refresh(&app, &client_id, once).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&app, &client_id, once).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        mcp_status(&app, second["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Revoking the approving key ends its grants (access and refresh).
    let (client_id, tokens) = tokens_for(&app, &key, "*").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&app, access).await.0, StatusCode::OK);
    app.revoke_key("alice").await;
    // The revocation's NOTIFY drops every instance's cache (sooner than its 5 s).
    assert!(
        eventually(Duration::from_secs(3), || async {
            mcp_status(&app, access).await.0 == StatusCode::UNAUTHORIZED
        })
        .await
    );
    let (status, _) = refresh(&app, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_client_id_metadata_document_is_fetched_and_its_redirect_uris_are_exact() {
    // The client's metadata document, served on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doc_url = format!("http://{}/client.json", listener.local_addr().unwrap());
    let doc = json!({"client_id": doc_url, "client_name": "Metadata Doc Client",
                     "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let served = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, served).await.unwrap() });

    let app = spawn_oauth(|_| {}).await;
    let key = app.key("alice", &["memory.*"]).await;
    let (verifier, challenge) = pkce();
    let page = browser()
        .get(authorize_url(&app, &doc_url, &challenge, "memory.*"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Metadata Doc Client"));
    let code = approve(&app, &doc_url, &challenge, "memory.*", &key).await;
    let (status, tokens) = exchange(&app, &doc_url, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "memory.*");
}

#[tokio::test]
async fn maintenance_purges_codes_and_tokens_a_day_after_they_expired() {
    let app = spawn_oauth(|_| {}).await;
    let key = app.key("alice", &["*"]).await;
    let (_, tokens) = tokens_for(&app, &key, "*").await;
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM oauth_tokens) + (SELECT count(*) FROM oauth_codes)",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    assert_eq!(
        count().await,
        3,
        "a spent code, an access and a refresh token"
    );
    sqlx::query("UPDATE oauth_tokens SET expires_at = now() - interval '23 hours'")
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE oauth_codes SET expires_at = now() - interval '25 hours'")
        .execute(app.pool())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { count().await == 2 }).await);
    sqlx::query("UPDATE oauth_tokens SET expires_at = now() - interval '25 hours'")
        .execute(app.pool())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { count().await == 0 }).await);
    assert_eq!(
        mcp_status(&app, tokens["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}
