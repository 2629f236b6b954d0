//! From a request to a job: intake files jobs (with their idempotency keys) and waits for them.

mod canonical;
mod intake;

pub use intake::{IdempotencyKey, Orchestrator, Submission, SubmitError, Submitted, WaitOutcome};
