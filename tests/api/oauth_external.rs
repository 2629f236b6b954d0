//! `oauth.mode = "external"`: JWT access tokens of an identity provider, checked against its
//! JWKS. The provider here is a key pair made by the test and a JWKS served on loopback.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::TestApp,
    mcp_server::{SESSION, connect_to},
    oauth::{mcp_status, spawn_oauth},
};

const ISSUER: &str = "https://idp.example.test/realms/ops";

struct Idp {
    key: EncodingKey,
    jwks_url: String,
    fetches: Arc<AtomicUsize>,
}

/// A P-256 key pair and its JWKS (`kid` = `k1`) served on loopback, counting fetches.
async fn identity_provider() -> Idp {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = json!({"keys": [jwk]});
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Idp {
        key,
        jwks_url,
        fetches,
    }
}

impl Idp {
    fn token(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        encode(&header, &claims, &self.key).unwrap()
    }
}

fn claims(app: &TestApp, scope: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": format!("{}/mcp", app.base), "sub": "alice@example.test",
           "iat": now, "exp": now + 300, "scope": scope})
}

#[tokio::test]
async fn jwts_of_the_configured_provider_for_this_resource_are_accepted_and_others_refused() {
    let idp = identity_provider().await;
    let jwks_url = idp.jwks_url.clone();
    let app = spawn_oauth(move |c| {
        c.oauth.mode = orchestrator::oauth::OauthMode::External;
        c.oauth.external.issuer = ISSUER.into();
        c.oauth.external.jwks_url = jwks_url;
    })
    .await;

    // Discovery points at the provider; this server is no authorization server.
    let (_, prm) = app.get_json("/.well-known/oauth-protected-resource").await;
    assert_eq!(prm["authorization_servers"], json!([ISSUER]));
    let (status, _) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token for this resource, with the provider's key: the scopes of its claim.
    let token = idp.token(claims(&app, "memory.*"));
    let client = connect_to(&format!("{}/mcp", app.base), &token, SESSION)
        .await
        .expect("the provider's token is accepted");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .filter(|n| !n.starts_with("job_"))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("memory_")),
        "{names:?}"
    );
    client.cancel().await.ok();
    // Keys were fetched once and are cached.
    assert_eq!(mcp_status(&app, &token).await.0, StatusCode::OK);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

    let now = chrono::Utc::now().timestamp();
    let mut wrong_audience = claims(&app, "memory.*");
    wrong_audience["aud"] = json!("https://another.example/mcp");
    let mut wrong_issuer = claims(&app, "memory.*");
    wrong_issuer["iss"] = json!("https://evil.example.test");
    let mut expired = claims(&app, "memory.*");
    expired["exp"] = json!(now - 3600);
    let hmac = encode(
        &Header::new(Algorithm::HS256),
        &claims(&app, "*"),
        &EncodingKey::from_secret(b"guessable").unwrap(),
    )
    .unwrap();
    let other_key = identity_provider().await.token(claims(&app, "*"));
    for (what, token) in [
        ("another audience", idp.token(wrong_audience)),
        ("another issuer", idp.token(wrong_issuer)),
        ("expired", idp.token(expired)),
        ("HMAC-signed", hmac),
        ("signed by another key", other_key),
        ("not a JWT", "opaque-garbage".to_owned()),
    ] {
        let (status, challenge) = mcp_status(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(challenge.contains(&app.base), "{what}: {challenge}");
    }
    // A flood of unknown key ids does not become a flood of fetches.
    assert!(idp.fetches.load(Ordering::SeqCst) <= 2);
}
