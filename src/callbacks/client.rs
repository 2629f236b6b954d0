//! The one HTTP client for calling out (callbacks, flows, `http.fetch`): http(s) only, no
//! proxies, no redirects (a caller that follows them checks each hop itself), and every
//! address checked after DNS resolution against the URL policy, so a hostname cannot smuggle
//! a request into a private network.

use std::{
    error::Error as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
    redirect,
};

use super::Signer;
use super::UrlPolicy;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundError {
    /// The URL or the address it resolved to is not allowed.
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

/// What came back (the body read up to a limit).
#[derive(Debug)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_truncated: bool,
    pub elapsed: Duration,
}

/// A request signed with Standard Webhooks headers.
pub struct SignedRequest<'a> {
    pub method: Method,
    pub url: &'a str,
    pub body: Vec<u8>,
    /// `webhook-id`: the same for every attempt of one message.
    pub message_id: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// A request as the caller wrote it: nothing added but the user agent.
pub struct PlainRequest<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// The guarded client without a signer: what `http.fetch` uses, with its own policy.
#[derive(Clone)]
pub struct GuardedClient {
    http: reqwest::Client,
    policy: Arc<UrlPolicy>,
}

impl GuardedClient {
    pub fn new(policy: Arc<UrlPolicy>) -> Self {
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client configuration");
        Self { http, policy }
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// Checks what can be checked before DNS (literal IPs never reach the resolver).
    fn check(&self, url: &str) -> Result<url::Url, OutboundError> {
        self.policy
            .check_literal(url)
            .map_err(|r| OutboundError::Refused(r.into()))
    }

    /// One request, no redirect followed.
    pub async fn send(&self, req: PlainRequest<'_>) -> Result<OutboundResponse, OutboundError> {
        let url = self.check(req.url)?;
        let mut builder = self
            .http
            .request(req.method, url)
            .timeout(req.timeout)
            .headers(req.headers);
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        read_limited(builder, req.timeout, req.max_response_bytes).await
    }

    /// An unsigned GET (documents other servers publish: OAuth client metadata, JWKS).
    pub async fn fetch(
        &self,
        url: &str,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<OutboundResponse, OutboundError> {
        let url = self.check(url)?;
        let builder = self
            .http
            .get(url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        read_limited(builder, timeout, max_response_bytes).await
    }
}

/// The guarded client that signs what it sends (callbacks, flows).
#[derive(Clone)]
pub struct SafeClient {
    guarded: GuardedClient,
    signer: Signer,
}

impl SafeClient {
    pub fn new(policy: Arc<UrlPolicy>, signer: Signer) -> Self {
        Self {
            guarded: GuardedClient::new(policy),
            signer,
        }
    }

    pub async fn send(&self, req: SignedRequest<'_>) -> Result<OutboundResponse, OutboundError> {
        let url = self.guarded.check(req.url)?;
        let timestamp = chrono::Utc::now().timestamp();
        let mut builder = self
            .guarded
            .http
            .request(req.method, url)
            .timeout(req.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", req.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                self.signer.sign(req.message_id, timestamp, &req.body),
            );
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        read_limited(builder.body(req.body), req.timeout, req.max_response_bytes).await
    }

    /// The same client for unsigned requests, under the same address policy.
    pub fn unsigned(&self) -> &GuardedClient {
        &self.guarded
    }
}

/// Sends, then reads the body up to `max_bytes` (the rest is dropped, and said so).
async fn read_limited(
    builder: reqwest::RequestBuilder,
    timeout: Duration,
    max_bytes: usize,
) -> Result<OutboundResponse, OutboundError> {
    let started = Instant::now();
    let mut resp = builder.send().await.map_err(|e| classify(e, timeout))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max_bytes.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(classify(e, timeout)),
        }
    }
    Ok(OutboundResponse {
        status,
        headers,
        body: Bytes::from(body),
        body_truncated: truncated,
        elapsed: started.elapsed(),
    })
}

fn classify(e: reqwest::Error, timeout: Duration) -> OutboundError {
    // Messages reach job errors and logs; a URL's query may carry a token.
    let e = e.without_url();
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(refused) = inner.downcast_ref::<RefusedAddress>() {
            return OutboundError::Refused(refused.0.clone());
        }
        source = inner.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout(timeout)
    } else if e.is_connect() {
        OutboundError::Connect(error_chain(&e))
    } else {
        OutboundError::Other(error_chain(&e))
    }
}

/// The innermost cause is usually the informative one ("connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves with the system resolver, then keeps only addresses the policy allows.
struct GuardedResolver {
    policy: Arc<UrlPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refusals.push(String::from(reason));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = refusals
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| format!("{host} did not resolve"));
                return Err(Box::new(RefusedAddress(format!(
                    "{host} resolved to a refused address: {reason}"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
