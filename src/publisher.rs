//! Publishing stored records to Redis: one pipelined round trip of `PUBLISH {prefix}:{job_id}`
//! per ingest request, on a shared auto-reconnecting connection. A failed publish never fails
//! the ingest: PostgreSQL is the record, and viewers heal from it. Frames whose PUBLISH failed
//! are kept (bounded) and published again by `run_retries` once Redis answers, so that even the
//! last record of a quiet job reaches the viewers of every gateway instance.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Cloneable publisher; all clones share one multiplexed connection.
#[derive(Clone)]
pub struct Publisher {
    /// Reconnects by itself; created lazily so a gateway can start while Redis is down.
    connection: ConnectionManager,
    /// Channels are `{prefix}:{job_id}`.
    prefix: String,
    /// Bound on one pipelined round trip.
    timeout: Duration,
    /// `(job_id, json)` frames whose PUBLISH failed, oldest first, at most `MAX_PENDING`.
    pending: Arc<Mutex<VecDeque<(i64, String)>>>,
}

/// Frames kept for a later PUBLISH; past this the oldest are forgotten (viewers still heal
/// them from PostgreSQL at the job's next record or the next subscriber reconnect).
const MAX_PENDING: usize = 100_000;

impl Publisher {
    pub fn new(redis_url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Publisher> {
        let client = redis::Client::open(redis_url).context("parsing REDIS_URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .context("creating the Redis publisher")?;
        Ok(Publisher {
            connection,
            prefix: prefix.to_string(),
            timeout,
            pending: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    /// The channel of a job.
    pub fn channel(&self, job_id: i64) -> String {
        format!("{}:{job_id}", self.prefix)
    }

    /// Publishes stored records' frames; on failure keeps them for `run_retries`.
    pub async fn publish_or_keep(&self, frames: Vec<(i64, String)>) -> anyhow::Result<()> {
        let result = self
            .publish(frames.iter().map(|(job, json)| (*job, json.as_str())))
            .await;
        if result.is_err() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.extend(frames);
            let excess = pending.len().saturating_sub(MAX_PENDING);
            pending.drain(..excess);
        }
        result
    }

    /// Frames waiting for a retry.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Publishes kept frames again every `interval` until `shutdown`.
    pub async fn run_retries(
        self,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let batch: Vec<(i64, String)> = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let n = pending.len().min(1_000);
                pending.drain(..n).collect()
            };
            if batch.is_empty() {
                continue;
            }
            let count = batch.len();
            if self.publish_or_keep(batch).await.is_ok() {
                log::info!("published {count} frames kept from failed PUBLISHes");
            }
        }
    }

    /// Publishes `(job_id, json)` pairs in one pipelined round trip.
    pub async fn publish<'a>(
        &self,
        messages: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for (job_id, json) in messages {
            pipe.cmd("PUBLISH")
                .arg(self.channel(job_id))
                .arg(json)
                .ignore();
        }
        let mut conn = self.connection.clone();
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
            .await
            .context("PUBLISH timed out")?
            .context("PUBLISH failed")
    }
}
