//! The one Redis subscription of the process: `PSUBSCRIBE {prefix}:*` (and `SUBSCRIBE` on any
//! legacy channels) on a dedicated connection. A small RESP2 reader hands each payload to the
//! hub without copying it. The loop reconnects with backoff after any fault, detects a
//! half-open connection with PING (and TCP keepalive), and after every subscribe tells the
//! viewers to heal from PostgreSQL, since messages published meanwhile are gone.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, LiveMessage};
use crate::metrics::Metrics;
use crate::record::route_info;

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub redis_url: String,
    /// Channels are `{prefix}:{job_id}`.
    pub prefix: String,
    /// Single channels whose records are routed by their `job_id`.
    pub legacy_channels: Vec<String>,
    /// How often to PING the server.
    pub ping_interval: Duration,
    /// Silence after a PING (or while connecting) that counts as a dead connection.
    pub ping_timeout: Duration,
}

/// Host, port and credentials from a `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl RedisTarget {
    pub fn parse(redis_url: &str) -> anyhow::Result<RedisTarget> {
        let url = url::Url::parse(redis_url).with_context(|| "REDIS_URL is not a valid URL")?;
        if url.scheme() != "redis" {
            bail!(
                "REDIS_URL scheme {:?} is not supported (use redis://host:port)",
                url.scheme()
            );
        }
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("REDIS_URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let username = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
        let password = url.password().map(decode);
        Ok(RedisTarget {
            host,
            port: url.port().unwrap_or(6379),
            username,
            password,
        })
    }
}

/// Runs until `shutdown` is cancelled: connect, subscribe, route, and on any fault back off
/// (100 ms doubling to 5 s) and start again.
pub async fn run(config: SubscriberConfig, hub: Hub, shutdown: CancellationToken) {
    let metrics = hub.metrics().clone();
    let target = match RedisTarget::parse(&config.redis_url) {
        Ok(t) => t,
        Err(e) => {
            log::error!("redis subscriber cannot start: {e:#}");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = subscribe_and_route(&config, &target, &hub, &metrics, &shutdown) => outcome,
        };
        metrics.set_subscriber_up(false);
        match outcome {
            Ok(Session::Shutdown) => return,
            Ok(Session::Healthy) => backoff = Duration::from_millis(100),
            Err(e) => log::warn!("redis subscriber: {e:#}; reconnecting in {backoff:?}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum Session {
    /// Was subscribed, then lost the connection (reported through `Err` only when it never
    /// got that far).
    Healthy,
    Shutdown,
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn subscribe_and_route(
    config: &SubscriberConfig,
    target: &RedisTarget,
    hub: &Hub,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Session> {
    let stream = tokio::time::timeout(
        config.ping_timeout,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| anyhow!("connecting to {}:{} timed out", target.host, target.port))?
    .with_context(|| format!("connecting to {}:{}", target.host, target.port))?;
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    let (mut reader, mut writer) = stream.into_split();

    let pattern = format!("{}:*", config.prefix);
    let mut hello = Vec::new();
    if let Some(password) = &target.password {
        match &target.username {
            Some(user) => hello.extend(command(&[b"AUTH", user.as_bytes(), password.as_bytes()])),
            None => hello.extend(command(&[b"AUTH", password.as_bytes()])),
        }
    }
    hello.extend(command(&[b"PSUBSCRIBE", pattern.as_bytes()]));
    for channel in &config.legacy_channels {
        hello.extend(command(&[b"SUBSCRIBE", channel.as_bytes()]));
    }
    writer
        .write_all(&hello)
        .await
        .context("sending PSUBSCRIBE")?;

    let mut confirmations_due = 1 + config.legacy_channels.len();
    let mut subscribed = false;
    let router = Router {
        hub,
        metrics,
        prefix: format!("{}:", config.prefix),
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ticker = tokio::time::interval(config.ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the connection last proved alive, and whether a PING is outstanding.
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Session::Shutdown),
            _ = ticker.tick() => {
                let waiting_since = ping_sent.unwrap_or(last_heard);
                if !subscribed && last_heard.elapsed() > config.ping_timeout {
                    bail!("no subscribe confirmation within {:?}", config.ping_timeout);
                }
                if ping_sent.is_some() && waiting_since.elapsed() > config.ping_timeout {
                    let err = anyhow!("no answer to PING within {:?} (half-open connection?)", config.ping_timeout);
                    return if subscribed { log::warn!("redis subscriber: {err:#}"); Ok(Session::Healthy) } else { Err(err) };
                }
                if subscribed && ping_sent.is_none() {
                    writer.write_all(&command(&[b"PING"])).await.context("sending PING")?;
                    ping_sent = Some(Instant::now());
                }
            }
            read = reader.read_buf(&mut buf) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) if subscribed => { log::warn!("redis subscriber: read failed: {e}"); return Ok(Session::Healthy); }
                    Err(e) => return Err(e).context("reading from redis"),
                };
                if n == 0 {
                    if subscribed {
                        log::warn!("redis subscriber: connection closed by the server");
                        return Ok(Session::Healthy);
                    }
                    bail!("connection closed by the server before subscribing");
                }
                last_heard = Instant::now();
                ping_sent = None;
                while let Some((frame, len)) = parse_frame(&buf)? {
                    let bytes = buf.split_to(len).freeze();
                    match router.handle(frame, &bytes)? {
                        Event::Confirmed => {
                            confirmations_due = confirmations_due.saturating_sub(1);
                            if confirmations_due == 0 && !subscribed {
                                subscribed = true;
                                metrics.set_subscriber_up(true);
                                Metrics::inc(&metrics.redis_subscribes, 1);
                                log::info!("redis subscriber: subscribed to {pattern} {:?}", config.legacy_channels);
                                // Anything published while we were not subscribed is lost to
                                // pub/sub: every viewer heals from PostgreSQL.
                                hub.broadcast_gap("redis_reconnect");
                            }
                        }
                        Event::Other => {}
                    }
                }
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
            }
        }
    }
}

enum Event {
    Confirmed,
    Other,
}

/// Turns subscription frames into hub deliveries.
struct Router<'a> {
    hub: &'a Hub,
    metrics: &'a Metrics,
    /// `{prefix}:`, stripped from channel names to find the job id.
    prefix: String,
}

impl Router<'_> {
    fn handle(&self, frame: Frame, bytes: &Bytes) -> anyhow::Result<Event> {
        let items = match frame {
            Frame::Array(items) => items,
            Frame::Error(range) => bail!("redis error: {}", String::from_utf8_lossy(&bytes[range])),
            Frame::Simple(_) | Frame::Integer(_) | Frame::Bulk(_) => return Ok(Event::Other),
        };
        let bulk = |i: usize| match items.get(i) {
            Some(Frame::Bulk(Some(r))) => Some(r.clone()),
            _ => None,
        };
        let Some(kind) = bulk(0) else {
            return Ok(Event::Other);
        };
        match &bytes[kind] {
            b"pmessage" => {
                if let (Some(channel), Some(payload)) = (bulk(2), bulk(3)) {
                    let job = std::str::from_utf8(&bytes[channel])
                        .ok()
                        .and_then(|c| c.strip_prefix(self.prefix.as_str()))
                        .and_then(|id| id.parse::<i64>().ok())
                        .filter(|id| *id >= 1);
                    match job {
                        Some(job) => self.deliver(Some(job), bytes.slice(payload)),
                        None => {
                            // The channel names no job: nothing to route by.
                            Metrics::inc(&self.metrics.redis_messages, 1);
                            Metrics::inc(&self.metrics.malformed_dropped, 1);
                        }
                    }
                }
                Ok(Event::Other)
            }
            b"message" => {
                if let Some(payload) = bulk(2) {
                    self.deliver(None, bytes.slice(payload));
                }
                Ok(Event::Other)
            }
            b"psubscribe" | b"subscribe" => Ok(Event::Confirmed),
            _ => Ok(Event::Other),
        }
    }

    /// Routes one payload; `channel_job` is the job named by the channel (None for legacy
    /// channels, where the record's own `job_id` decides).
    fn deliver(&self, channel_job: Option<i64>, payload: Bytes) {
        Metrics::inc(&self.metrics.redis_messages, 1);
        if let Some(message) = live_message(channel_job, payload) {
            self.hub.route(message);
        } else {
            Metrics::inc(&self.metrics.malformed_dropped, 1);
            log::debug!("dropped a malformed message (channel job {channel_job:?})");
        }
    }
}

/// Validates a payload for routing: UTF-8, a JSON object with a valid `job_id` (equal to the
/// channel's job when the channel names one), no `control` key.
pub fn live_message(channel_job: Option<i64>, payload: Bytes) -> Option<LiveMessage> {
    let info = route_info(&payload)?;
    if channel_job.is_some_and(|job| job != info.job_id) {
        return None;
    }
    let frame = ByteString::try_from(payload).ok()?;
    Some(LiveMessage {
        job_id: info.job_id,
        seq: info.seq,
        level: info.level,
        device_id: info.device_id,
        frame,
        received_at: Instant::now(),
        // Set by the hub when it pushes the message into the job's ring.
        unsequenced_total: 0,
    })
}

/// A RESP2 value, with byte ranges into the buffer it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    Array(Vec<Frame>),
}

/// Parses one complete frame at the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the frame and its length in bytes.
pub fn parse_frame(buf: &[u8]) -> anyhow::Result<Option<(Frame, usize)>> {
    parse_at(buf, 0, 0)
}

const MAX_DEPTH: usize = 8;

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> anyhow::Result<Option<(Frame, usize)>> {
    if depth > MAX_DEPTH {
        bail!("RESP frame nested too deeply");
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(offset) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = pos + 1..pos + offset;
    let after_line = pos + offset + 2;
    let number = || -> anyhow::Result<i64> {
        std::str::from_utf8(&buf[line.clone()])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad RESP length"))
    };
    match tag {
        b'+' => Ok(Some((Frame::Simple(line), after_line))),
        b'-' => Ok(Some((Frame::Error(line), after_line))),
        b':' => Ok(Some((Frame::Integer(number()?), after_line))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Frame::Bulk(None), after_line)));
            }
            let end = after_line + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Frame::Bulk(Some(after_line..end)), end + 2)))
        }
        b'*' => {
            let count = number()?;
            let mut items = Vec::with_capacity(count.clamp(0, 16) as usize);
            let mut at = after_line;
            for _ in 0..count.max(0) {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(items), at)))
        }
        other => bail!("unexpected RESP type byte {other:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pmessage_frame_is_parsed_with_ranges_into_the_buffer() {
        let wire = b"*4\r\n$8\r\npmessage\r\n$14\r\nsession-logs:*\r\n$15\r\nsession-logs:42\r\n$11\r\n{\"job_id\":1\r\n";
        let (frame, len) = parse_frame(wire).unwrap().unwrap();
        assert_eq!(len, wire.len());
        let Frame::Array(items) = frame else { panic!() };
        let Frame::Bulk(Some(r)) = &items[3] else {
            panic!()
        };
        assert_eq!(&wire[r.clone()], b"{\"job_id\":1");
    }

    #[test]
    fn an_incomplete_frame_asks_for_more_bytes() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$3\r\nabc\r\n$5\r\nhel";
        assert!(parse_frame(wire).unwrap().is_none());
        assert!(parse_frame(b"").unwrap().is_none());
        assert!(parse_frame(b"*2\r\n").unwrap().is_none());
        assert!(parse_frame(b"?x\r\n").is_err());
    }

    #[test]
    fn redis_urls_give_host_port_and_credentials() {
        let t = RedisTarget::parse("redis://u:p%40ss@10.0.0.1:6380/2").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.1", 6380));
        assert_eq!(t.username.as_deref(), Some("u"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(RedisTarget::parse("redis://localhost").unwrap().port, 6379);
        assert!(RedisTarget::parse("rediss://x").is_err());
    }

    #[test]
    fn payloads_must_match_their_channel_job() {
        let ok = live_message(
            Some(7),
            Bytes::from_static(br#"{"job_id":7,"message":"x"}"#),
        );
        assert_eq!(ok.unwrap().job_id, 7);
        assert!(live_message(Some(8), Bytes::from_static(br#"{"job_id":7}"#)).is_none());
        assert!(live_message(None, Bytes::from_static(br#"{"job_id":7}"#)).is_some());
        assert!(live_message(None, Bytes::from_static(b"\xff")).is_none());
    }
}
