//! `spawn_app()`: a gateway on a free port, over its own database in the shared PostgreSQL
//! cluster and its own redis-server, plus clients to drive it (HTTP, WebSocket, raw Redis).

use std::time::{Duration, Instant};

use awc::ws;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use session_log_gateway::config::Settings;
use session_log_gateway::startup::Application;
use session_log_gateway::store::Store;

use crate::services::{shared_cluster, PgCluster, RedisServer};

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub database_url: String,
    pub redis_url: String,
    /// The redis-server this gateway started with, when it owns one.
    redis: Option<RedisServer>,
    pub store: Store,
}

/// A fresh, empty database in `cluster`.
pub async fn create_database(cluster: &PgCluster) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut conn = AsyncPgConnection::establish(&cluster.url("postgres"))
        .await
        .expect("connect to postgres");
    diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create database");
    cluster.url(&name)
}

/// Settings for a test gateway: port 0, quick Redis fault detection.
pub fn test_settings(database_url: &str, redis_url: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.bind = "127.0.0.1:0".parse().unwrap();
    settings.database_url = database_url.to_string();
    settings.redis_url = redis_url.to_string();
    settings.redis_ping_interval_ms = 200;
    settings.redis_ping_timeout_ms = 1000;
    settings.db_timeout_ms = 1000;
    settings.workers = 2;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, with settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let redis = RedisServer::start();
    let database_url = create_database(shared_cluster()).await;
    let mut settings = test_settings(&database_url, &redis.url());
    tweak(&mut settings);
    start(settings, Some(redis)).await
}

/// Builds and starts a gateway with these settings, waiting until it is subscribed.
pub async fn start(settings: Settings, redis: Option<RedisServer>) -> TestApp {
    let database_url = settings.database_url.clone();
    let settings_redis_url = settings.redis_url.clone();
    let app = Application::build(settings).await.expect("build app");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped(false));
    let store = Store::new(&database_url, 2, Duration::from_secs(2)).unwrap();
    let test_app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        redis_url: settings_redis_url,
        database_url,
        redis,
        store,
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    /// The redis-server this gateway owns (to kill, restart or freeze it).
    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis
            .as_mut()
            .expect("this gateway owns no redis-server")
    }

    /// Waits until `/readyz` answers 200 (subscriber up, database reachable).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(resp) = client()
                .get(format!("{}/readyz", self.address))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway never became ready");
    }

    /// POSTs a body with a content type; returns status and JSON body.
    pub async fn post_logs(&self, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let mut resp = client()
            .post(format!("{}/api/v1/logs", self.address))
            .insert_header(("Content-Type", content_type))
            .send_body(body.into())
            .await
            .expect("POST /api/v1/logs");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(64 * 1024 * 1024).await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    /// POSTs JSON with a bearer token; returns status and JSON body.
    pub async fn post_logs_as(&self, token: &str, body: &Value) -> (u16, Value) {
        let mut resp = client()
            .post(format!("{}/api/v1/logs", self.address))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(body)
            .await
            .expect("POST /api/v1/logs");
        let json = resp.json::<Value>().await.unwrap_or(Value::Null);
        (resp.status().as_u16(), json)
    }

    /// POSTs JSON with an `Idempotency-Key`; returns status, JSON body and whether the answer
    /// was a replay.
    pub async fn post_idempotent(&self, key: &str, body: &Value) -> (u16, Value, bool) {
        let mut resp = client()
            .post(format!("{}/api/v1/logs", self.address))
            .insert_header(("Idempotency-Key", key))
            .send_json(body)
            .await
            .expect("POST /api/v1/logs");
        let replayed = resp.headers().contains_key("Idempotent-Replayed");
        let json = resp.json::<Value>().await.unwrap_or(Value::Null);
        (resp.status().as_u16(), json, replayed)
    }

    /// Ingests records as a JSON array, expecting 201; returns the acks.
    pub async fn ingest(&self, records: &Value) -> Vec<Value> {
        let (status, body) = self
            .post_logs("application/json", records.to_string())
            .await;
        assert_eq!(status, 201, "ingest failed: {body}");
        body["records"].as_array().cloned().unwrap_or_default()
    }

    /// Opens a WebSocket on `path` (e.g. `/ws/jobs/7?tail=10`).
    pub async fn viewer(&self, path: &str) -> Viewer {
        Viewer::connect(&format!("ws://127.0.0.1:{}{path}", self.port)).await
    }

    /// A Redis connection of the test's own (not the gateway's).
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    pub async fn publish_raw(&self, channel: &str, payload: &[u8]) {
        let mut conn = self.redis_conn().await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }

    pub async fn row_count(&self) -> i64 {
        self.store.count().await.expect("count rows")
    }

    pub async fn metrics(&self) -> String {
        let mut resp = client()
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("GET /metrics");
        String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap()
    }

    /// The value of one metric line.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing in {text}"))
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A WebSocket viewer that answers pings and collects text frames as JSON.
pub struct Viewer {
    conn: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    /// The code of the close frame the gateway sent, once it did.
    pub close_code: Option<u16>,
}

impl Viewer {
    pub async fn connect(url: &str) -> Viewer {
        Self::try_connect(url).await.expect("WebSocket connect")
    }

    pub async fn try_connect(url: &str) -> Result<Viewer, String> {
        let (_resp, conn) = client()
            .ws(url)
            .max_frame_size(64 * 1024 * 1024)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Viewer {
            conn,
            close_code: None,
        })
    }

    /// Sends a text frame (the `/ws` route's subscribe / unsubscribe ops).
    pub async fn send_text(&mut self, text: &str) {
        self.conn
            .send(ws::Message::Text(text.to_string().into()))
            .await
            .expect("send a text frame");
    }

    /// The HTTP status a WebSocket handshake to `url` gets (101 when it is accepted).
    pub async fn handshake_status(url: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = client().ws(url);
        for (k, v) in headers {
            request = request.set_header(*k, *v);
        }
        match request.connect().await {
            Ok(_) => 101,
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
            Err(e) => panic!("handshake to {url} failed: {e}"),
        }
    }

    /// The next text frame as JSON, or None if nothing arrives within `wait` (or it closed).
    pub async fn next_json(&mut self, wait: Duration) -> Option<Value> {
        self.next_text(wait)
            .await
            .map(|t| serde_json::from_str(&t).expect("frame is JSON"))
    }

    /// The next text frame verbatim.
    pub async fn next_text(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.conn.next())
                .await
                .ok()??;
            match frame.ok()? {
                ws::Frame::Text(bytes) => return Some(String::from_utf8(bytes.to_vec()).unwrap()),
                ws::Frame::Ping(bytes) => {
                    let _ = self.conn.send(ws::Message::Pong(bytes)).await;
                }
                ws::Frame::Close(reason) => {
                    self.close_code = reason.map(|r| u16::from(r.code));
                    return None;
                }
                _ => {}
            }
        }
    }

    /// Frames until `done` says stop (inclusive) or `wait` passes without a frame.
    pub async fn collect_until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_json(wait).await {
            let stop = done(&frame);
            frames.push(frame);
            if stop {
                break;
            }
        }
        frames
    }

    /// Reads up to `history_end` and returns the records before it.
    pub async fn history(&mut self) -> Vec<Value> {
        let mut frames = self
            .collect_until(Duration::from_secs(10), |f| f["control"] == "history_end")
            .await;
        assert_eq!(
            frames.pop().map(|f| f["control"].clone()),
            Some(Value::from("history_end"))
        );
        frames
    }
}

/// The `seq` of every record frame (control frames skipped).
pub fn seqs(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f.get("control").is_none())
        .filter_map(|f| f["seq"].as_i64())
        .collect()
}

/// A record for job `job_id` with message `message`.
pub fn record(job_id: i64, message: &str) -> Value {
    serde_json::json!({ "job_id": job_id, "message": message, "level": "info", "source": "test" })
}

/// The gateway binary as a real process (for signals and restarts).
pub struct GatewayProcess {
    pub address: String,
    child: std::process::Child,
}

impl GatewayProcess {
    /// Starts the binary on `port` and waits until it is ready.
    pub async fn start(port: u16, database_url: &str, redis_url: &str) -> GatewayProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_session-log-gateway"))
            .env("GATEWAY_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("GATEWAY_REDIS_PING_INTERVAL_MS", "200")
            .env("GATEWAY_REDIS_PING_TIMEOUT_MS", "1000")
            .env("GATEWAY_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start the gateway binary");
        let gateway = GatewayProcess {
            address: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = client()
                .get(format!("{}/readyz", gateway.address))
                .send()
                .await
            {
                if resp.status() == 200 {
                    return gateway;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway process never became ready"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited cleanly and how long
    /// it took.
    pub async fn terminate(mut self) -> (bool, Duration) {
        let began = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.success(), began.elapsed());
            }
            if began.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                return (false, began.elapsed());
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A viewer that reconnects with `after_seq` whenever its connection ends, until it has seen
/// `last` (or nothing arrives for `patience`). Returns every seq it received, in order.
pub async fn follow_with_reconnects(url_base: String, last: i64, patience: Duration) -> Vec<i64> {
    let mut got: Vec<i64> = Vec::new();
    let began = Instant::now();
    while got.last() != Some(&last) && began.elapsed() < patience {
        let after = got.last().copied().unwrap_or(0);
        let Ok(mut viewer) = Viewer::try_connect(&format!("{url_base}?after_seq={after}")).await
        else {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while let Some(frame) = viewer.next_json(Duration::from_secs(10)).await {
            if let Some(seq) = frame.get("seq").and_then(Value::as_i64) {
                if frame.get("control").is_none() {
                    got.push(seq);
                }
            }
            if got.last() == Some(&last) {
                break;
            }
        }
    }
    got
}

/// Posts `total` records spread over jobs 1..=jobs by `producers` concurrent clients in
/// batches; every request must get 201.
pub async fn produce(address: String, producers: usize, total: usize, jobs: usize, batch: usize) {
    let per_producer = total / producers;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let address = address.clone();
            actix_web::rt::spawn(async move {
                let mut sent = 0;
                while sent < per_producer {
                    let records: Vec<Value> = (sent..(sent + batch).min(per_producer))
                        .map(|i| {
                            record(
                                ((p * per_producer + i) % jobs + 1) as i64,
                                &format!("p{p} r{i}"),
                            )
                        })
                        .collect();
                    sent += records.len();
                    let mut resp = client()
                        .post(format!("{address}/api/v1/logs"))
                        .send_json(&records)
                        .await
                        .expect("post");
                    assert_eq!(resp.status(), 201, "{:?}", resp.body().await);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("producer");
    }
}

/// An SSE client reading `event:` / `id:` / `data:` blocks from a streaming response.
pub struct SseClient {
    body: awc::ClientResponse,
    buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseClient {
    /// Opens `path` with optional extra headers; panics unless the answer is a 200 event stream.
    pub async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut request = client().get(format!("{}{path}", app.address));
        for (k, v) in headers {
            request = request.insert_header((*k, *v));
        }
        let resp = request.send().await.expect("SSE request");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        SseClient {
            body: resp,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or None after `wait` without one.
    pub async fn next_event(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut data_lines = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data_lines.push(v);
                    }
                }
                if !data_lines.is_empty() {
                    event.data = data_lines.join("\n");
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }
}
