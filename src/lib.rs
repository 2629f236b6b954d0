//! orchestrator: a Postgres-backed intent orchestration server.
//!
//! Calls go one way (`tests/architecture.rs` fails on a cycle between these modules):
//! `app` wires everything; `http` → `intake` (filing and waiting), `callbacks` (delivery,
//! ingest), `auth` → `worker` → `catalog` (intents and the `Tool` trait) → `store` (every SQL
//! statement) → `model`, `ids`; the engines in `tools` register into the catalog. Nothing below
//! `http` knows about HTTP requests; nothing outside `store` writes SQL.

pub mod app;
pub mod auth;
pub mod callbacks;
pub mod catalog;
pub mod config;
pub mod db;
pub mod duration;
pub mod glob;
pub mod http;
pub mod ids;
pub mod intake;
pub mod limits;
pub mod live;
pub mod model;
pub mod nul;
pub mod oauth;
pub mod redact;
pub mod schedules;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod worker;
