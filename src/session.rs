//! One viewer's feed of one job: stored history first, then live records, in `seq` order with
//! no gap and no duplicate. Holes in the live stream (a reconnect of the Redis subscriber, a
//! viewer that fell a whole job ring behind, ingests that published out of order) are filled
//! from PostgreSQL.
//! Transport-neutral: the WebSocket and SSE routes each provide a [`FrameSink`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde_json::json;
use tokio_stream::{StreamExt, StreamMap};

use crate::hub::{Delivery, Hub, Lagged, LiveMessage, RingReader, ViewerGuard, WatchGuard};
use crate::metrics::Metrics;
use crate::record::control_frame;
use crate::store::{Filter, Store, StoreError};

/// Records per history query.
const PAGE: i64 = 2_000;

/// Why a viewer's feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the viewer went away")]
    Closed,
    #[error("the viewer stopped reading")]
    TooSlow,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the viewer kept falling behind")]
    Hopeless,
}

/// Where a viewer's frames go (a WebSocket session, an SSE body).
pub trait FrameSink {
    /// Sends one record's JSON (`seq` is known for records the gateway stored).
    fn send_record(
        &mut self,
        json: ByteString,
        seq: Option<i64>,
    ) -> impl Future<Output = Result<(), FeedError>>;

    /// Sends a control frame (a JSON object with a top-level `control` key).
    fn send_control(&mut self, json: String) -> impl Future<Output = Result<(), FeedError>>;
}

/// Where a feed starts, from the viewer's query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    /// Resume after this `seq` (wins over `tail`).
    pub after_seq: Option<i64>,
    /// Start with the last N stored records.
    pub tail: Option<i64>,
}

/// The state of one viewer's feed of one job.
#[derive(Debug, Clone)]
pub struct JobFeed {
    pub job_id: i64,
    pub filter: Filter,
    /// Every record with `seq <= last_seq` has been sent (or filtered out): anything at or
    /// below it arriving live is a duplicate.
    pub last_seq: i64,
    /// The job ring's count of messages without `seq` as of the last one this viewer saw: a
    /// jump tells how many it lost to falling behind.
    pub unsequenced_seen: u64,
    store: Store,
    metrics: Arc<Metrics>,
}

impl JobFeed {
    /// Sends the job's stored history from `start`, then a `history_end` control frame. The
    /// viewer must already be watching the job in the hub, so that nothing committed after the
    /// read is missed: it arrives live and is deduplicated by `seq`.
    pub async fn start(
        job_id: i64,
        filter: Filter,
        start: Start,
        store: Store,
        metrics: Arc<Metrics>,
        sink: &mut impl FrameSink,
    ) -> Result<JobFeed, FeedError> {
        let mut feed = JobFeed {
            job_id,
            filter,
            last_seq: start.after_seq.unwrap_or(0).max(0),
            unsequenced_seen: 0,
            store,
            metrics,
        };
        match feed.store.last_seq(job_id).await {
            Ok(stored) => {
                if start.after_seq.is_none() {
                    feed.last_seq = start.tail.map_or(0, |tail| (stored - tail.max(0)).max(0));
                }
                match feed.fill(stored + 1, sink).await {
                    Ok(_) => {}
                    Err(FeedError::Store(e)) => feed.report_unhealed(stored + 1, &e, sink).await?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                log::warn!("history of job {job_id} unavailable: {e}");
                let frame =
                    control_frame("gap", job_id, &[("reason", json!("history_unavailable"))]);
                sink.send_control(frame).await?;
            }
        }
        let end = control_frame("history_end", job_id, &[("last_seq", json!(feed.last_seq))]);
        sink.send_control(end).await?;
        Ok(feed)
    }

    /// Sends stored records with `last_seq < seq < before`; afterwards `last_seq >= before - 1`.
    /// Returns how many records it sent.
    async fn fill(&mut self, before: i64, sink: &mut impl FrameSink) -> Result<u64, FeedError> {
        let mut sent = 0;
        while self.last_seq + 1 < before {
            let page = self
                .store
                .history(self.job_id, self.last_seq, Some(before), &self.filter, PAGE)
                .await?;
            let complete = (page.len() as i64) < PAGE;
            for record in page {
                sink.send_record(record.to_json().into(), Some(record.seq))
                    .await?;
                self.last_seq = record.seq;
                sent += 1;
            }
            if complete {
                self.last_seq = self.last_seq.max(before - 1);
            }
        }
        Ok(sent)
    }

    /// Tells the viewer that records it should have had could not be read, and moves on.
    async fn report_unhealed(
        &mut self,
        before: i64,
        error: &StoreError,
        sink: &mut impl FrameSink,
    ) -> Result<(), FeedError> {
        log::warn!(
            "job {}: could not heal seq {}..{}: {error}",
            self.job_id,
            self.last_seq + 1,
            before - 1
        );
        let frame = control_frame(
            "gap",
            self.job_id,
            &[
                ("reason", json!("database_unavailable")),
                ("from_seq", json!(self.last_seq + 1)),
                ("to_seq", json!(before - 1)),
            ],
        );
        self.last_seq = self.last_seq.max(before - 1);
        sink.send_control(frame).await
    }

    /// Handles one live record: drops a duplicate, fills a hole before it from PostgreSQL,
    /// applies the viewer's filter, and sends it.
    pub async fn on_live(
        &mut self,
        message: &LiveMessage,
        sink: &mut impl FrameSink,
    ) -> Result<(), FeedError> {
        match message.seq {
            Some(seq) if seq <= self.last_seq => return Ok(()),
            Some(seq) => {
                if seq > self.last_seq + 1 {
                    // Boxed, as every path here that reads PostgreSQL: inline, its futures
                    // would make every viewer's task several KB larger.
                    match Box::pin(self.fill(seq, sink)).await {
                        Ok(healed) => Metrics::inc(&self.metrics.records_healed, healed),
                        Err(FeedError::Store(e)) => self.report_unhealed(seq, &e, sink).await?,
                        Err(e) => return Err(e),
                    }
                }
                self.last_seq = seq;
            }
            None => {}
        }
        if self.filter.admits(message.level, message.device_id) {
            sink.send_record(message.frame.clone(), message.seq).await?;
        }
        Ok(())
    }

    /// Catches up with everything stored so far (after a possible hole in the live stream).
    pub async fn heal(&mut self, sink: &mut impl FrameSink) -> Result<(), FeedError> {
        let stored = match self.store.last_seq(self.job_id).await {
            Ok(stored) => stored,
            Err(e) => {
                log::warn!("job {}: cannot heal: {e}", self.job_id);
                return Ok(());
            }
        };
        match self.fill(stored + 1, sink).await {
            Ok(healed) => {
                Metrics::inc(&self.metrics.records_healed, healed);
                Ok(())
            }
            Err(FeedError::Store(e)) => self.report_unhealed(stored + 1, &e, sink).await,
            Err(e) => Err(e),
        }
    }
}

/// What a viewer's live stream yields: a job's next delivery, or how many it skipped.
pub type LiveItem = (i64, Result<Delivery, Lagged>);

/// All the jobs one viewer (one connection) watches, and its place in the hub.
pub struct Feeds {
    /// The live rings of the watched jobs (declared before `watches`, so that receivers are
    /// dropped before the guards that forget unwatched rings).
    streams: StreamMap<i64, RingReader>,
    watches: HashMap<i64, WatchGuard>,
    feeds: HashMap<i64, JobFeed>,
    hub: Hub,
    _connected: ViewerGuard,
    store: Store,
    metrics: Arc<Metrics>,
    /// Since when the viewer has kept skipping ahead in its rings, and when it last did.
    lagging_since: Option<Instant>,
    last_lag: Option<Instant>,
    /// How long a viewer may keep lagging before it is given up on.
    hopeless_after: Duration,
    /// Live records handled, to sample publish-to-send latency.
    handled: u64,
}

impl Feeds {
    pub fn new(hub: Hub, store: Store, metrics: Arc<Metrics>, hopeless_after: Duration) -> Feeds {
        Feeds {
            streams: StreamMap::new(),
            watches: HashMap::new(),
            feeds: HashMap::new(),
            _connected: hub.connect(),
            hub,
            store,
            metrics,
            lagging_since: None,
            last_lag: None,
            hopeless_after,
            handled: 0,
        }
    }

    /// Starts watching a job: live first (its ring in the hub), then history, then
    /// `history_end`; anything committed meanwhile arrives live and is deduplicated by `seq`.
    pub async fn subscribe(
        &mut self,
        job_id: i64,
        filter: Filter,
        start: Start,
        sink: &mut impl FrameSink,
    ) -> Result<(), FeedError> {
        self.unsubscribe(job_id);
        let watch = self.hub.watch(job_id);
        self.streams.insert(job_id, watch.rx);
        self.watches.insert(job_id, watch.guard);
        // Boxed, as every path here that reads PostgreSQL (see `on_live`).
        let mut feed = Box::pin(JobFeed::start(
            job_id,
            filter,
            start,
            self.store.clone(),
            self.metrics.clone(),
            sink,
        ))
        .await?;
        feed.unsequenced_seen = watch.unsequenced_at_start;
        self.feeds.insert(job_id, feed);
        Ok(())
    }

    pub fn unsubscribe(&mut self, job_id: i64) -> bool {
        self.streams.remove(&job_id);
        self.watches.remove(&job_id);
        self.feeds.remove(&job_id).is_some()
    }

    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The next live item of any watched job (pending forever while none is watched).
    pub async fn next_live(&mut self) -> LiveItem {
        match self.streams.next().await {
            Some(item) => item,
            None => std::future::pending().await,
        }
    }

    /// Handles one live item: a record, a gap to heal, or a skip ahead (the viewer fell a
    /// whole ring behind) to heal from PostgreSQL.
    pub async fn on_live_item(
        &mut self,
        item: LiveItem,
        sink: &mut impl FrameSink,
    ) -> Result<(), FeedError> {
        let (job_id, item) = item;
        let Some(feed) = self.feeds.get_mut(&job_id) else {
            return Ok(());
        };
        match item {
            Ok(Delivery::Record(message)) => {
                let expected = feed.unsequenced_seen + u64::from(message.seq.is_none());
                if message.unsequenced_total > expected {
                    let lost = message.unsequenced_total - expected;
                    sink.send_control(control_frame("dropped", job_id, &[("count", json!(lost))]))
                        .await?;
                }
                feed.unsequenced_seen = message.unsequenced_total;
                feed.on_live(&message, sink).await?;
                self.handled += 1;
                if self.handled % 64 == 1 {
                    Metrics::observe(
                        &self.metrics.publish_to_send_seconds,
                        message.received_at.elapsed(),
                    );
                }
            }
            Ok(Delivery::Gap { reason }) => {
                Box::pin(feed.heal(sink)).await?;
                let frame = control_frame(
                    "gap",
                    job_id,
                    &[
                        ("reason", json!(reason)),
                        ("healed_to_seq", json!(feed.last_seq)),
                    ],
                );
                sink.send_control(frame).await?;
            }
            Err(Lagged(_)) => {
                self.metrics.viewers_lagged.inc();
                let now = Instant::now();
                match (self.lagging_since, self.last_lag) {
                    (Some(since), Some(last)) if last.elapsed() < self.hopeless_after => {
                        if since.elapsed() > self.hopeless_after {
                            return Err(FeedError::Hopeless);
                        }
                    }
                    _ => self.lagging_since = Some(now),
                }
                self.last_lag = Some(now);
                Box::pin(feed.heal(sink)).await?;
            }
        }
        Ok(())
    }
}
