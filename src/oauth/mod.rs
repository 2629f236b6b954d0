//! OAuth 2.1 for `/mcp`, as the MCP authorization specification and ChatGPT and Claude require:
//! the resource server's token check, and the built-in authorization server (RFC 8414 metadata,
//! authorization code with PKCE S256, Client ID Metadata Documents and RFC 7591 registration,
//! rotating refresh tokens with reuse detection, RFC 7009 revocation) for deployments without an
//! identity provider; or JWTs from an external provider.
//!
//! A person approves a client by signing in with an API key; the grant holds the scopes asked
//! for, narrowed to the key's, and ends when the key is revoked or expires.

mod clients;
mod config;
pub mod error;
mod jwt;
mod scopes;
pub mod secrets;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use uuid::Uuid;

pub use clients::{ClientMetadata, Registered, check_redirect_uri};
pub use config::{ExternalIdpConfig, OauthConfig, OauthMode};
pub use error::{OauthError, OauthResult};
pub use scopes::grantable;

use crate::{
    auth::{Authenticated, Scopes},
    callbacks::SafeClient,
    model::Principal,
    store::{NewGrant, NewTokens, OauthAudit, OauthClientRecord, Redemption, Store},
};
use clients::Clients;
use jwt::JwtVerifier;

/// Where `/mcp` lives under `public_url`: the resource tokens are bound to.
pub const RESOURCE_PATH: &str = "/mcp";

/// How long a checked access token is trusted without asking the database again (as API keys
/// are: revocations notify every instance, which drops its cache at once; expiry is checked on
/// every use).
const ACCESS_CACHE_TTL: Duration = Duration::from_secs(5);
const ACCESS_CACHE_MAX: usize = 10_000;

struct CachedAccess {
    auth: Authenticated,
    valid_until: chrono::DateTime<Utc>,
    at: Instant,
}

pub struct Oauth {
    pub config: OauthConfig,
    store: Store,
    http: SafeClient,
    /// `<public_url>/mcp` (RFC 8707 resource; the audience of every token).
    resource: String,
    /// `public_url` without its trailing slash: the built-in server's issuer and the base of
    /// its endpoints.
    base: String,
    jwt: Option<JwtVerifier>,
    /// Access tokens checked lately, by hash.
    access_cache: Mutex<HashMap<Vec<u8>, CachedAccess>>,
}

/// A checked authorization request (the same checks for the consent page and its submission).
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: OauthClientRecord,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scopes: Vec<String>,
    pub code_challenge: String,
    pub resource: String,
}

/// What the authorization endpoint received (query or form).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct AuthorizationParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
}

/// An authorization request refused: either where it came from cannot be trusted (shown on a
/// page), or it can (sent back to the client's redirect URI).
#[derive(Debug)]
pub enum AuthorizationRefusal {
    Page(OauthError),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: OauthError,
    },
}

/// The token endpoint's form (both grants).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenParams {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub scope: String,
}

/// Who is calling the token or revocation endpoint.
pub struct ClientCredentials {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// Where a request came from, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

/// Why a bearer token was refused (said in the 401's `error_description`).
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Oauth {
    pub fn new(config: OauthConfig, public_url: &str, store: Store, http: SafeClient) -> Self {
        let base = public_url.trim_end_matches('/').to_owned();
        let resource = format!("{base}{RESOURCE_PATH}");
        let jwt = (config.mode == OauthMode::External)
            .then(|| JwtVerifier::new(config.external.clone(), &resource, http.clone()));
        Self {
            config,
            store,
            http,
            resource,
            base,
            jwt,
            access_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every checked access token (a key, grant or token was revoked somewhere).
    pub fn invalidate(&self) {
        self.access_cache
            .lock()
            .expect("access cache poisoned")
            .clear();
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The authorization server clients are sent to (none when OAuth is off).
    pub fn authorization_server(&self) -> Option<&str> {
        match self.config.mode {
            OauthMode::Builtin => Some(&self.base),
            OauthMode::External => Some(&self.config.external.issuer),
            OauthMode::Off => None,
        }
    }

    pub fn builtin(&self) -> bool {
        self.config.mode == OauthMode::Builtin
    }

    fn clients(&self) -> Clients<'_> {
        Clients {
            store: &self.store,
            http: &self.http,
            config: &self.config,
        }
    }

    pub async fn register(
        &self,
        meta: &ClientMetadata,
        raw: &serde_json::Value,
        ctx: &RequestContext,
    ) -> OauthResult<Registered> {
        self.clients()
            .register(
                meta,
                raw,
                ctx.request_id.as_deref(),
                ctx.client_addr.as_deref(),
            )
            .await
    }

    /// Checks an authorization request in the order RFC 6749 §4.1.2.1 asks: the client and its
    /// redirect URI first (a refusal of those must not redirect anywhere), then the rest.
    pub async fn check_authorization(
        &self,
        p: &AuthorizationParams,
    ) -> Result<AuthorizationRequest, AuthorizationRefusal> {
        let page = AuthorizationRefusal::Page;
        // A form sends empty fields for what the query left out.
        let p = &AuthorizationParams {
            state: p.state.clone().filter(|s| !s.is_empty()),
            resource: p.resource.clone().filter(|s| !s.is_empty()),
            redirect_uri: p.redirect_uri.clone().filter(|s| !s.is_empty()),
            ..p.clone()
        };
        let client_id = p
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| page(OauthError::InvalidRequest("client_id is required".into())))?;
        let client = self.clients().resolve(client_id).await.map_err(page)?;
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
            Some(uri) => {
                return Err(page(OauthError::InvalidRequest(format!(
                    "redirect_uri `{uri}` is not one the client registered (exact match)"
                ))));
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => {
                return Err(page(OauthError::InvalidRequest(
                    "redirect_uri is required (the client registered several)".into(),
                )));
            }
        };
        let redirect = |error| AuthorizationRefusal::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: p.state.clone(),
            error,
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(redirect(OauthError::UnsupportedResponseType(
                "response_type must be `code`".into(),
            )));
        }
        if p.code_challenge_method.as_deref() != Some("S256") {
            return Err(redirect(OauthError::InvalidRequest(
                "PKCE is required: code_challenge_method must be S256".into(),
            )));
        }
        let code_challenge = p
            .code_challenge
            .clone()
            .filter(|c| secrets::valid_challenge(c))
            .ok_or_else(|| {
                redirect(OauthError::InvalidRequest(
                    "code_challenge must be 43 base64url characters (S256)".into(),
                ))
            })?;
        let resource = self
            .check_resource(p.resource.as_deref())
            .map_err(redirect)?;
        let scopes = parse_scope(p.scope.as_deref()).map_err(redirect)?;
        Ok(AuthorizationRequest {
            client,
            redirect_uri,
            state: p.state.clone(),
            scopes,
            code_challenge,
            resource,
        })
    }

    /// RFC 8707: a resource, when named, must be this server's `/mcp`.
    fn check_resource(&self, asked: Option<&str>) -> OauthResult<String> {
        match asked {
            None => Ok(self.resource.clone()),
            Some(r) if r.trim_end_matches('/') == self.resource => Ok(self.resource.clone()),
            Some(r) => Err(OauthError::InvalidTarget(format!(
                "resource `{r}` is not served here (this server is `{}`)",
                self.resource
            ))),
        }
    }

    /// The person approved with `key`: records the grant and returns the one-time code.
    pub async fn approve(
        &self,
        request: &AuthorizationRequest,
        key: &Authenticated,
        ctx: &RequestContext,
    ) -> OauthResult<String> {
        let (Some(key_id), Some(held)) = (key.principal.api_key_id, key.scopes.as_ref()) else {
            return Err(OauthError::AccessDenied(
                "sign in with an API key (no key has been created yet?)".into(),
            ));
        };
        let granted = grantable(&request.scopes, held);
        if granted.is_empty() {
            return Err(OauthError::InvalidScope(format!(
                "the key holds none of the requested scopes ({})",
                request.scopes.join(" ")
            )));
        }
        let (code, code_hash) = secrets::new_secret(secrets::CODE_PREFIX);
        self.store
            .create_oauth_grant(&NewGrant {
                id: Uuid::now_v7(),
                client_id: &request.client.client_id,
                api_key_id: key_id,
                api_key_name: &key.principal.name,
                scopes: &granted,
                resource: &request.resource,
                code_hash: &code_hash,
                redirect_uri: &request.redirect_uri,
                code_challenge: &request.code_challenge,
                code_expires_at: Utc::now() + chrono_duration(self.config.code_ttl),
                request_id: ctx.request_id.as_deref(),
                client_addr: ctx.client_addr.as_deref(),
            })
            .await?;
        Ok(code)
    }

    pub async fn record_denial(
        &self,
        request: &AuthorizationRequest,
        ctx: &RequestContext,
    ) -> OauthResult<()> {
        self.store
            .audit_oauth(&OauthAudit {
                kind: "oauth.grant",
                outcome: "denied",
                actor_kind: "anonymous",
                actor_id: None,
                actor_name: None,
                error: None,
                detail: &serde_json::json!({
                    "client_id": request.client.client_id,
                    "scopes": request.scopes,
                }),
                request_id: ctx.request_id.as_deref(),
                client_addr: ctx.client_addr.as_deref(),
            })
            .await?;
        Ok(())
    }

    /// Records a refused token request (the reason, never the secret presented).
    pub async fn record_refusal(
        &self,
        client_id: Option<&str>,
        error: &OauthError,
        ctx: &RequestContext,
    ) {
        let detail = serde_json::json!({"error": error.code()});
        let audited = self
            .store
            .audit_oauth(&OauthAudit {
                kind: "oauth.refused",
                outcome: "refused",
                actor_kind: "oauth_client",
                actor_id: client_id,
                actor_name: None,
                error: Some(&error.description()),
                detail: &detail,
                request_id: ctx.request_id.as_deref(),
                client_addr: ctx.client_addr.as_deref(),
            })
            .await;
        if let Err(e) = audited {
            tracing::warn!(error = %e, "could not audit a refused OAuth request");
        }
    }

    /// The client at the token or revocation endpoint, authenticated as it registered.
    async fn authenticate_client(
        &self,
        credentials: &ClientCredentials,
    ) -> OauthResult<OauthClientRecord> {
        let client_id = credentials
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OauthError::InvalidClient("client_id is required".into()))?;
        let client = self.clients().resolve(client_id).await?;
        if client.auth_method != "none" {
            let presented = credentials
                .client_secret
                .as_deref()
                .ok_or_else(|| OauthError::InvalidClient("client authentication failed".into()))?;
            if client.secret_hash.as_deref() != Some(secrets::hash(presented).as_slice()) {
                return Err(OauthError::InvalidClient(
                    "client authentication failed".into(),
                ));
            }
        }
        Ok(client)
    }

    pub async fn token(
        &self,
        params: &TokenParams,
        credentials: &ClientCredentials,
        ctx: &RequestContext,
    ) -> OauthResult<TokenAnswer> {
        let client = self.authenticate_client(credentials).await?;
        match params.grant_type.as_deref() {
            Some("authorization_code") => self.exchange_code(params, &client, ctx).await,
            Some("refresh_token") => self.refresh(params, &client, ctx).await,
            Some(other) => Err(OauthError::UnsupportedGrantType(format!(
                "grant_type `{other}` is not supported (authorization_code, refresh_token)"
            ))),
            None => Err(OauthError::InvalidRequest("grant_type is required".into())),
        }
    }

    async fn exchange_code(
        &self,
        params: &TokenParams,
        client: &OauthClientRecord,
        ctx: &RequestContext,
    ) -> OauthResult<TokenAnswer> {
        let code = required(&params.code, "code")?;
        let verifier = required(&params.code_verifier, "code_verifier")?;
        let redirect_uri = required(&params.redirect_uri, "redirect_uri")?;
        let redeemed = match self
            .store
            .redeem_oauth_code(&secrets::hash(code), &client.client_id)
            .await?
        {
            Redemption::Fresh(r) => r,
            Redemption::Replayed { .. } => {
                self.invalidate();
                return Err(OauthError::InvalidGrant(
                    "the authorization code was already used; its grant is revoked".into(),
                ));
            }
            Redemption::Unknown => {
                return Err(OauthError::InvalidGrant(
                    "unknown authorization code".into(),
                ));
            }
        };
        // The code is spent whatever follows: a mismatch cannot be retried with another guess.
        if redeemed.grant.client_id != client.client_id {
            return Err(OauthError::InvalidGrant(
                "the authorization code was issued to another client".into(),
            ));
        }
        if redeemed.expired {
            return Err(OauthError::InvalidGrant(
                "the authorization code expired".into(),
            ));
        }
        if redeemed.redirect_uri != redirect_uri {
            return Err(OauthError::InvalidGrant(
                "redirect_uri is not the one of the authorization request".into(),
            ));
        }
        if !secrets::pkce_matches(verifier, &redeemed.code_challenge) {
            return Err(OauthError::InvalidGrant(
                "code_verifier does not match the code_challenge (PKCE)".into(),
            ));
        }
        if let Some(resource) = &params.resource {
            self.check_resource(Some(resource))?;
        }
        if !redeemed.grant.active {
            return Err(OauthError::InvalidGrant(
                "the grant ended (its API key was revoked or expired)".into(),
            ));
        }
        self.issue(
            redeemed.grant.id,
            &redeemed.grant.scopes,
            "oauth.token_issued",
            client,
            ctx,
        )
        .await
    }

    async fn refresh(
        &self,
        params: &TokenParams,
        client: &OauthClientRecord,
        ctx: &RequestContext,
    ) -> OauthResult<TokenAnswer> {
        let token = required(&params.refresh_token, "refresh_token")?;
        let grant = match self
            .store
            .redeem_refresh_token(&secrets::hash(token), &client.client_id)
            .await?
        {
            Redemption::Fresh(grant) => grant,
            Redemption::Replayed { .. } => {
                self.invalidate();
                return Err(OauthError::InvalidGrant(
                    "the refresh token was already used; its grant is revoked".into(),
                ));
            }
            Redemption::Unknown => {
                return Err(OauthError::InvalidGrant(
                    "unknown, expired or revoked refresh token".into(),
                ));
            }
        };
        if grant.client_id != client.client_id {
            return Err(OauthError::InvalidGrant(
                "the refresh token was issued to another client".into(),
            ));
        }
        if !grant.active {
            return Err(OauthError::InvalidGrant(
                "the grant ended (revoked, or its API key was revoked or expired)".into(),
            ));
        }
        if let Some(asked) = params.scope.as_deref() {
            let asked = parse_scope(Some(asked))?;
            if let Some(extra) = asked.iter().find(|s| !grant.scopes.contains(s)) {
                return Err(OauthError::InvalidScope(format!(
                    "`{extra}` was not granted"
                )));
            }
        }
        self.issue(
            grant.id,
            &grant.scopes,
            "oauth.token_refreshed",
            client,
            ctx,
        )
        .await
    }

    async fn issue(
        &self,
        grant_id: Uuid,
        scopes: &[String],
        audit_kind: &str,
        client: &OauthClientRecord,
        ctx: &RequestContext,
    ) -> OauthResult<TokenAnswer> {
        let (access, access_hash) = secrets::new_secret(secrets::ACCESS_TOKEN_PREFIX);
        let (refresh, refresh_hash) = secrets::new_secret(secrets::REFRESH_TOKEN_PREFIX);
        let now = Utc::now();
        self.store
            .issue_oauth_tokens(&NewTokens {
                grant_id,
                access_hash: &access_hash,
                access_expires_at: now + chrono_duration(self.config.access_token_ttl),
                refresh_hash: &refresh_hash,
                refresh_expires_at: now + chrono_duration(self.config.refresh_token_ttl),
                audit_kind,
                client_id: &client.client_id,
                request_id: ctx.request_id.as_deref(),
                client_addr: ctx.client_addr.as_deref(),
            })
            .await?;
        Ok(TokenAnswer {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl.as_secs(),
            refresh_token: refresh,
            scope: scopes.join(" "),
        })
    }

    /// RFC 7009. Unknown tokens, and other clients' tokens, are not an error.
    pub async fn revoke(&self, token: &str, credentials: &ClientCredentials) -> OauthResult<()> {
        let client = self.authenticate_client(credentials).await?;
        self.store
            .revoke_oauth_token(&secrets::hash(token), &client.client_id)
            .await?;
        // This instance at once; the others when the NOTIFY reaches them.
        self.invalidate();
        Ok(())
    }

    /// An access token of the built-in server: from the cache while it is fresh and the token
    /// and its key unexpired, else from the database.
    async fn opaque_access(&self, token: &str) -> Result<Authenticated, BearerError> {
        let hash = secrets::hash(token);
        let now = Utc::now();
        {
            let cache = self.access_cache.lock().expect("access cache poisoned");
            if let Some(hit) = cache.get(&hash)
                && hit.at.elapsed() < ACCESS_CACHE_TTL
                && hit.valid_until > now
            {
                return Ok(hit.auth.clone());
            }
        }
        let access = self.store.oauth_access(&hash).await?.ok_or_else(|| {
            BearerError::Invalid("the access token is unknown, expired or revoked".into())
        })?;
        if access.resource != self.resource {
            return Err(BearerError::Invalid(format!(
                "the access token is for `{}`, not this server",
                access.resource
            )));
        }
        let scopes = Scopes::parse(&access.scopes)
            .map_err(|e| BearerError::Invalid(format!("the grant's scopes: {e}")))?;
        let auth = Authenticated {
            principal: Principal {
                api_key_id: Some(access.api_key_id),
                name: access.api_key_name,
                ..Principal::default()
            },
            scopes: Some(scopes),
        };
        let valid_until = access
            .key_expires_at
            .map_or(access.expires_at, |k| k.min(access.expires_at));
        let mut cache = self.access_cache.lock().expect("access cache poisoned");
        if cache.len() >= ACCESS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            hash,
            CachedAccess {
                auth: auth.clone(),
                valid_until,
                at: Instant::now(),
            },
        );
        Ok(auth)
    }

    /// Whether `token` is an access token this server accepts for `/mcp` (not an API key).
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, BearerError> {
        if token.starts_with(secrets::ACCESS_TOKEN_PREFIX) {
            if !self.builtin() {
                return Err(BearerError::Invalid(
                    "this server does not issue access tokens (oauth.mode)".into(),
                ));
            }
            return self.opaque_access(token).await;
        }
        let Some(jwt) = &self.jwt else {
            return Err(BearerError::Invalid("the bearer token is not valid".into()));
        };
        let verified = jwt.verify(token).await.map_err(BearerError::Invalid)?;
        let scopes = Scopes::parse(&verified.scopes).map_err(|e| {
            BearerError::Invalid(format!(
                "the token's `{}` claim: {e}",
                self.config.external.scope_claim
            ))
        })?;
        // The subject owns the jobs it creates: a stable id from issuer and subject.
        let owner = Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("{}#{}", self.config.external.issuer, verified.subject).as_bytes(),
        );
        Ok(Authenticated {
            principal: Principal {
                api_key_id: Some(owner),
                name: verified.subject,
                ..Principal::default()
            },
            scopes: Some(scopes),
        })
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> OauthResult<&'a str> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OauthError::InvalidRequest(format!("{name} is required")))
}

/// `scope`: space-separated scope names, each one the API knows.
fn parse_scope(raw: Option<&str>) -> OauthResult<Vec<String>> {
    let list: Vec<String> = raw
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Ok(list);
    }
    Scopes::parse(&list).map_err(|e| OauthError::InvalidScope(e.to_string()))?;
    Ok(list)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
