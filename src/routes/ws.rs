//! `GET /ws/jobs/{job_id}`: one job's records over a WebSocket. Each viewer gets its own task
//! and bounded queue; the task sends history, then live records through `session::JobFeed`,
//! pings the peer, and closes it when it is dead (no frame for the client timeout), too slow
//! (a write blocked for the slow-viewer time, or lagging for that long: 1013) or when the
//! gateway shuts down (1001).

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::hub::Delivery;
use crate::metrics::Metrics;
use crate::record::{control_frame, Level};
use crate::session::{FeedError, FrameSink, JobFeed, Start};
use crate::store::Filter;

/// Largest frame a viewer may send us (viewers only send small control frames).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Query parameters shared by the streaming routes.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    pub after_seq: Option<i64>,
    pub tail: Option<i64>,
    pub level: Option<String>,
    pub device_id: Option<i64>,
}

impl StreamQuery {
    /// Checks the parameters and splits them into where to start and what to keep.
    pub fn parse(&self) -> Result<(Start, Filter), ApiError> {
        if self.after_seq.is_some_and(|s| s < 0) {
            return Err(ApiError::BadRequest("after_seq must be 0 or more".into()));
        }
        if self.tail.is_some_and(|t| t < 0) {
            return Err(ApiError::BadRequest("tail must be 0 or more".into()));
        }
        if self.device_id.is_some_and(|d| d < 1) {
            return Err(ApiError::BadRequest(
                "device_id must be a positive integer".into(),
            ));
        }
        let min_level = match &self.level {
            None => None,
            Some(text) => Some(Level::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "level {text:?} is not one of debug, info, warning, error, critical"
                ))
            })?),
        };
        Ok((
            Start {
                after_seq: self.after_seq,
                tail: self.tail,
            },
            Filter {
                min_level,
                device_id: self.device_id,
            },
        ))
    }
}

/// Checks a job id from the path.
pub fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "job id {raw:?} must be an integer from 1 to 9223372036854775807"
            ))
        })
}

pub async fn job_socket(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let job_id = job_id(&path)?;
    let (start, filter) = query.parse()?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("WebSocket handshake failed: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_CLIENT_FRAME)
        .aggregate_continuations();
    actix_web::rt::spawn(run_viewer(state, session, stream, job_id, start, filter));
    Ok(response)
}

/// Writes frames to the socket; a write that blocks longer than `timeout` means the peer
/// stopped reading.
struct WsSink {
    session: actix_ws::Session,
    timeout: Duration,
    metrics: std::sync::Arc<Metrics>,
}

impl FrameSink for WsSink {
    async fn send(&mut self, frame: ByteString) -> Result<(), FeedError> {
        match tokio::time::timeout(self.timeout, self.session.text(frame)).await {
            Ok(Ok(())) => {
                Metrics::inc(&self.metrics.frames_sent, 1);
                Ok(())
            }
            Ok(Err(_)) => Err(FeedError::Closed),
            Err(_) => Err(FeedError::TooSlow),
        }
    }
}

async fn run_viewer(
    state: web::Data<AppState>,
    session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    job_id: i64,
    start: Start,
    filter: Filter,
) {
    let settings = &state.settings;
    let slow = Duration::from_secs(settings.slow_viewer_secs);
    let client_timeout = Duration::from_secs(settings.client_timeout_secs);
    let mut sink = WsSink {
        session,
        timeout: slow,
        metrics: state.metrics.clone(),
    };

    // Live first, then history: whatever commits while history is read arrives live.
    let (mut registration, mut queue) = state.hub.register();
    registration.watch(job_id);
    let viewer = registration.viewer.clone();

    let outcome: Result<Option<CloseReason>, FeedError> = async {
        let mut feed = JobFeed::start(job_id, filter, start, state.store.clone(), state.metrics.clone(), &mut sink).await?;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(settings.heartbeat_secs.max(1)));
        heartbeat.reset();
        let mut last_heard = Instant::now();
        // Since when the viewer has been overflowing its queue without catching up.
        let mut lagging_since: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = state.shutdown.cancelled() => {
                    return Ok(Some(CloseReason { code: CloseCode::Away, description: Some("gateway shutting down".into()) }));
                }
                incoming = stream.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if sink.session.pong(&bytes).await.is_err() { return Ok(None); }
                        }
                        Some(Ok(AggregatedMessage::Close(_))) | None => return Ok(None),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            log::debug!("viewer of job {job_id}: protocol error {e}");
                            return Ok(Some(CloseReason { code: CloseCode::Protocol, description: Some(e.to_string()) }));
                        }
                    }
                }
                delivery = queue.recv() => {
                    let Some(delivery) = delivery else { return Ok(None) };
                    if viewer.take_lagged() {
                        let since = *lagging_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > slow {
                            return Ok(Some(CloseReason { code: CloseCode::Again, description: Some("viewer cannot keep up".into()) }));
                        }
                        feed.heal(&mut sink).await?;
                        let dropped = viewer.take_dropped();
                        if dropped > 0 {
                            sink.send(control_frame("dropped", job_id, &[("count", json!(dropped))]).into()).await?;
                        }
                    }
                    match delivery {
                        Delivery::Record(message) => feed.on_live(&message, &mut sink).await?,
                        Delivery::Gap { reason } => {
                            feed.heal(&mut sink).await?;
                            sink.send(control_frame("gap", job_id, &[("reason", json!(reason)), ("healed_to_seq", json!(feed.last_seq))]).into()).await?;
                        }
                    }
                    if queue.is_empty() {
                        lagging_since = None;
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > client_timeout {
                        log::debug!("viewer of job {job_id}: no frame for {client_timeout:?}, closing");
                        return Ok(Some(CloseReason { code: CloseCode::Policy, description: Some("heartbeat timeout".into()) }));
                    }
                    if sink.session.ping(b"").await.is_err() { return Ok(None); }
                }
            }
        }
    }
    .await;

    drop(registration);
    let reason = match outcome {
        Ok(reason) => reason,
        Err(FeedError::Closed) => return,
        Err(FeedError::TooSlow) => Some(CloseReason {
            code: CloseCode::Again,
            description: Some("viewer stopped reading".into()),
        }),
        Err(FeedError::Store(e)) => {
            log::warn!("viewer of job {job_id}: {e}");
            Some(CloseReason {
                code: CloseCode::Error,
                description: Some("database unavailable".into()),
            })
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.session.close(reason)).await;
}
