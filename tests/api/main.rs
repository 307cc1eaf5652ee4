//! Integration tests over the real stack: the gateway in-process, a real PostgreSQL cluster
//! (one per test binary, a database per test), a real redis-server per test, real WebSocket
//! and HTTP clients.

mod apis;
mod bench_smoke;
mod browser;
mod delivery;
mod faults;
mod helpers;
mod ingest;
mod live;
mod security;
mod services;
mod upgrade;
