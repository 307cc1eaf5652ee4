//! The hub: which jobs have viewers, and the routing of each live message to them.
//!
//! Each watched job has one bounded broadcast ring. Routing a message is one read-locked map
//! lookup and one push into that ring, whatever the number of viewers, so the subscriber
//! drains Redis at Redis's pace even when viewers cannot keep up. Each viewer reads the ring
//! at its own pace; one that falls a whole ring behind skips ahead (`Lagged`) and heals the
//! records it skipped from PostgreSQL (see `session`). The hub never awaits a viewer and never
//! touches PostgreSQL.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytestring::ByteString;
use futures_util::Stream;

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
    Gap {
        reason: &'static str,
    },
}

/// Bytes of message text a ring keeps at most, whatever its capacity in messages: a burst of
/// 1 MiB `show running-config` records must not pin gigabytes for a slow viewer.
const RING_MAX_BYTES: usize = 16 * 1024 * 1024;

/// One watched job's ring: the last `capacity` deliveries (and at most `RING_MAX_BYTES`), shared by all its viewers, each
/// reading at its own position. It grows only as messages arrive (an idle job costs a few
/// bytes), and pushing never waits for a reader.
#[derive(Debug)]
struct JobRing {
    state: Mutex<RingState>,
    capacity: usize,
    /// Readers alive, to forget the ring with its last viewer.
    readers: AtomicU64,
    /// Gives each reader its slot in `RingState::wakers`.
    next_reader: AtomicU64,
}

#[derive(Debug, Default)]
struct RingState {
    items: VecDeque<Delivery>,
    /// Position of `items[0]` in the job's stream of deliveries.
    first: u64,
    /// Bytes of message text in `items`.
    bytes: usize,
    /// Messages without `seq` pushed so far (see `LiveMessage::unsequenced_total`).
    unsequenced: u64,
    /// Readers waiting for the next push.
    wakers: HashMap<u64, Waker>,
}

impl JobRing {
    fn push(&self, delivery: impl FnOnce(&mut RingState) -> Delivery) {
        let wakers: Vec<Waker> = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let item = delivery(&mut state);
            state.bytes += size_of(&item);
            state.items.push_back(item);
            while state.items.len() > self.capacity
                || (state.bytes > RING_MAX_BYTES && state.items.len() > 1)
            {
                if let Some(old) = state.items.pop_front() {
                    state.bytes -= size_of(&old);
                }
                state.first += 1;
            }
            state.wakers.drain().map(|(_, w)| w).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

fn size_of(delivery: &Delivery) -> usize {
    match delivery {
        Delivery::Record(message) => message.frame.len(),
        Delivery::Gap { .. } => 0,
    }
}

/// A reader fell this many deliveries behind the ring and skipped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

/// One viewer's position in one job's ring; a `Stream` of its deliveries.
#[derive(Debug)]
pub struct RingReader {
    ring: Arc<JobRing>,
    id: u64,
    /// Position of the next delivery to read.
    next: u64,
}

impl Stream for RingReader {
    type Item = Result<Delivery, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut state = this.ring.state.lock().unwrap_or_else(|e| e.into_inner());
        if this.next < state.first {
            let skipped = state.first - this.next;
            this.next = state.first;
            return Poll::Ready(Some(Err(Lagged(skipped))));
        }
        let index = (this.next - state.first) as usize;
        if let Some(item) = state.items.get(index) {
            this.next += 1;
            return Poll::Ready(Some(Ok(item.clone())));
        }
        state.wakers.insert(this.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.ring.readers.fetch_sub(1, Ordering::AcqRel);
        let mut state = self.ring.state.lock().unwrap_or_else(|e| e.into_inner());
        state.wakers.remove(&self.id);
    }
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
    /// The ring's reading end, positioned at the first message after the watch began.
    pub rx: RingReader,
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
        let mut jobs = self
            .hub
            .inner
            .jobs
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if jobs
            .get(&self.job_id)
            .is_some_and(|ring| ring.readers.load(Ordering::Acquire) == 0)
        {
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
        ViewerGuard {
            metrics: self.inner.metrics.clone(),
        }
    }

    /// Starts receiving `job_id`'s live messages (call before reading its history).
    pub fn watch(&self, job_id: i64) -> Watch {
        let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
        let ring = jobs
            .entry(job_id)
            .or_insert_with(|| {
                Arc::new(JobRing {
                    state: Mutex::default(),
                    capacity: self.inner.capacity,
                    readers: AtomicU64::new(0),
                    next_reader: AtomicU64::new(0),
                })
            })
            .clone();
        ring.readers.fetch_add(1, Ordering::AcqRel);
        let (next, unsequenced) = {
            let state = ring.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.first + state.items.len() as u64, state.unsequenced)
        };
        Watch {
            rx: RingReader {
                id: ring.next_reader.fetch_add(1, Ordering::Relaxed),
                ring,
                next,
            },
            guard: WatchGuard {
                hub: self.clone(),
                job_id,
            },
            unsequenced_at_start: unsequenced,
        }
    }

    /// Pushes a live message into its job's ring; returns whether anyone watches the job.
    pub fn route(&self, mut message: LiveMessage) -> bool {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = jobs.get(&message.job_id) else {
            return false;
        };
        ring.push(|state| {
            if message.seq.is_none() {
                state.unsequenced += 1;
            }
            message.unsequenced_total = state.unsequenced;
            Delivery::Record(Arc::new(message))
        });
        true
    }

    /// Tells every viewer of every job that the live stream may have a hole.
    pub fn broadcast_gap(&self, reason: &'static str) {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        for ring in jobs.values() {
            ring.push(|_| Delivery::Gap { reason });
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn message(job_id: i64, seq: Option<i64>) -> LiveMessage {
        LiveMessage {
            job_id,
            seq,
            level: None,
            device_id: None,
            frame: ByteString::from_static("{}"),
            received_at: Instant::now(),
            unsequenced_total: 0,
        }
    }

    fn seq_of(item: Option<Result<Delivery, Lagged>>) -> Option<i64> {
        match item {
            Some(Ok(Delivery::Record(m))) => m.seq,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_viewer_reads_its_jobs_messages_in_order_and_no_others() {
        let hub = Hub::new(16, Arc::new(Metrics::new()));
        let mut watch = hub.watch(1);
        assert!(!hub.route(message(2, Some(1))), "nobody watches job 2");
        for seq in 1..=3 {
            assert!(hub.route(message(1, Some(seq))));
        }
        for seq in 1..=3 {
            assert_eq!(seq_of(watch.rx.next().await), Some(seq));
        }
    }

    #[tokio::test]
    async fn a_reader_a_whole_ring_behind_skips_ahead_and_is_told_how_far() {
        let hub = Hub::new(16, Arc::new(Metrics::new()));
        let mut watch = hub.watch(1);
        for seq in 1..=20 {
            hub.route(message(1, Some(seq)));
        }
        assert!(matches!(watch.rx.next().await, Some(Err(Lagged(4)))));
        assert_eq!(seq_of(watch.rx.next().await), Some(5));
    }

    #[tokio::test]
    async fn a_ring_never_holds_more_than_its_byte_bound() {
        let hub = Hub::new(4096, Arc::new(Metrics::new()));
        let mut watch = hub.watch(1);
        let big = ByteString::from("x".repeat(1024 * 1024));
        for seq in 1..=40 {
            hub.route(LiveMessage {
                frame: big.clone(),
                ..message(1, Some(seq))
            });
        }
        // 40 MiB pushed, 16 MiB kept: the reader skips the 24 oldest.
        assert!(matches!(watch.rx.next().await, Some(Err(Lagged(24)))));
        assert_eq!(seq_of(watch.rx.next().await), Some(25));
    }

    #[tokio::test]
    async fn unsequenced_messages_are_counted_so_losses_can_be_reported() {
        let hub = Hub::new(16, Arc::new(Metrics::new()));
        hub.watch(1); // a first viewer that leaves again
        let mut watch = hub.watch(1);
        assert_eq!(watch.unsequenced_at_start, 0);
        hub.route(message(1, None));
        hub.route(message(1, Some(1)));
        hub.route(message(1, None));
        let mut seen = Vec::new();
        for _ in 0..3 {
            match watch.rx.next().await {
                Some(Ok(Delivery::Record(m))) => seen.push(m.unsequenced_total),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, [1, 1, 2]);
    }

    #[tokio::test]
    async fn a_job_is_forgotten_with_its_last_viewer() {
        let hub = Hub::new(16, Arc::new(Metrics::new()));
        let first = hub.watch(7);
        let second = hub.watch(7);
        assert_eq!(hub.watched_jobs(), 1);
        drop(first);
        assert_eq!(hub.watched_jobs(), 1);
        drop(second);
        assert_eq!(hub.watched_jobs(), 0);
    }
}
