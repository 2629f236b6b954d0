//! Intake: from a validated request to a durable job — filed with its idempotency key in one
//! statement (a batch of them per commit for the queue), run in the request's one transaction or
//! started at once when the caller waits — and waiting for it without polling. (Flows reporting back come in through `callbacks::ingest`.)

mod canonical;
mod filer;
mod service;

pub use service::{IdempotencyKey, Intake, Submission, SubmitError, Submitted, WaitOutcome};
