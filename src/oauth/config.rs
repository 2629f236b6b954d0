//! `[oauth]`: how `/mcp` accepts OAuth access tokens — from the built-in authorization server,
//! from an external identity provider's JWTs, or not at all (API keys only).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{duration, model::ConfigProblem};

/// Who issues the access tokens `/mcp` accepts (API keys are accepted as bearer tokens in
/// every mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OauthMode {
    /// This server: a person approves a client by signing in with an API key.
    #[default]
    Builtin,
    /// An identity provider's JWTs (Keycloak, Auth0, Entra ID, Okta…), see `[oauth.external]`.
    External,
    /// No OAuth: bearer API keys only.
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OauthConfig {
    pub mode: OauthMode,
    /// How long an access token is valid.
    #[serde(with = "duration::human")]
    pub access_token_ttl: Duration,
    /// How long a refresh token is valid (each use rotates it).
    #[serde(with = "duration::human")]
    pub refresh_token_ttl: Duration,
    /// How long an authorization code may wait for the token request.
    #[serde(with = "duration::human")]
    pub code_ttl: Duration,
    /// How long a fetched Client ID Metadata Document is trusted before it is fetched again.
    #[serde(with = "duration::human")]
    pub client_metadata_ttl: Duration,
    /// Development only: accept `http://` client metadata URLs on loopback addresses (the
    /// specification requires HTTPS).
    pub client_metadata_allow_http: bool,
    /// Scopes the protected-resource metadata and the 401 challenge suggest to clients.
    pub suggested_scopes: Vec<String>,
    pub external: ExternalIdpConfig,
}

impl Default for OauthConfig {
    fn default() -> Self {
        Self {
            mode: OauthMode::Builtin,
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            client_metadata_ttl: Duration::from_secs(3600),
            client_metadata_allow_http: false,
            suggested_scopes: vec!["*".into()],
            external: ExternalIdpConfig::default(),
        }
    }
}

/// `[oauth.external]`: an identity provider whose JWT access tokens `/mcp` accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalIdpConfig {
    /// The provider's issuer (`iss`), named in the protected-resource metadata.
    pub issuer: String,
    /// Where its signing keys are (`jwks_uri` of its metadata).
    pub jwks_url: String,
    /// The audience tokens must carry; empty: this server's resource URL (`<public_url>/mcp`).
    pub audience: String,
    /// The claim holding the granted scopes: a space-separated string or a list.
    pub scope_claim: String,
    /// How long fetched keys are used before they are fetched again (an unknown `kid` fetches
    /// at once, at most every 30 s).
    #[serde(with = "duration::human")]
    pub jwks_ttl: Duration,
    /// Allowed clock skew for `exp` and `nbf`.
    #[serde(with = "duration::human")]
    pub leeway: Duration,
}

impl Default for ExternalIdpConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            jwks_url: String::new(),
            audience: String::new(),
            scope_claim: "scope".into(),
            jwks_ttl: Duration::from_secs(600),
            leeway: Duration::from_secs(30),
        }
    }
}

impl OauthConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (field, value) in [
            ("oauth.access_token_ttl", self.access_token_ttl),
            ("oauth.refresh_token_ttl", self.refresh_token_ttl),
            ("oauth.code_ttl", self.code_ttl),
        ] {
            if value.is_zero() {
                out.push(ConfigProblem::new(field, "must be positive"));
            }
        }
        if self.code_ttl > Duration::from_secs(600) {
            out.push(ConfigProblem::new(
                "oauth.code_ttl",
                "at most 10m (authorization codes are short-lived)",
            ));
        }
        if self.mode == OauthMode::External {
            for (field, value) in [
                ("oauth.external.issuer", &self.external.issuer),
                ("oauth.external.jwks_url", &self.external.jwks_url),
            ] {
                if let Err(e) = url::Url::parse(value) {
                    out.push(ConfigProblem::new(
                        field,
                        format!("needs a URL with oauth.mode = \"external\" ({e})"),
                    ));
                }
            }
            if self.external.scope_claim.is_empty() {
                out.push(ConfigProblem::new(
                    "oauth.external.scope_claim",
                    "must name a claim",
                ));
            }
        }
        out
    }
}
