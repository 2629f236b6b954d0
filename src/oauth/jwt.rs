//! Access tokens from an external identity provider: JWTs signed with one of the provider's
//! keys (its JWKS, fetched and cached), for this server's audience, from the configured issuer.
//! Only asymmetric algorithms: an HMAC token would need a secret shared with every resource.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{Jwk, JwkSet},
};
use serde_json::Value;

use super::ExternalIdpConfig;
use crate::callbacks::SafeClient;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MAX_BYTES: usize = 256 * 1024;
/// An unknown `kid` fetches the keys again, but not more often than this (a flood of tokens
/// with made-up ids must not become a flood of requests to the provider).
const REFETCH_FLOOR: Duration = Duration::from_secs(30);

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A verified token's subject and scopes.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub subject: String,
    pub scopes: Vec<String>,
}

struct Fetched {
    keys: JwkSet,
    at: Instant,
}

pub struct JwtVerifier {
    config: ExternalIdpConfig,
    audience: String,
    http: SafeClient,
    cache: Mutex<Option<Fetched>>,
    /// Serialises fetches, so concurrent requests with a new `kid` fetch once.
    fetching: tokio::sync::Mutex<()>,
}

impl JwtVerifier {
    pub fn new(config: ExternalIdpConfig, resource: &str, http: SafeClient) -> Self {
        let audience = if config.audience.is_empty() {
            resource.to_owned()
        } else {
            config.audience.clone()
        };
        Self {
            config,
            audience,
            http,
            cache: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedJwt, String> {
        let header = decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err("the token's algorithm is not its key's".into());
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("the signing key: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect();
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("the token was refused: {e}"))?
            .claims;
        let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
        let scopes = match &claims[self.config.scope_claim.as_str()] {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(VerifiedJwt { subject, scopes })
    }

    /// The key for `kid` (or the only key, when the token names none).
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, String> {
        if let Some(jwk) = self.cached(kid, self.config.jwks_ttl) {
            return Ok(jwk);
        }
        let _one_fetch = self.fetching.lock().await;
        // Fetched by another request meanwhile, or fetched too recently to try again.
        if let Some(jwk) = self.cached(kid, self.config.jwks_ttl) {
            return Ok(jwk);
        }
        let recent = self
            .cache
            .lock()
            .expect("jwks cache poisoned")
            .as_ref()
            .is_some_and(|f| f.at.elapsed() < REFETCH_FLOOR);
        if !recent {
            let keys = self.fetch().await?;
            *self.cache.lock().expect("jwks cache poisoned") = Some(Fetched {
                keys,
                at: Instant::now(),
            });
        }
        self.cached(kid, Duration::MAX)
            .ok_or_else(|| "no key of the identity provider matches the token".to_owned())
    }

    fn cached(&self, kid: Option<&str>, ttl: Duration) -> Option<Jwk> {
        let cache = self.cache.lock().expect("jwks cache poisoned");
        let fetched = cache.as_ref().filter(|f| f.at.elapsed() < ttl)?;
        match kid {
            Some(kid) => fetched.keys.find(kid).cloned(),
            None if fetched.keys.keys.len() == 1 => fetched.keys.keys.first().cloned(),
            None => None,
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let answer = self
            .http
            .unsigned()
            .fetch(&self.config.jwks_url, FETCH_TIMEOUT, JWKS_MAX_BYTES)
            .await
            .map_err(|e| format!("fetching the identity provider's keys: {e}"))?;
        if !answer.status.is_success() || answer.body_truncated {
            return Err(format!(
                "the identity provider's keys answered {}",
                answer.status
            ));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the identity provider's keys are not a JWKS: {e}"))
    }
}
