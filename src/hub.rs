//! The hub: which viewers watch which job, and the routing of each live message to them.
//!
//! Routing happens on the subscriber's task: one read-locked map lookup per message, then a
//! non-blocking `try_send` into each viewer's bounded queue. The hub never awaits a viewer and
//! never touches PostgreSQL; a viewer whose queue is full is flagged as lagging and heals itself
//! from PostgreSQL (see `session`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytestring::ByteString;
use tokio::sync::mpsc;

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
}

/// What a viewer's queue carries.
#[derive(Debug, Clone)]
pub enum Delivery {
    Record(Arc<LiveMessage>),
    /// The live stream may have lost messages (e.g. Redis reconnected): heal from PostgreSQL.
    Gap {
        reason: &'static str,
    },
}

/// The hub's side of one connected viewer (one WebSocket or SSE connection).
#[derive(Debug)]
pub struct Viewer {
    pub id: u64,
    /// Bounded: the hub only ever `try_send`s into it.
    tx: mpsc::Sender<Delivery>,
    /// Set when a delivery did not fit in the queue; the viewer's task heals and clears it.
    lagged: AtomicBool,
    /// Records without `seq` lost to a full queue, per job, since the viewer last reported
    /// them (touched only when a queue is full).
    dropped_unsequenced: Mutex<BTreeMap<i64, u64>>,
}

impl Viewer {
    /// Clears and returns the lag flag.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    /// Clears and returns the counts of unsequenced records lost, per job.
    pub fn take_dropped(&self) -> BTreeMap<i64, u64> {
        std::mem::take(
            &mut *self
                .dropped_unsequenced
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    fn offer(&self, delivery: Delivery, metrics: &Metrics) -> bool {
        match self.tx.try_send(delivery) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(delivery)) => {
                if let Delivery::Record(msg) = &delivery {
                    if msg.seq.is_none() {
                        let mut dropped = self
                            .dropped_unsequenced
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        *dropped.entry(msg.job_id).or_default() += 1;
                    }
                }
                if !self.lagged.swap(true, Ordering::AcqRel) {
                    metrics.viewers_lagged.inc();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Cloneable handle to the routing table.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// job id → its viewers. Read-mostly: written only when a viewer starts or stops watching.
    jobs: RwLock<HashMap<i64, Vec<Arc<Viewer>>>>,
    /// Every connected viewer, for broadcasts such as `Gap`.
    viewers: RwLock<HashMap<u64, Arc<Viewer>>>,
    next_id: AtomicU64,
    /// Capacity of each viewer's queue.
    queue_capacity: usize,
    metrics: Arc<Metrics>,
}

/// A viewer's registration; dropping it removes the viewer from every job it watched.
pub struct Registration {
    hub: Hub,
    pub viewer: Arc<Viewer>,
    jobs: Vec<i64>,
}

impl Registration {
    /// Starts routing `job_id`'s live messages to this viewer (before its history is read).
    pub fn watch(&mut self, job_id: i64) {
        if self.jobs.contains(&job_id) {
            return;
        }
        self.jobs.push(job_id);
        let mut jobs = self
            .hub
            .inner
            .jobs
            .write()
            .unwrap_or_else(|e| e.into_inner());
        jobs.entry(job_id).or_default().push(self.viewer.clone());
    }

    /// Stops routing `job_id` to this viewer.
    pub fn unwatch(&mut self, job_id: i64) {
        self.jobs.retain(|j| *j != job_id);
        self.hub.remove_from_job(job_id, self.viewer.id);
    }

    pub fn watching(&self) -> &[i64] {
        &self.jobs
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for job_id in std::mem::take(&mut self.jobs) {
            self.hub.remove_from_job(job_id, self.viewer.id);
        }
        let mut viewers = self
            .hub
            .inner
            .viewers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        viewers.remove(&self.viewer.id);
        self.hub.inner.metrics.viewers_connected.dec();
    }
}

impl Hub {
    pub fn new(queue_capacity: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                jobs: RwLock::new(HashMap::new()),
                viewers: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                queue_capacity: queue_capacity.max(1),
                metrics,
            }),
        }
    }

    /// A new viewer with its own bounded queue, watching nothing yet.
    pub fn register(&self) -> (Registration, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(self.inner.queue_capacity);
        let viewer = Arc::new(Viewer {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            lagged: AtomicBool::new(false),
            dropped_unsequenced: Mutex::new(BTreeMap::new()),
        });
        self.inner
            .viewers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(viewer.id, viewer.clone());
        self.inner.metrics.viewers_connected.inc();
        let registration = Registration {
            hub: self.clone(),
            viewer,
            jobs: Vec::new(),
        };
        (registration, rx)
    }

    fn remove_from_job(&self, job_id: i64, viewer_id: u64) {
        let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = jobs.get_mut(&job_id) {
            list.retain(|v| v.id != viewer_id);
            if list.is_empty() {
                jobs.remove(&job_id);
            }
        }
    }

    /// Hands a live message to every viewer of its job; returns how many queued it.
    pub fn route(&self, message: LiveMessage) -> usize {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let Some(viewers) = jobs.get(&message.job_id) else {
            return 0;
        };
        let message = Arc::new(message);
        viewers
            .iter()
            .filter(|v| v.offer(Delivery::Record(message.clone()), &self.inner.metrics))
            .count()
    }

    /// Tells every connected viewer that the live stream may have a hole.
    pub fn broadcast_gap(&self, reason: &'static str) {
        let viewers = self.inner.viewers.read().unwrap_or_else(|e| e.into_inner());
        for viewer in viewers.values() {
            viewer.offer(Delivery::Gap { reason }, &self.inner.metrics);
        }
    }

    /// Viewers currently connected.
    pub fn viewer_count(&self) -> usize {
        self.inner.viewers.read().map(|v| v.len()).unwrap_or(0)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
}
