//! Server-sent events: `GET /api/v1/jobs/{job_id}/stream` (`event: log`, `id: <seq>`,
//! `data: <record>`; resumes after the `Last-Event-ID` header; the WebSocket route's query
//! parameters) and NetRaven's `GET /logs/stream?job_id=&device_id=` (also under `/api`), so
//! NetRaven's Vue `LiveLog` component works unchanged. Control frames go out as
//! `event: control`; a comment line every heartbeat keeps proxies from closing the stream.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use bytestring::ByteString;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::params::{job_id, StreamQuery};
use super::{guard, AppState};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::session::{FeedError, FrameSink, Start};
use crate::store::Filter;

pub async fn job_stream(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job_id = job_id(&path)?;
    let (start, filter) = query.parse()?;
    let start = resume_from(&req, start)?;
    stream(&req, state, job_id, start, filter)
}

/// NetRaven's query: `job_id` is required here (streaming every job at once is not offered).
/// (Fields spelled out: serde's `flatten` cannot read numbers from a query string.)
#[derive(Debug, Deserialize)]
pub struct NetRavenQuery {
    job_id: Option<String>,
    device_id: Option<i64>,
    level: Option<String>,
    after_seq: Option<i64>,
    tail: Option<i64>,
}

pub async fn netraven_stream(
    req: HttpRequest,
    query: web::Query<NetRavenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = query
        .job_id
        .clone()
        .ok_or_else(|| ApiError::BadRequest("job_id is required".into()))?;
    let job_id = job_id(&raw)?;
    let query = query.into_inner();
    let (start, filter) = StreamQuery {
        after_seq: query.after_seq,
        tail: query.tail,
        level: query.level,
        device_id: query.device_id,
    }
    .parse()?;
    let start = resume_from(&req, start)?;
    stream(&req, state, job_id, start, filter)
}

/// `Last-Event-ID` (the last seq the client holds; `0`: from the start) wins over the query.
fn resume_from(req: &HttpRequest, start: Start) -> Result<Start, ApiError> {
    let Some(value) = req.headers().get("Last-Event-ID") else {
        return Ok(start);
    };
    let seq = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|s| *s >= 0)
        .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a seq (0 or more)".into()))?;
    Ok(Start {
        after_seq: Some(seq),
        tail: None,
    })
}

fn stream(
    req: &HttpRequest,
    state: web::Data<AppState>,
    job_id: i64,
    start: Start,
    filter: Filter,
) -> Result<HttpResponse, ApiError> {
    guard::reader(req, &state)?;
    let slot = state.connections.acquire(req)?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    actix_web::rt::spawn(run_stream(state, tx, job_id, start, filter, slot));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One SSE event; multi-line data becomes several `data:` lines.
fn event(kind: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

struct SseSink {
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    metrics: std::sync::Arc<Metrics>,
}

impl SseSink {
    async fn chunk(&mut self, chunk: Bytes) -> Result<(), FeedError> {
        match tokio::time::timeout(self.timeout, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(FeedError::Closed),
            Err(_) => Err(FeedError::TooSlow),
        }
    }
}

impl FrameSink for SseSink {
    async fn send_record(&mut self, json: ByteString, seq: Option<i64>) -> Result<(), FeedError> {
        self.chunk(event("log", seq, &json)).await?;
        Metrics::inc(&self.metrics.frames_sent, 1);
        Ok(())
    }

    async fn send_control(&mut self, json: String) -> Result<(), FeedError> {
        self.chunk(event("control", None, &json)).await
    }
}

async fn run_stream(
    state: web::Data<AppState>,
    tx: mpsc::Sender<Bytes>,
    job_id: i64,
    start: Start,
    filter: Filter,
    _slot: guard::ConnectionSlot,
) {
    let slow = state.slow_viewer();
    let mut sink = SseSink {
        tx,
        timeout: slow,
        metrics: state.metrics.clone(),
    };
    let mut feeds = state.new_viewer();
    let outcome: Result<(), FeedError> = async {
        sink.chunk(Bytes::from_static(b"retry: 1000\n\n")).await?;
        feeds.subscribe(job_id, filter, start, &mut sink).await?;
        let mut keepalive =
            tokio::time::interval(Duration::from_secs(state.settings.heartbeat_secs.max(1)));
        keepalive.reset();
        // Made once: a new one per loop would join and leave the token's waiter list (shared
        // by every viewer, behind one lock) twice per frame.
        let shutdown = state.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = sink.tx.closed() => return Ok(()),
                item = feeds.next_live() => feeds.on_live_item(item, &mut sink).await?,
                _ = keepalive.tick() => sink.chunk(Bytes::from_static(b": keep-alive\n\n")).await?,
            }
        }
    }
    .await;
    if let Err(e) = outcome {
        log::debug!("SSE stream of job {job_id} ended: {e}");
    }
}
