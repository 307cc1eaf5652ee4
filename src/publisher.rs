//! Publishing stored records to Redis: one pipelined round trip of `PUBLISH {prefix}:{job_id}`
//! per ingest request, on a shared auto-reconnecting connection. A failed publish never fails
//! the ingest: PostgreSQL is the record, and viewers heal from it.

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
}

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
        })
    }

    /// The channel of a job.
    pub fn channel(&self, job_id: i64) -> String {
        format!("{}:{job_id}", self.prefix)
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
