//! Standard Webhooks (https://www.standardwebhooks.com): signing what we send, verifying what
//! we receive, and the outbound HTTP client that refuses private networks.

mod answer;
mod client;
mod signing;

pub use answer::{body_text, excerpt, retry_after, truncate_bytes};
pub use client::{OutboundError, OutboundResponse, SafeClient, SignedRequest};
pub use signing::{SecretKey, Signer, Verifier, VerifyError, WebhookHeaders};
