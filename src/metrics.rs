//! What the gateway counts about itself, rendered at `GET /metrics` in the Prometheus /
//! OpenMetrics text format through `prometheus-client`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Process-wide metrics; every field is cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    /// Viewers (WebSocket or SSE connections) currently connected.
    pub viewers_connected: Gauge,
    /// Frames written to viewers.
    pub frames_sent: Counter,
    /// Records stored by ingest.
    pub records_ingested: Counter,
    /// Records stored by ingest whose PUBLISH failed (kept for a retry; viewers heal them).
    pub publish_failures: Counter,
    /// Messages read from Redis.
    pub redis_messages: Counter,
    /// Messages from Redis that were not a JSON object with a valid `job_id`.
    pub malformed_dropped: Counter,
    /// Times the Redis subscriber (re)connected and subscribed.
    pub redis_subscribes: Counter,
    /// Times a viewer fell a whole ring behind and skipped ahead (healing from PostgreSQL).
    pub viewers_lagged: Counter,
    /// Records sent to viewers from PostgreSQL to fill a hole in the live stream.
    pub records_healed: Counter,
    /// Time to validate, store and publish one ingest request.
    pub ingest_seconds: Histogram,
    /// From reading a message off Redis to handing its frame to a viewer's socket (sampled:
    /// the first frame of each batch a viewer writes).
    pub publish_to_send_seconds: Histogram,
    /// 1 while the Redis subscriber is subscribed (exported copy of `subscriber_up`).
    subscriber_up_gauge: Gauge,
    /// Whether the Redis subscriber is subscribed right now (for `/readyz`).
    subscriber_up: AtomicBool,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gateway");
        let metrics = Metrics {
            viewers_connected: Gauge::default(),
            frames_sent: Counter::default(),
            records_ingested: Counter::default(),
            publish_failures: Counter::default(),
            redis_messages: Counter::default(),
            malformed_dropped: Counter::default(),
            redis_subscribes: Counter::default(),
            viewers_lagged: Counter::default(),
            records_healed: Counter::default(),
            // 0.1 ms .. ~3 s
            ingest_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 10 µs .. ~0.6 s
            publish_to_send_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 16)),
            subscriber_up_gauge: Gauge::default(),
            subscriber_up: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "viewers_connected",
            "Viewers currently connected",
            metrics.viewers_connected.clone(),
        );
        registry.register(
            "frames_sent",
            "Frames written to viewers",
            metrics.frames_sent.clone(),
        );
        registry.register(
            "records_ingested",
            "Records stored by ingest",
            metrics.records_ingested.clone(),
        );
        registry.register(
            "publish_failures",
            "Stored records whose PUBLISH failed",
            metrics.publish_failures.clone(),
        );
        registry.register(
            "redis_messages",
            "Messages read from Redis",
            metrics.redis_messages.clone(),
        );
        registry.register(
            "malformed_dropped",
            "Redis messages dropped as malformed",
            metrics.malformed_dropped.clone(),
        );
        registry.register(
            "redis_subscribes",
            "Redis subscriber (re)connections",
            metrics.redis_subscribes.clone(),
        );
        registry.register(
            "viewers_lagged",
            "Times a viewer fell a whole job ring behind",
            metrics.viewers_lagged.clone(),
        );
        registry.register(
            "records_healed",
            "Records sent from PostgreSQL to fill live holes",
            metrics.records_healed.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Ingest request latency",
            metrics.ingest_seconds.clone(),
        );
        registry.register(
            "publish_to_send_seconds",
            "From reading a message off Redis to writing it to a viewer",
            metrics.publish_to_send_seconds.clone(),
        );
        registry.register(
            "redis_subscriber_up",
            "1 while the Redis subscriber is subscribed",
            metrics.subscriber_up_gauge.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn inc(counter: &Counter, by: u64) {
        counter.inc_by(by);
    }

    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    pub fn set_subscriber_up(&self, up: bool) {
        self.subscriber_up.store(up, Ordering::Relaxed);
        self.subscriber_up_gauge.set(i64::from(up));
    }

    pub fn subscriber_up(&self) -> bool {
        self.subscriber_up.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
