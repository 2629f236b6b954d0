//! OAuth clients: registered with RFC 7591 (Dynamic Client Registration), or named by the
//! HTTPS URL of their Client ID Metadata Document, fetched through the SSRF-guarded client and
//! kept for `oauth.client_metadata_ttl`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{
    OauthConfig,
    error::{OauthError, OauthResult},
    secrets,
};
use crate::{
    callbacks::SafeClient,
    store::{NewOauthClient, OauthClientRecord, Store},
};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_MAX_BYTES: usize = 64 * 1024;
const MAX_REDIRECT_URIS: usize = 16;
const MAX_NAME_CHARS: usize = 200;

/// What a client says about itself (RFC 7591 §2; the same fields in a metadata document).
#[derive(Debug, Clone, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
}

/// A registration's answer: the client id, and the secret for confidential clients (shown once).
pub struct Registered {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
}

/// Where a client may be sent back: HTTPS, or plain HTTP to this machine (native apps listen
/// on loopback); absolute, without a fragment or credentials.
pub fn check_redirect_uri(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not an absolute URL ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("`{raw}` has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{raw}` carries credentials"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        scheme => Err(format!(
            "`{raw}`: {scheme}:// is not allowed (https, or http to localhost / 127.0.0.1 / [::1])"
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn checked(meta: &ClientMetadata, what: &str) -> OauthResult<(String, String)> {
    if meta.redirect_uris.is_empty() || meta.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OauthError::InvalidRedirectUri(format!(
            "{what}: redirect_uris needs 1 to {MAX_REDIRECT_URIS} URIs"
        )));
    }
    for uri in &meta.redirect_uris {
        check_redirect_uri(uri)
            .map_err(|e| OauthError::InvalidRedirectUri(format!("{what}: redirect_uris: {e}")))?;
    }
    let auth_method = meta
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        auth_method.as_str(),
        "none" | "client_secret_basic" | "client_secret_post"
    ) {
        return Err(OauthError::InvalidClientMetadata(format!(
            "{what}: token_endpoint_auth_method `{auth_method}` is not supported (none, \
             client_secret_basic, client_secret_post)"
        )));
    }
    if let Some(grants) = &meta.grant_types
        && let Some(other) = grants
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(OauthError::InvalidClientMetadata(format!(
            "{what}: grant type `{other}` is not supported (authorization_code, refresh_token)"
        )));
    }
    if let Some(types) = &meta.response_types
        && types.iter().any(|t| t != "code")
    {
        return Err(OauthError::InvalidClientMetadata(format!(
            "{what}: only the `code` response type is supported"
        )));
    }
    let name = meta
        .client_name
        .clone()
        .unwrap_or_else(|| "an unnamed client".into());
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(OauthError::InvalidClientMetadata(format!(
            "{what}: client_name must be at most {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok((name, auth_method))
}

pub struct Clients<'a> {
    pub store: &'a Store,
    pub http: &'a SafeClient,
    pub config: &'a OauthConfig,
}

impl Clients<'_> {
    /// RFC 7591 registration. The metadata must be valid as a whole (nothing is dropped
    /// silently).
    pub async fn register(
        &self,
        meta: &ClientMetadata,
        raw: &Value,
        request_id: Option<&str>,
        client_addr: Option<&str>,
    ) -> OauthResult<Registered> {
        let (client_name, auth_method) = checked(meta, "registration")?;
        let (client_id, _) = secrets::new_secret(secrets::CLIENT_ID_PREFIX);
        let secret =
            (auth_method != "none").then(|| secrets::new_secret(secrets::CLIENT_SECRET_PREFIX));
        self.store
            .register_oauth_client(&NewOauthClient {
                client_id: &client_id,
                registration: "dynamic",
                client_name: &client_name,
                redirect_uris: &meta.redirect_uris,
                auth_method: &auth_method,
                secret_hash: secret.as_ref().map(|(_, hash)| hash.as_slice()),
                metadata: raw,
                request_id,
                client_addr,
            })
            .await?;
        Ok(Registered {
            client_id,
            client_secret: secret.map(|(s, _)| s),
            client_name,
            redirect_uris: meta.redirect_uris.clone(),
            auth_method,
        })
    }

    /// Whether `client_id` names a metadata document (an HTTPS URL with a path).
    fn is_metadata_url(&self, client_id: &str) -> Option<url::Url> {
        let url = url::Url::parse(client_id).ok()?;
        let scheme_ok = url.scheme() == "https"
            || (self.config.client_metadata_allow_http
                && url.scheme() == "http"
                && is_loopback(&url));
        (scheme_ok && url.path() != "/" && url.fragment().is_none()).then_some(url)
    }

    /// The client `client_id` names: registered, or described by its metadata document
    /// (fetched when not known or older than the TTL).
    pub async fn resolve(&self, client_id: &str) -> OauthResult<OauthClientRecord> {
        let known = self.store.oauth_client(client_id).await?;
        let Some(url) = self.is_metadata_url(client_id) else {
            return known.ok_or_else(|| {
                OauthError::InvalidClient(format!("unknown client_id `{client_id}`"))
            });
        };
        let ttl = chrono::Duration::from_std(self.config.client_metadata_ttl)
            .unwrap_or(chrono::Duration::hours(1));
        if let Some(client) = &known
            && client
                .fetched_at
                .is_some_and(|at| at + ttl > chrono::Utc::now())
        {
            return Ok(client.clone());
        }
        let fetched = self
            .http
            .unsigned()
            .fetch(url.as_str(), METADATA_TIMEOUT, METADATA_MAX_BYTES)
            .await
            .map_err(|e| OauthError::InvalidClient(format!("the client metadata document: {e}")))?;
        if !fetched.status.is_success() || fetched.body_truncated {
            return Err(OauthError::InvalidClient(format!(
                "the client metadata document answered {}{}",
                fetched.status,
                if fetched.body_truncated {
                    " (too large)"
                } else {
                    ""
                }
            )));
        }
        let raw: Value = serde_json::from_slice(&fetched.body).map_err(|e| {
            OauthError::InvalidClient(format!("the client metadata document is not JSON: {e}"))
        })?;
        let meta: ClientMetadata = serde_json::from_value(raw.clone())
            .map_err(|e| OauthError::InvalidClient(format!("the client metadata document: {e}")))?;
        if meta.client_id.as_deref() != Some(client_id) {
            return Err(OauthError::InvalidClient(
                "the client metadata document's client_id is not its own URL".into(),
            ));
        }
        let mut meta = meta;
        // A metadata document describes a public client: it cannot hold a secret we issued.
        if meta.token_endpoint_auth_method.is_none() {
            meta.token_endpoint_auth_method = Some("none".into());
        }
        let (client_name, auth_method) = checked(&meta, "the client metadata document")?;
        if auth_method != "none" {
            return Err(OauthError::InvalidClient(
                "a client metadata document must use token_endpoint_auth_method `none`".into(),
            ));
        }
        self.store
            .register_oauth_client(&NewOauthClient {
                client_id,
                registration: "metadata_document",
                client_name: &client_name,
                redirect_uris: &meta.redirect_uris,
                auth_method: &auth_method,
                secret_hash: None,
                metadata: &raw,
                request_id: None,
                client_addr: None,
            })
            .await?;
        self.store
            .oauth_client(client_id)
            .await?
            .ok_or_else(|| OauthError::InvalidClient("the client vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback() {
        for ok in [
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost:6274/oauth/callback",
            "http://[::1]/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "https://example.com/cb#frag",
            "https://user:pw@example.com/cb",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
