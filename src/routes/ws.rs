//! WebSocket viewers. `GET /ws/jobs/{job_id}` streams one job; `GET /ws` streams the jobs the
//! client subscribes to with `{"op":"subscribe","job_id":N,"after_seq":M}` and
//! `{"op":"unsubscribe","job_id":N}` frames. Each connection gets its own task and bounded
//! view of the job rings (`session::Feeds`); the task pings the peer and closes it when it is dead (no frame
//! for the client timeout: 1008), too slow (a write blocked, or lagging, for the slow-viewer
//! time: 1013), or when the gateway shuts down (1001).

use std::time::{Duration, Instant};

use actix_http::ws::{CloseCode, CloseReason, ProtocolError};
use actix_web::{web, HttpRequest, HttpResponse};
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::json;

use super::params::{job_id, valid_job_id, StreamQuery};
use super::{guard, AppState};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::record::control_frame;
use crate::session::{FeedError, Feeds, FrameSink, Start};
use crate::store::Filter;
use crate::upgrade::Accepted;
use crate::websocket::{Incoming, WriteError, WsConnection, WsWriter};

pub async fn job_socket(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job_id = job_id(&path)?;
    let (start, filter) = query.parse()?;
    accept(req, state, Some((job_id, start, filter)))
}

pub async fn multi_socket(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    accept(req, state, None)
}

/// Checks the handshake and answers 101; `upgrade` then hands the socket to `run_viewer`.
fn accept(
    req: HttpRequest,
    state: web::Data<AppState>,
    first: Option<(i64, Start, Filter)>,
) -> Result<HttpResponse, ApiError> {
    // Refused before the upgrade: no frame is ever sent to a client that may not read.
    guard::origin(&req, &state)?;
    guard::reader(&req, &state)?;
    // Subprotocols are not negotiated: the stream is JSON text frames.
    let mut response: HttpResponse = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::BadRequest(format!("WebSocket handshake failed: {e}")))?
        .finish()
        .map_into_boxed_body()
        .into();
    let slot = state.connections.acquire(&req)?;
    response
        .extensions_mut()
        .insert(Accepted::new(move |stream, leftover| {
            let max_frame = state.settings.max_client_frame_bytes;
            run_viewer(
                state,
                WsConnection::new(stream, leftover, max_frame),
                first,
                slot,
            )
        }));
    Ok(response)
}

/// Writes frames to the socket; a write that waits longer than `timeout` for the peer to read
/// means the peer stopped reading.
struct WsSink<'a> {
    writer: WsWriter<'a>,
    timeout: Duration,
    /// Frames written since the last flush into `Metrics::frames_sent` (counted locally so
    /// that fan-out does not contend on one shared counter per frame).
    unreported: u64,
    metrics: std::sync::Arc<Metrics>,
}

impl WsSink<'_> {
    async fn text(&mut self, frame: ByteString) -> Result<(), FeedError> {
        self.writer
            .text(frame, self.timeout)
            .await
            .map_err(|e| match e {
                WriteError::Closed => FeedError::Closed,
                WriteError::TooSlow => FeedError::TooSlow,
            })?;
        self.unreported += 1;
        if self.unreported >= 256 {
            self.report();
        }
        Ok(())
    }

    fn report(&mut self) {
        Metrics::inc(
            &self.metrics.frames_sent,
            std::mem::take(&mut self.unreported),
        );
    }
}

impl FrameSink for WsSink<'_> {
    async fn send_record(&mut self, json: ByteString, _seq: Option<i64>) -> Result<(), FeedError> {
        self.text(json).await
    }

    async fn send_control(&mut self, json: String) -> Result<(), FeedError> {
        self.text(json.into()).await
    }
}

/// A client frame on `GET /ws`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe {
        job_id: i64,
        #[serde(flatten)]
        query: StreamQuery,
    },
    Unsubscribe {
        job_id: i64,
    },
}

fn close(code: CloseCode, why: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(why.to_string()),
    })
}

async fn run_viewer(
    state: web::Data<AppState>,
    mut connection: WsConnection,
    first: Option<(i64, Start, Filter)>,
    _slot: guard::ConnectionSlot,
) {
    let settings = &state.settings;
    let slow = state.slow_viewer();
    let client_timeout = Duration::from_secs(settings.client_timeout_secs);
    let multi = first.is_none();
    let (mut reader, writer) = connection.split();
    let mut sink = WsSink {
        writer,
        timeout: slow,
        unreported: 0,
        metrics: state.metrics.clone(),
    };
    let mut feeds = state.new_viewer();

    let outcome: Result<Option<CloseReason>, FeedError> = async {
        if let Some((job_id, start, filter)) = first {
            feeds.subscribe(job_id, filter, start, &mut sink).await?;
        }
        let mut heartbeat = tokio::time::interval(Duration::from_secs(settings.heartbeat_secs.max(1)));
        heartbeat.reset();
        let mut last_heard = Instant::now();
        // Made once: a new one per loop would join and leave the token's waiter list (shared
        // by every viewer, behind one lock) twice per frame.
        let shutdown = state.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(close(CloseCode::Away, "gateway shutting down")),
                incoming = reader.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(Incoming::Ping(bytes))) => {
                            sink.writer.pong(bytes, slow).await.map_err(|_| FeedError::Closed)?;
                        }
                        Some(Ok(Incoming::Text(text))) if multi => {
                            // Boxed: rare, and its parsed op would otherwise sit in every viewer's task.
                            Box::pin(handle_op(&text, &mut feeds, &mut sink, settings.max_jobs_per_socket)).await?;
                        }
                        Some(Ok(Incoming::Close)) | None => return Ok(None),
                        Some(Ok(_)) => {}
                        Some(Err(ProtocolError::Overflow)) => {
                            return Ok(close(CloseCode::Size, "frame too large"));
                        }
                        Some(Err(e)) => return Ok(close(CloseCode::Protocol, &e.to_string())),
                    }
                }
                item = feeds.next_live() => feeds.on_live_item(item, &mut sink).await?,
                // Only when nothing else is ready: a burst of frames goes out in one write.
                written = sink.writer.flush(), if sink.writer.pending() => {
                    written.map_err(|_| FeedError::Closed)?;
                }
                _ = heartbeat.tick() => {
                    sink.report();
                    if last_heard.elapsed() > client_timeout {
                        return Ok(close(CloseCode::Policy, "heartbeat timeout"));
                    }
                    sink.writer.ping(slow).await.map_err(|_| FeedError::Closed)?;
                }
            }
        }
    }
    .await;

    drop(feeds);
    sink.report();
    drop(sink);
    let reason = match outcome {
        Ok(reason) => reason,
        Err(FeedError::Closed) => return,
        Err(FeedError::TooSlow) => close(CloseCode::Again, "viewer stopped reading"),
        Err(FeedError::Hopeless) => close(CloseCode::Again, "viewer cannot keep up"),
        Err(FeedError::Store(e)) => {
            log::warn!("viewer: {e}");
            close(CloseCode::Error, "database unavailable")
        }
    };
    // Boxed: the close handshake's timer and linger would otherwise sit in every viewer's task.
    Box::pin(connection.close(reason, Duration::from_secs(1))).await;
}

/// Applies one `subscribe` / `unsubscribe` frame; a bad frame gets an `error` control frame.
async fn handle_op(
    text: &[u8],
    feeds: &mut Feeds,
    sink: &mut WsSink<'_>,
    max_jobs: usize,
) -> Result<(), FeedError> {
    let error = |message: String| json!({ "control": "error", "message": message }).to_string();
    let op: ClientOp = match serde_json::from_slice(text) {
        Ok(op) => op,
        Err(e) => {
            return sink
                .send_control(error(format!(
                    "expected {{\"op\":\"subscribe\",\"job_id\":N,\"after_seq\":M}} or {{\"op\":\"unsubscribe\",\"job_id\":N}}: {e}"
                )))
                .await
        }
    };
    match op {
        ClientOp::Subscribe { job_id: id, query } => {
            let parsed = valid_job_id(id).and_then(|id| Ok((id, query.parse()?)));
            match parsed {
                Err(e) => sink.send_control(error(e.to_string())).await,
                Ok((id, _)) if feeds.len() >= max_jobs => {
                    sink.send_control(error(format!(
                        "job {id}: at most {max_jobs} jobs per connection"
                    )))
                    .await
                }
                Ok((id, (start, filter))) => {
                    feeds.unsubscribe(id);
                    feeds.subscribe(id, filter, start, sink).await
                }
            }
        }
        ClientOp::Unsubscribe { job_id } => {
            feeds.unsubscribe(job_id);
            sink.send_control(control_frame("unsubscribed", job_id, &[]))
                .await
        }
    }
}
