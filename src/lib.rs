//! session-log-gateway: the real-time log gateway of NetRaven.
//!
//! ingest: `routes::ingest` → `record` (parse, validate, normalise) → `store` (insert, seq) →
//! `publisher` (pipelined PUBLISH).
//! live: `subscriber` (the one PSUBSCRIBE) → `hub` (job id → viewers) → `session` (history
//! hand-off, seq dedupe and healing) → `routes::ws`.

pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod publisher;
pub mod record;
pub mod routes;
pub mod schema;
pub mod session;
pub mod startup;
pub mod store;
pub mod subscriber;
pub mod upgrade;
pub mod websocket;
