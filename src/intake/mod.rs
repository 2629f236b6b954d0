//! Intake: from a validated request to a durable job — filed with its idempotency key in one
//! statement, started at once when the caller waits and a slot is free — and waiting for it
//! without polling. (Flows reporting back come in through `callbacks::ingest`.)

mod canonical;
mod service;

pub use service::{IdempotencyKey, Intake, Submission, SubmitError, Submitted, WaitOutcome};
