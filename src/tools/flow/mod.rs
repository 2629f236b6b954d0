//! Flow mode: an intent backed by an n8n, ActivePieces or generic webhook. The request carries
//! the job, its inputs and where to call back (with a per-attempt token), signed with Standard
//! Webhooks headers; the answer is the result, or a promise to call back.

mod breaker;
pub mod config;
mod response;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::{FutureExt, future::BoxFuture};
use rand::RngCore;
use reqwest::{
    Method,
    header::{AUTHORIZATION, HeaderName, HeaderValue},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use breaker::{Breaker, BreakerView, Breakers};
pub use config::{Completion, FlowAuth, FlowConfig, FlowEngine};

use self::{
    breaker::Admission,
    response::{Answer, interpret, is_failure},
};
use super::{Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec};
use crate::{
    callbacks::{OutboundError, SafeClient, SignedRequest},
    limits::Rate,
    model::ConfigProblem,
    store::{BucketTake, Store},
};

const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// Everything a flow needs besides its own configuration.
pub struct FlowDeps<'a> {
    pub client: &'a SafeClient,
    pub store: &'a Store,
    pub public_url: &'a str,
    pub breakers: &'a Breakers,
    /// Whether a write flow that does not say is announced as destructive to MCP clients.
    pub destructive: bool,
}

pub fn tools(
    flows: &BTreeMap<String, FlowConfig>,
    deps: &FlowDeps<'_>,
) -> Result<Vec<Arc<dyn Tool>>, ConfigProblem> {
    flows
        .iter()
        .map(|(intent, config)| {
            FlowTool::new(intent, config, deps)
                .map(|t| Arc::new(t) as Arc<dyn Tool>)
                .map_err(|(key, message)| {
                    ConfigProblem::new(format!("flows.\"{intent}\".{key}"), message)
                })
        })
        .collect()
}

/// A setting of one flow (`method`, `auth`) that cannot be used, and why.
type FlowSettingError = (&'static str, String);

pub struct FlowTool {
    spec: ToolSpec,
    config: FlowConfig,
    method: Method,
    auth: Option<(HeaderName, HeaderValue)>,
    client: SafeClient,
    store: Store,
    callback_url: String,
    breaker: Arc<Breaker>,
    /// The URL's token bucket, shared by every instance: `flow:` and the URL's SHA-256 (a URL
    /// may hold a secret; the bucket's name is stored).
    rate: Option<(String, Rate)>,
    /// The URL's concurrency key (named like its bucket) and limit.
    concurrency: Option<crate::catalog::ConcurrencyKey>,
}

impl FlowTool {
    fn new(
        intent: &str,
        config: &FlowConfig,
        deps: &FlowDeps<'_>,
    ) -> Result<Self, FlowSettingError> {
        let engine = match config.engine {
            FlowEngine::N8n => "n8n",
            FlowEngine::Activepieces => "ActivePieces",
            FlowEngine::Generic => "webhook",
        };
        let spec = ToolSpec {
            name: intent.to_owned(),
            description: config
                .description
                .clone()
                .unwrap_or_else(|| format!("Runs the {engine} flow behind {intent}.")),
            input_schema: config
                .input_schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"})),
            effect: if config.read_only {
                Effect::Read
            } else {
                Effect::Write
            },
            // The attempt outlives the request slightly, so the request's own timeout reports.
            timeout: config.timeout + Duration::from_secs(5),
            max_attempts: config.max_attempts,
            priority: 0,
            public: false,
            destructive: !config.read_only && config.destructive.unwrap_or(deps.destructive),
            open_world: true,
            output_schema: None,
        };
        Ok(Self {
            spec,
            method: Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
                .map_err(|e| ("method", e.to_string()))?,
            auth: config
                .auth
                .as_ref()
                .map(auth_header)
                .transpose()
                .map_err(|e| ("auth", e))?,
            client: deps.client.clone(),
            store: deps.store.clone(),
            callback_url: format!("{}/callbacks/ingest", deps.public_url.trim_end_matches('/')),
            breaker: deps.breakers.get_or_create(
                &config.url,
                config.breaker_threshold,
                config.breaker_open,
            ),
            rate: config
                .rate_limit
                .filter(|r| !r.is_off())
                .map(|rate| (url_key(&config.url), rate)),
            concurrency: config
                .concurrency
                .map(|limit| crate::catalog::ConcurrencyKey {
                    key: url_key(&config.url),
                    limit,
                }),
            config: config.clone(),
        })
    }
}

/// What names a URL's shared state (bucket, concurrency places) in the database: `flow:` and
/// the URL's SHA-256, since a URL may hold a secret.
fn url_key(url: &str) -> String {
    format!(
        "flow:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(url.as_bytes()))
    )
}

/// A credential from the environment, zeroed when dropped (the header built from it is marked
/// sensitive, so it is never printed).
fn env(var: &str) -> Result<zeroize::Zeroizing<String>, String> {
    std::env::var(var)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| format!("environment variable {var} is not set"))
}

/// The credential header, marked sensitive so it is never printed.
fn auth_header(auth: &FlowAuth) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = match auth {
        FlowAuth::Header { name, value_env } => (
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            env(value_env)?,
        ),
        FlowAuth::Basic {
            username,
            password_env,
        } => (
            AUTHORIZATION,
            zeroize::Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(zeroize::Zeroizing::new(format!(
                    "{username}:{}",
                    env(password_env)?.as_str()
                )))
            )),
        ),
        FlowAuth::Bearer { token_env } => (
            AUTHORIZATION,
            zeroize::Zeroizing::new(format!("Bearer {}", env(token_env)?.as_str())),
        ),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// A fresh callback token: the flow gets it, the job keeps only its hash.
fn new_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

impl Tool for FlowTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// `concurrency = N`: one key per URL, shared by every flow that calls it.
    fn concurrency_of(&self, _inputs: &Value) -> Option<crate::catalog::ConcurrencyKey> {
        self.concurrency.clone()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        async move {
            if let Admission::Rejected { retry_in } = self.breaker.admit() {
                return Err(ToolError::permanent(
                    "flow_unavailable",
                    format!(
                        "{} failed repeatedly; failing fast for another {} s",
                        self.config.url,
                        retry_in.as_secs()
                    ),
                ));
            }
            if let Some((bucket, rate)) = &self.rate {
                let take = BucketTake {
                    bucket,
                    interval: rate.interval(),
                    tolerance: rate.tolerance(),
                };
                let wait = self
                    .store
                    .reserve_rate_slot(&take, ctx.job_id, None)
                    .await?;
                if !wait.is_zero() {
                    return Err(ToolError::not_now(
                        "rate_limited",
                        format!(
                            "the flow's URL is limited to {}; its turn comes in {} ms",
                            rate.describe(),
                            wait.as_millis()
                        ),
                        wait,
                    ));
                }
            }
            let (token, hash) = new_token();
            self.store.add_callback_token(ctx.job_id, &hash).await?;
            let body = json!({
                "job_id": ctx.job_id,
                "intent": self.spec.name,
                "inputs": inputs,
                "callback": {"url": self.callback_url, "token": token},
            });
            let message_id = format!("msg_{}", ctx.job_id.uuid().simple());
            let timeout = self.config.timeout;
            let sent = self
                .client
                .send(SignedRequest {
                    method: self.method.clone(),
                    url: &self.config.url,
                    body: serde_json::to_vec(&body).expect("JSON values serialize"),
                    message_id: &message_id,
                    headers: self.auth.iter().cloned().collect(),
                    timeout,
                    max_response_bytes: MAX_RESPONSE_BYTES,
                })
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(OutboundError::Refused(reason)) => {
                    return Err(ToolError::permanent("url_refused", reason));
                }
                Err(OutboundError::Timeout(_)) => {
                    self.breaker.record(false);
                    return Err(ToolError::timed_out(format!(
                        "the flow did not answer within {} ms",
                        timeout.as_millis()
                    )));
                }
                Err(e) => {
                    self.breaker.record(false);
                    return Err(ToolError::transient("flow_unreachable", e.to_string()));
                }
            };
            self.breaker.record(!is_failure(resp.status));
            if resp.body_truncated {
                return Err(ToolError::permanent(
                    "flow_response_too_large",
                    format!("the flow's answer exceeded {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            interpret(&Answer {
                engine: self.config.engine,
                completion: self.config.completion,
                status: resp.status,
                headers: &resp.headers,
                body: &resp.body,
                callback_deadline: self.config.callback_deadline,
            })
        }
        .boxed()
    }
}
