//! The hub: which jobs have viewers, and the routing of each live message to them.
//!
//! Each watched job has one bounded broadcast ring. Routing a message is one read-locked map
//! lookup and one push into that ring, whatever the number of viewers, so the subscriber
//! drains Redis at Redis's pace even when viewers cannot keep up. Each viewer reads the ring
//! at its own pace; one that falls a whole ring behind skips ahead (`Lagged`) and heals the
//! records it skipped from PostgreSQL (see `session`). The hub never awaits a viewer and never
//! touches PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytestring::ByteString;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::record::Level;

/// A live message, parsed once and shared by every viewer of its job.
#[derive(Debug)]
pub struct LiveMessage {
    pub job_id: i64,
    /// Present on records the gateway persisted; absent on records other producers published.
    pub seq: Option<i64>,
    pub level: Option<Level>,
    pub device_id: Option<i64>,
    /// The record's JSON text, exactly as it arrived; cloning it copies no bytes.
    pub frame: ByteString,
    /// When the subscriber read it off Redis (for publish-to-send latency).
    pub received_at: Instant,
    /// How many messages without `seq` the job's ring had carried up to and including this
    /// one: a viewer that skipped ahead tells from it how many it lost.
    pub unsequenced_total: u64,
}

/// What a job's ring carries.
#[derive(Debug, Clone)]
pub enum Delivery {
    Record(Arc<LiveMessage>),
    /// The live stream may have lost messages (e.g. Redis reconnected): heal from PostgreSQL.
    Gap { reason: &'static str },
}

/// One watched job.
#[derive(Debug)]
struct JobRing {
    tx: broadcast::Sender<Delivery>,
    /// Messages without `seq` pushed so far (see `LiveMessage::unsequenced_total`).
    unsequenced: AtomicU64,
}

/// Cloneable handle to the routing table.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// job id → its ring. Read-mostly: written only when a job gains its first viewer or
    /// loses its last.
    jobs: RwLock<HashMap<i64, Arc<JobRing>>>,
    /// Messages each ring holds for viewers that are behind.
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// One viewer watching one job.
pub struct Watch {
    /// The ring's receiving end, positioned at the first message after the watch began.
    pub rx: broadcast::Receiver<Delivery>,
    /// Ends the watch when dropped (after `rx`).
    pub guard: WatchGuard,
    /// The ring's count of messages without `seq` when the watch began.
    pub unsequenced_at_start: u64,
}

/// Forgets a job's ring once its last viewer's receiver is gone (drop it after the receiver).
pub struct WatchGuard {
    hub: Hub,
    job_id: i64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut jobs = self.hub.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
        if jobs.get(&self.job_id).is_some_and(|ring| ring.tx.receiver_count() == 0) {
            jobs.remove(&self.job_id);
        }
    }
}

/// Counts a connected viewer for the `viewers_connected` gauge while it lives.
pub struct ViewerGuard {
    metrics: Arc<Metrics>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.metrics.viewers_connected.dec();
    }
}

impl Hub {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                jobs: RwLock::new(HashMap::new()),
                capacity: capacity.max(16),
                metrics,
            }),
        }
    }

    /// Counts a viewer connection until the guard is dropped.
    pub fn connect(&self) -> ViewerGuard {
        self.inner.metrics.viewers_connected.inc();
        ViewerGuard { metrics: self.inner.metrics.clone() }
    }

    /// Starts receiving `job_id`'s live messages (call before reading its history).
    pub fn watch(&self, job_id: i64) -> Watch {
        let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
        let ring = jobs
            .entry(job_id)
            .or_insert_with(|| {
                Arc::new(JobRing {
                    tx: broadcast::channel(self.inner.capacity).0,
                    unsequenced: AtomicU64::new(0),
                })
            })
            .clone();
        // Under the write lock no message is being pushed, so the count and the receiver's
        // starting point agree.
        Watch {
            rx: ring.tx.subscribe(),
            guard: WatchGuard { hub: self.clone(), job_id },
            unsequenced_at_start: ring.unsequenced.load(Ordering::Relaxed),
        }
    }

    /// Pushes a live message into its job's ring; returns whether anyone watches the job.
    pub fn route(&self, mut message: LiveMessage) -> bool {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = jobs.get(&message.job_id) else {
            return false;
        };
        message.unsequenced_total = if message.seq.is_none() {
            ring.unsequenced.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            ring.unsequenced.load(Ordering::Relaxed)
        };
        ring.tx.send(Delivery::Record(Arc::new(message))).is_ok()
    }

    /// Tells every viewer of every job that the live stream may have a hole.
    pub fn broadcast_gap(&self, reason: &'static str) {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        for ring in jobs.values() {
            let _ = ring.tx.send(Delivery::Gap { reason });
        }
    }

    /// Jobs watched right now.
    pub fn watched_jobs(&self) -> usize {
        self.inner.jobs.read().map(|j| j.len()).unwrap_or(0)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
}
