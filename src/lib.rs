//! orchestrator: a Postgres-backed intent orchestration server.
//!
//! Calls go one way: `http → dispatch/tools → store`, `worker → dispatch → store`. Nothing
//! below `http` knows about HTTP requests; nothing outside `store` writes SQL.

pub mod app;
pub mod auth;
pub mod callbacks;
pub mod catalog;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod duration;
pub mod http;
pub mod ids;
pub mod model;
pub mod nul;
pub mod redact;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod worker;
