//! Standard Webhooks (https://www.standardwebhooks.com): signing what we send, verifying what
//! we receive, and the outbound HTTP client that refuses private networks.

mod answer;
mod client;
mod config;
mod secrets;
mod signing;

pub use answer::{body_text, excerpt, retry_after, truncate_bytes};
pub use config::CallbacksConfig;
pub use client::{OutboundError, OutboundResponse, SafeClient, SignedRequest};
pub use secrets::{SecretSource, SecretsError, SigningSecrets};
pub use signing::{NoSigningKey, SecretKey, Signer, Verifier, VerifyError, WebhookHeaders};
