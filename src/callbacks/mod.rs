//! Callbacks, both ways, in one place: Standard Webhooks (https://www.standardwebhooks.com)
//! signing of what we send and verification of what we receive, the generated signing secret,
//! where the server may call (the URL policy and the outbound client that enforces it after
//! DNS), the delivery of outbound callbacks, and the ingest of flows reporting back. The HTTP
//! handlers are in `http::callbacks`; the SQL in `store::callbacks`.

mod answer;
mod client;
mod config;
pub mod delivery;
pub mod ingest;
mod secrets;
mod signing;
mod url_policy;

pub use answer::{body_text, excerpt, retry_after, truncate_bytes};
pub use client::{
    GuardedClient, OutboundError, OutboundResponse, PlainRequest, SafeClient, SignedRequest,
};
pub use config::CallbacksConfig;
pub use delivery::{Deliverer, DeliverySettings};
pub use ingest::CallbackIngest;
pub use secrets::{SecretSource, SecretsError, SigningSecrets};
pub use signing::{
    NoSigningKey, SecretKey, SecretKeyError, Signer, Verifier, VerifyError, WebhookHeaders,
};
pub use url_policy::{NonPublic, Refusal, UrlPolicy};
