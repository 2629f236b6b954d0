//! Integration tests: one binary, real PostgreSQL, real servers on loopback.

mod audit;
mod auth;
mod callbacks;
mod checkers;
mod discovery;
mod embedded;
mod flows;
mod helpers;
mod hostile;
mod idempotency;
mod jobs_api;
mod lifecycle;
mod mcp;
mod mcp_peers;
mod mock_http;
mod operations;
mod orchestrate;
mod process;
mod proxy;
mod queue;
mod reporting;
mod secret_hygiene;
mod secure_defaults;
mod ssh;
mod sshd;
mod test_tools;
