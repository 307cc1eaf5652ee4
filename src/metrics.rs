//! Counters the gateway keeps about itself, shared by every part and rendered as Prometheus
//! text at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Process-wide counters and gauges; all relaxed atomics (they are statistics, not locks).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Viewers (WebSocket or SSE connections) currently connected.
    pub viewers_connected: AtomicU64,
    /// Frames written to viewers.
    pub frames_sent: AtomicU64,
    /// Records stored by ingest.
    pub records_ingested: AtomicU64,
    /// Records stored by ingest whose PUBLISH failed (viewers heal them from PostgreSQL).
    pub publish_failures: AtomicU64,
    /// Messages read from Redis.
    pub redis_messages: AtomicU64,
    /// Messages from Redis that were not a JSON object with a valid `job_id`.
    pub malformed_dropped: AtomicU64,
    /// Times the Redis subscriber (re)connected and subscribed.
    pub redis_subscribes: AtomicU64,
    /// Times a viewer's queue overflowed.
    pub viewers_lagged: AtomicU64,
    /// Records sent to viewers from PostgreSQL to fill a hole in the live stream.
    pub records_healed: AtomicU64,
    /// Whether the Redis subscriber is connected and subscribed right now.
    pub subscriber_up: AtomicBool,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, u64); 10] = [
            (
                "gateway_viewers_connected",
                "gauge",
                "Viewers currently connected",
                self.viewers_connected.load(Ordering::Relaxed),
            ),
            (
                "gateway_frames_sent_total",
                "counter",
                "Frames written to viewers",
                self.frames_sent.load(Ordering::Relaxed),
            ),
            (
                "gateway_records_ingested_total",
                "counter",
                "Records stored by ingest",
                self.records_ingested.load(Ordering::Relaxed),
            ),
            (
                "gateway_publish_failures_total",
                "counter",
                "Stored records whose PUBLISH failed",
                self.publish_failures.load(Ordering::Relaxed),
            ),
            (
                "gateway_redis_messages_total",
                "counter",
                "Messages read from Redis",
                self.redis_messages.load(Ordering::Relaxed),
            ),
            (
                "gateway_malformed_dropped_total",
                "counter",
                "Redis messages dropped as malformed",
                self.malformed_dropped.load(Ordering::Relaxed),
            ),
            (
                "gateway_redis_subscribes_total",
                "counter",
                "Redis subscriber (re)connections",
                self.redis_subscribes.load(Ordering::Relaxed),
            ),
            (
                "gateway_viewers_lagged_total",
                "counter",
                "Viewer queue overflows",
                self.viewers_lagged.load(Ordering::Relaxed),
            ),
            (
                "gateway_records_healed_total",
                "counter",
                "Records sent from PostgreSQL to fill live holes",
                self.records_healed.load(Ordering::Relaxed),
            ),
            (
                "gateway_redis_subscriber_up",
                "gauge",
                "1 while the Redis subscriber is subscribed",
                u64::from(self.subscriber_up.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
