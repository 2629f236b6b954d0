//! `http.fetch`: one HTTP request for a caller, through the SSRF-guarded client (the policy
//! of callbacks, with its own `tools.fetch.allow_networks`), host globs, redirects followed
//! by hand so every hop is checked like the first, and caps on time and size.

mod config;

pub use config::{FetchConfig, FetchCredential};

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use reqwest::{
    Method, StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue, LOCATION},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec,
    content::{self, Encoding},
};
use crate::{
    callbacks::{GuardedClient, OutboundError, PlainRequest, UrlPolicy},
    model::FieldError,
};

/// Redirects followed; one more is an error.
pub const MAX_REDIRECTS: usize = 5;

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers the client sets itself, or that would change where or how the request goes
/// (`host` would point an allowed address at another virtual host).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

/// Headers that carry credentials: refused in inputs (a job's inputs are stored with it), added
/// by the server from `tools.fetch.credentials` instead.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie"];

/// The tools of `[tools.fetch]`: `http.fetch` when enabled.
pub fn tools(config: &FetchConfig) -> Vec<Arc<dyn Tool>> {
    if config.enabled {
        vec![Arc::new(HttpFetch::new(config.clone()))]
    } else {
        Vec::new()
    }
}

pub struct HttpFetch {
    spec: ToolSpec,
    config: FetchConfig,
    client: GuardedClient,
    /// `tools.fetch.credentials`, resolved at start (the configuration check refuses one that
    /// does not resolve; one that fails anyway is left out and said so).
    credentials: Vec<(FetchCredential, HeaderName, HeaderValue)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inputs {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default = "default_encoding")]
    body_encoding: Encoding,
    timeout_ms: Option<u64>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_encoding() -> Encoding {
    Encoding::Text
}

/// A request ready to send: checked, decoded.
struct Request {
    url: url::Url,
    method: Method,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Duration,
}

impl HttpFetch {
    pub fn new(config: FetchConfig) -> Self {
        let policy = UrlPolicy::named("tools.fetch.allow_networks", config.allow_networks.clone());
        let max_timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
        Self {
            spec: ToolSpec {
                name: "http.fetch".into(),
                description: format!(
                    "Make one HTTP request and return {{status, headers, body, body_encoding, \
                     truncated}}. Only public addresses (and the hosts this server allows); \
                     redirects are followed up to {MAX_REDIRECTS}, each checked the same way; \
                     the body is text, or base64 when it is not UTF-8. GET and HEAD only read."
                ),
                input_schema: json!({
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "minLength": 1, "maxLength": 8192,
                                "description": "http or https URL."},
                        "method": {"type": "string", "enum": METHODS, "default": "GET"},
                        "headers": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "Request headers; dropped when a redirect leaves the URL's origin. No credentials (authorization, cookie): the server adds those it is configured with for the URL's host."
                        },
                        "body": {"type": "string", "description": "Request body."},
                        "body_encoding": content::encoding_schema(),
                        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": max_timeout_ms,
                                       "description": "The whole fetch, redirects included."}
                    },
                    "required": ["url"],
                    "additionalProperties": false
                }),
                // The intent as a whole may write; each call's effect follows its method.
                effect: Effect::Write,
                timeout: config.timeout + Duration::from_secs(5),
                // A write method must not be sent twice because an answer was slow.
                max_attempts: 1,
                priority: 0,
                public: false,
                destructive: true,
                open_world: true,
                output_schema: None,
            },
            client: GuardedClient::new(Arc::new(policy)),
            credentials: resolve_credentials(&config.credentials),
            config,
        }
    }

    /// The caller's headers for a hop to `url`, with the credential configured for its host
    /// and port.
    fn headers_for(&self, url: &url::Url, callers: &HeaderMap) -> HeaderMap {
        let mut headers = callers.clone();
        for (credential, name, value) in &self.credentials {
            if credential.applies_to(url) {
                headers.insert(name.clone(), value.clone());
            }
        }
        headers
    }

    /// The policy for one hop: scheme, literal addresses, then the host globs. (Names are
    /// resolved and their addresses checked when the client connects.)
    fn check_url(&self, url: &str) -> Result<url::Url, String> {
        let url = self
            .client
            .policy()
            .check_literal(url)
            .map_err(|r| format!("URL {r}"))?;
        let host = url.host_str().unwrap_or_default();
        if !self.config.host_allowed(host) {
            return Err(format!("host `{host}` is not in tools.fetch.allow_hosts"));
        }
        if url.scheme() != "https"
            && let Some(i) = self
                .credentials
                .iter()
                .position(|(c, _, _)| c.applies_to(&url) && !c.allow_http)
        {
            return Err(format!(
                "host `{host}` is sent the credential tools.fetch.credentials[{i}], which goes \
                 only over https (its allow_http is off)"
            ));
        }
        Ok(url)
    }

    fn prepare(&self, inputs: &Value) -> Result<Request, Vec<FieldError>> {
        let inputs: Inputs = serde_json::from_value(inputs.clone())
            .map_err(|e| vec![FieldError::new("inputs", e.to_string())])?;
        let mut errors = Vec::new();
        let url = self
            .check_url(&inputs.url)
            .map_err(|why| {
                errors.push(FieldError::new("inputs.url", why).with_code("url_not_allowed"))
            })
            .ok();
        let method = Method::from_bytes(inputs.method.as_bytes())
            .ok()
            .filter(|_| METHODS.contains(&inputs.method.as_str()));
        if method.is_none() {
            errors.push(FieldError::new(
                "inputs.method",
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &inputs.headers {
            let field = format!("inputs.headers.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(FieldError::new(field, "is not a header name"));
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                errors.push(FieldError::new(
                    field,
                    "is set by the client, not by callers",
                ));
                continue;
            }
            if CREDENTIAL_HEADERS.contains(&header.as_str())
                || self.credentials.iter().any(|(_, name, _)| *name == header)
            {
                errors.push(
                    FieldError::new(
                        field,
                        "carries a credential, which would be stored with the job: the server \
                         adds credentials itself for the hosts of tools.fetch.credentials",
                    )
                    .with_code("credential_not_allowed"),
                );
                continue;
            }
            match HeaderValue::from_str(value) {
                // Never shown in logs or debug output (tokens, cookies).
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.append(header, v);
                }
                Err(_) => errors.push(FieldError::new(field, "is not a valid header value")),
            }
        }
        let body = match inputs
            .body
            .as_deref()
            .map(|b| content::decode(b, inputs.body_encoding))
        {
            None => None,
            Some(Ok(bytes)) => Some(Bytes::from(bytes)),
            Some(Err(why)) => {
                errors.push(FieldError::new("inputs.body", why));
                None
            }
        };
        let timeout = inputs
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.config.timeout)
            .min(self.config.timeout);
        match (url, method) {
            (Some(url), Some(method)) if errors.is_empty() => Ok(Request {
                url,
                method,
                headers,
                body,
                timeout,
            }),
            _ => Err(errors),
        }
    }

    async fn run(&self, mut req: Request) -> ToolResult {
        let deadline = Instant::now() + req.timeout;
        let mut redirects = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out(req.timeout));
            }
            let resp = self
                .client
                .send(PlainRequest {
                    method: req.method.clone(),
                    url: req.url.as_str(),
                    headers: self.headers_for(&req.url, &req.headers),
                    body: req.body.clone(),
                    timeout: left,
                    max_response_bytes: self.config.max_response_bytes,
                })
                .await
                .map_err(|e| outbound_error(e, req.timeout))?;
            let location = resp
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .filter(|_| is_redirect(resp.status));
            let Some(location) = location else {
                let (encoding, body) = content::encode(&resp.body, resp.body_truncated);
                return Ok(json!({
                    "status": resp.status.as_u16(),
                    "url": req.url.as_str(),
                    "redirects": redirects,
                    "headers": headers_json(&resp.headers),
                    "body": body,
                    "body_encoding": encoding,
                    "truncated": resp.body_truncated,
                })
                .into());
            };
            if redirects == MAX_REDIRECTS {
                return Err(ToolError::permanent(
                    "too_many_redirects",
                    format!("more than {MAX_REDIRECTS} redirects"),
                ));
            }
            redirects += 1;
            let next = req
                .url
                .join(location)
                .map_err(|e| ToolError::permanent("invalid_redirect", format!("Location {e}")))?;
            let next = self.check_url(next.as_str()).map_err(|why| {
                ToolError::permanent("url_not_allowed", format!("redirect {redirects}: {why}"))
            })?;
            // What a browser does (RFC 9110 §15.4): 303 turns into GET, and so do 301/302
            // after a POST; 307/308 repeat the request as it was.
            let to_get = resp.status == StatusCode::SEE_OTHER && req.method != Method::HEAD
                || matches!(resp.status.as_u16(), 301 | 302) && req.method == Method::POST;
            if to_get {
                req.method = Method::GET;
                req.body = None;
            }
            // The caller's headers were meant for the origin they named (tokens, API keys).
            if next.origin() != req.url.origin() {
                req.headers.clear();
            }
            req.url = next;
        }
    }
}

fn resolve_credentials(
    configured: &[FetchCredential],
) -> Vec<(FetchCredential, HeaderName, HeaderValue)> {
    configured
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let resolved = c.resolve().and_then(|secret| {
                let name = HeaderName::from_bytes(c.header.as_bytes())
                    .map_err(|_| format!("`{}` is not a header name", c.header))?;
                let mut value = HeaderValue::from_str(secret.expose())
                    .map_err(|_| "the value is not a valid header value".to_owned())?;
                value.set_sensitive(true);
                Ok((c.clone(), name, value))
            });
            resolved
                .map_err(|why| {
                    tracing::error!(
                        credential = i,
                        "tools.fetch.credentials[{i}] left out: {why}"
                    )
                })
                .ok()
        })
        .collect()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Response headers as JSON: repeated ones joined with ", " (RFC 9110 §5.3).
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).replace('\0', "");
        out.entry(name.as_str())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    json!(out)
}

fn timed_out(limit: Duration) -> ToolError {
    ToolError::timed_out(format!("no answer within {} ms", limit.as_millis()))
}

fn outbound_error(e: OutboundError, limit: Duration) -> ToolError {
    match e {
        OutboundError::Refused(why) => ToolError::permanent("url_not_allowed", why),
        OutboundError::Timeout(_) => timed_out(limit),
        OutboundError::Connect(why) => ToolError::permanent("connect_failed", why),
        OutboundError::Other(why) => ToolError::permanent("fetch_failed", why),
    }
}

impl Tool for HttpFetch {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn check_inputs(&self, inputs: &Value) -> Result<(), Vec<FieldError>> {
        self.prepare(inputs).map(|_| ())
    }

    fn effect_of(&self, inputs: &Value) -> Effect {
        match inputs.get("method").and_then(Value::as_str) {
            None | Some("GET" | "HEAD") => Effect::Read,
            Some(_) => Effect::Write,
        }
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            let req = self.prepare(inputs).map_err(super::invalid_inputs)?;
            tokio::select! {
                result = self.run(req) => result,
                _ = ctx.cancel.cancelled() => Err(ToolError::permanent("cancelled", "fetch stopped")),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(config: FetchConfig) -> HttpFetch {
        HttpFetch::new(FetchConfig {
            enabled: true,
            ..config
        })
    }

    #[test]
    fn inputs_are_checked_before_the_job_is_queued() {
        let open = tool(FetchConfig::default());
        let listed = tool(FetchConfig {
            allow_hosts: vec!["*.example.com".into()],
            ..FetchConfig::default()
        });
        #[rustfmt::skip]
        let cases: &[(&HttpFetch, Value, Option<&str>)] = &[
            (&open, json!({"url": "https://example.com/"}), None),
            (&open, json!({"url": "http://127.0.0.1/"}), Some("inputs.url")),
            (&open, json!({"url": "http://localhost:8080/"}), Some("inputs.url")),
            (&open, json!({"url": "http://169.254.169.254/latest"}), Some("inputs.url")),
            (&open, json!({"url": "file:///etc/passwd"}), Some("inputs.url")),
            (&open, json!({"url": "https://u:p@example.com/"}), Some("inputs.url")),
            (&open, json!({"url": "https://example.com/", "method": "TRACE"}), Some("inputs.method")),
            (&open, json!({"url": "https://example.com/", "headers": {"Host": "internal"}}), Some("inputs.headers.Host")),
            (&open, json!({"url": "https://example.com/", "headers": {"bad name": "x"}}), Some("inputs.headers.bad name")),
            (&open, json!({"url": "https://example.com/", "headers": {"x-a": "line\nbreak"}}), Some("inputs.headers.x-a")),
            (&open, json!({"url": "https://example.com/", "body": "%%", "body_encoding": "base64"}), Some("inputs.body")),
            (&listed, json!({"url": "https://api.example.com/x"}), None),
            (&listed, json!({"url": "https://example.org/"}), Some("inputs.url")),
        ];
        for (tool, inputs, error) in cases {
            let got = tool.check_inputs(inputs).err().map(|e| e[0].field.clone());
            assert_eq!(got.as_deref(), *error, "{inputs}");
        }
    }

    #[test]
    fn get_and_head_read_other_methods_write() {
        let t = tool(FetchConfig::default());
        for (method, effect) in [
            (None, Effect::Read),
            (Some("GET"), Effect::Read),
            (Some("HEAD"), Effect::Read),
            (Some("POST"), Effect::Write),
            (Some("DELETE"), Effect::Write),
        ] {
            let mut inputs = json!({"url": "https://example.com/"});
            if let Some(m) = method {
                inputs["method"] = json!(m);
            }
            assert_eq!(t.effect_of(&inputs), effect, "{method:?}");
        }
    }

    #[test]
    fn timeouts_are_capped_by_the_configuration() {
        let t = tool(FetchConfig {
            timeout: Duration::from_secs(2),
            ..FetchConfig::default()
        });
        let req = |ms: Option<u64>| {
            let mut inputs = json!({"url": "https://example.com/"});
            if let Some(ms) = ms {
                inputs["timeout_ms"] = json!(ms);
            }
            t.prepare(&inputs).ok().unwrap().timeout
        };
        assert_eq!(req(None), Duration::from_secs(2));
        assert_eq!(req(Some(500)), Duration::from_millis(500));
        assert_eq!(req(Some(60_000)), Duration::from_secs(2));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("vary", "a".parse().unwrap());
        h.append("vary", "b".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(
            headers_json(&h),
            json!({"content-type": "text/plain", "vary": "a, b"})
        );
    }
}
