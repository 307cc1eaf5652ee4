//! Typed settings: every knob of the gateway as a CLI flag with an environment variable behind
//! it, each with a default that works for local use (`--help` lists them all).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Everything the gateway needs to start. Built once in `main` (or by tests) and handed to
/// `startup::Application::build`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "session-log-gateway",
    version,
    about = "Real-time session log gateway: Redis PSUBSCRIBE fan-out to WebSocket viewers, PostgreSQL-backed catch-up"
)]
pub struct Settings {
    /// Address to listen on (host:port). Port 0 picks a free port.
    #[arg(long, env = "GATEWAY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// PostgreSQL connection URL; the gateway applies its migrations at start-up.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/session_logs"
    )]
    pub database_url: String,

    /// Redis connection URL (redis://[user:password@]host:port[/db]).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Channel prefix: records of job N travel on `{prefix}:N`.
    #[arg(long, env = "GATEWAY_CHANNEL_PREFIX", default_value = "session-logs")]
    pub channel_prefix: String,

    /// Legacy single channels whose records are routed by their `job_id` (NetRaven publishes on
    /// `netraven-logs`). Comma-separated; empty (off) by default.
    #[arg(
        long,
        env = "GATEWAY_LEGACY_CHANNELS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub legacy_channels: Vec<String>,

    /// Largest ingest request body, in bytes.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest `message` of one record, in bytes.
    #[arg(long, env = "GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most records in one ingest request.
    #[arg(
        long,
        env = "GATEWAY_MAX_RECORDS_PER_REQUEST",
        default_value_t = 10_000
    )]
    pub max_records_per_request: usize,

    /// Deepest nesting allowed inside `meta`.
    #[arg(long, env = "GATEWAY_MAX_META_DEPTH", default_value_t = 16)]
    pub max_meta_depth: usize,

    /// Live messages kept per watched job for viewers that fall behind; a viewer further
    /// behind skips ahead and heals from PostgreSQL (records without seq: reported dropped).
    #[arg(long, env = "GATEWAY_VIEWER_QUEUE", default_value_t = 4096)]
    pub viewer_queue: usize,

    /// Most jobs one `GET /ws` connection may watch at once.
    #[arg(long, env = "GATEWAY_MAX_JOBS_PER_SOCKET", default_value_t = 50)]
    pub max_jobs_per_socket: usize,

    /// Seconds between WebSocket pings to each viewer (and SSE keep-alive comments).
    #[arg(long, env = "GATEWAY_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,

    /// Seconds without any frame from a viewer (pong included) before it is closed.
    #[arg(long, env = "GATEWAY_CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub client_timeout_secs: u64,

    /// Seconds a viewer may refuse to read (one write blocked) before it is closed with 1013.
    #[arg(long, env = "GATEWAY_SLOW_VIEWER_SECS", default_value_t = 30)]
    pub slow_viewer_secs: u64,

    /// PostgreSQL connections in the pool.
    #[arg(long, env = "GATEWAY_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,

    /// Milliseconds to wait for a PostgreSQL connection before answering 503.
    #[arg(long, env = "GATEWAY_DB_TIMEOUT_MS", default_value_t = 2000)]
    pub db_timeout_ms: u64,

    /// Milliseconds between PINGs on the Redis subscriber connection.
    #[arg(long, env = "GATEWAY_REDIS_PING_INTERVAL_MS", default_value_t = 1000)]
    pub redis_ping_interval_ms: u64,

    /// Milliseconds of silence after a PING before the Redis connection is declared dead.
    #[arg(long, env = "GATEWAY_REDIS_PING_TIMEOUT_MS", default_value_t = 3000)]
    pub redis_ping_timeout_ms: u64,

    /// Directory of the static viewer served at `/`.
    #[arg(long, env = "GATEWAY_STATIC_DIR", default_value = "static")]
    pub static_dir: String,

    /// HS256 secret of NetRaven's viewer JWTs (NetRaven keeps it in NETRAVEN_API__JWT_SECRET,
    /// which is read too). Unset: reads need no token, on a loopback address only.
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Service tokens accepted by ingest (comma-separated). Unset: ingest is open when no JWT
    /// secret is set either, closed otherwise.
    #[arg(
        long,
        env = "GATEWAY_INGEST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub ingest_tokens: Vec<String>,

    /// Serve without authentication on a non-loopback address (never do this on a network
    /// that untrusted people can reach).
    #[arg(long, env = "GATEWAY_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Origins allowed to open WebSockets (comma-separated; `*` for any). Empty: same origin.
    #[arg(long, env = "GATEWAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most viewer connections (WebSocket and SSE) at once.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most viewer connections at once from one client address.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,

    /// Largest frame a viewer may send over its WebSocket, in bytes.
    #[arg(long, env = "GATEWAY_MAX_CLIENT_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_client_frame_bytes: usize,

    /// Milliseconds a client has to send its request head (WebSocket handshakes included).
    #[arg(long, env = "GATEWAY_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub handshake_timeout_ms: u64,

    /// Seconds to keep retrying PostgreSQL at start-up (for the migrations) before giving up.
    #[arg(long, env = "GATEWAY_STARTUP_WAIT_SECS", default_value_t = 30)]
    pub startup_wait_secs: u64,

    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "GATEWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

impl Settings {
    /// Settings with every default, as if started with no flags and no environment; tests
    /// start from here and override what they need.
    pub fn defaults() -> Self {
        Settings::parse_from(["session-log-gateway"])
    }

    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// The access policy: the JWT secret (falling back to NETRAVEN_API__JWT_SECRET), ingest
    /// tokens and allowed origins, with empty entries removed.
    pub fn policy(&self) -> crate::auth::Policy {
        let jwt_secret = self
            .jwt_secret
            .clone()
            .or_else(|| std::env::var("NETRAVEN_API__JWT_SECRET").ok())
            .filter(|s| !s.is_empty());
        crate::auth::Policy {
            jwt_secret,
            ingest_tokens: trimmed(&self.ingest_tokens),
            allowed_origins: trimmed(&self.allowed_origins),
        }
    }

    /// Refuses settings that would expose logs without authentication.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        let policy = self.policy();
        if policy.jwt_secret.is_none() && !self.bind.ip().is_loopback() && !self.insecure_no_auth {
            anyhow::bail!(
                "refusing to serve session logs without authentication on {}: anyone who can \
                 reach it could read device configurations. Set GATEWAY_JWT_SECRET (or \
                 NETRAVEN_API__JWT_SECRET) and GATEWAY_INGEST_TOKENS, bind to a loopback \
                 address, or pass --insecure-no-auth if you really mean it.",
                self.bind
            );
        }
        Ok(())
    }

    /// Legacy channels with empty entries removed (the default `""` means none).
    pub fn legacy_channels(&self) -> Vec<String> {
        trimmed(&self.legacy_channels)
    }
}

/// A comma-separated list's entries, trimmed, without empty ones (an unset list is `[""]`).
fn trimmed(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
