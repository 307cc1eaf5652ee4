//! PostgreSQL: the connection pool, the embedded migrations, storing records with their dense
//! per-job `seq`, and reading a job's history by `seq`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel::upsert::excluded;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde_json::Value;

use crate::record::{Ack, Level, NewRecord, StoredRecord};
use crate::schema::{ingest_requests, job_streams, logs};

/// The migrations under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had in time: PostgreSQL is down or overloaded.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// A statement failed (the connection may have died mid-way).
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

/// Which of a job's records a reader wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only records at this level or above.
    pub min_level: Option<Level>,
    /// Only records of this device.
    pub device_id: Option<i64>,
}

impl Filter {
    /// The same test as the SQL `WHERE`, for live records.
    pub fn admits(&self, level: Option<Level>, device_id: Option<i64>) -> bool {
        let level_ok = match (self.min_level, level) {
            (None, _) => true,
            (Some(min), Some(level)) => level >= min,
            (Some(_), None) => false,
        };
        level_ok && self.device_id.is_none_or(|want| device_id == Some(want))
    }

    fn levels(&self) -> Option<Vec<&'static str>> {
        let min = self.min_level?;
        let all = [
            Level::Debug,
            Level::Info,
            Level::Warning,
            Level::Error,
            Level::Critical,
        ];
        Some(
            all.into_iter()
                .filter(|l| *l >= min)
                .map(Level::as_str)
                .collect(),
        )
    }
}

/// What the insert returns per row.
#[derive(QueryableByName)]
struct InsertedRow {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = logs)]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct LogRow {
    id: i64,
    timestamp: DateTime<Utc>,
    log_type: String,
    level: String,
    job_id: i64,
    device_id: Option<i64>,
    source: Option<String>,
    message: String,
    meta: Option<Value>,
    seq: i64,
}

impl From<LogRow> for StoredRecord {
    fn from(row: LogRow) -> Self {
        StoredRecord {
            id: row.id,
            seq: row.seq,
            job_id: row.job_id,
            device_id: row.device_id,
            timestamp: row.timestamp,
            level: Level::parse(&row.level).unwrap_or(Level::Info),
            log_type: row.log_type,
            source: row.source,
            message: row.message,
            meta: row.meta,
        }
    }
}

/// Applies the embedded migrations. Runs the synchronous migration harness on a blocking
/// thread (diesel's async harness panics on current-thread runtimes).
pub async fn run_migrations(database_url: &str) -> anyhow::Result<()> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .context("connecting to PostgreSQL to run migrations")?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
        Ok(())
    })
    .await
    .context("migration task panicked")?
}

/// Handle to PostgreSQL; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Bounded pool: waiting for a connection, creating one and recycling one all time out,
    /// so a dead PostgreSQL turns into a quick 503 instead of a hung request.
    pool: Pool<AsyncPgConnection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl Store {
    pub fn new(database_url: &str, max_size: usize, timeout: Duration) -> anyhow::Result<Store> {
        let mut config = ManagerConfig::default();
        // A closed connection is detected on recycle without a round trip per checkout.
        config.recycling_method = RecyclingMethod::Fast;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            database_url,
            config,
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .context("building the PostgreSQL pool")?;
        Ok(Store { pool })
    }

    async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// True when a trivial query succeeds.
    pub async fn ping(&self) -> bool {
        match self.conn().await {
            Ok(mut conn) => diesel::sql_query("SELECT 1")
                .execute(&mut conn)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Stores records like [`Store::insert`], once per idempotency key: the first request with
    /// a key stores its records and keeps their acks in the same transaction; a later one with
    /// the same key and body stores nothing and gets those acks back.
    pub async fn insert_idempotent(
        &self,
        records: Vec<NewRecord>,
        key: &Idempotency,
    ) -> Result<Insert, StoreError> {
        let mut conn = self.conn().await?;
        let records_ref = &records;
        let outcome = conn
            .transaction(async |conn| {
                let claimed: Option<String> = diesel::insert_into(ingest_requests::table)
                    .values((
                        ingest_requests::idempotency_key.eq(&key.key),
                        ingest_requests::body_sha256.eq(&key.body_sha256[..]),
                        ingest_requests::acks.eq(Value::Array(Vec::new())),
                    ))
                    .on_conflict_do_nothing()
                    .returning(ingest_requests::idempotency_key)
                    .get_result(conn)
                    .await
                    .optional()?;
                if claimed.is_none() {
                    // Taken, and committed (a concurrent first request is waited for).
                    let (body_sha256, acks): (Vec<u8>, Value) = ingest_requests::table
                        .select((ingest_requests::body_sha256, ingest_requests::acks))
                        .filter(ingest_requests::idempotency_key.eq(&key.key))
                        .first(conn)
                        .await?;
                    if body_sha256 != key.body_sha256 {
                        return Ok(Err(Insert::KeyReused));
                    }
                    let acks: Vec<Ack> = serde_json::from_value(acks).unwrap_or_default();
                    return Ok(Err(Insert::Replayed(acks)));
                }
                let acks = insert_in_transaction(conn, records_ref).await?;
                diesel::update(ingest_requests::table.find(&key.key))
                    .set(ingest_requests::acks.eq(serde_json::to_value(&acks).unwrap_or_default()))
                    .execute(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(Ok(acks))
            })
            .await?;
        // Ok: this request stored its records; Err: an earlier one with the key did.
        Ok(match outcome {
            Ok(acks) => Insert::Stored(stored_records(records, &acks)),
            Err(earlier) => earlier,
        })
    }

    /// Forgets idempotency keys older than `age`; returns how many.
    pub async fn purge_idempotency_keys(&self, age: Duration) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let cutoff =
            Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::days(1));
        Ok(
            diesel::delete(ingest_requests::table.filter(ingest_requests::created_at.lt(cutoff)))
                .execute(&mut conn)
                .await?,
        )
    }

    /// Stores records in one transaction: each job's counter is advanced once (jobs locked in
    /// ascending order, so concurrent multi-job batches cannot deadlock), each record gets the
    /// next `seq` of its job in request order, and rows go in with one INSERT from unnested
    /// arrays. Returns the stored records in request order.
    pub async fn insert(&self, records: Vec<NewRecord>) -> Result<Vec<StoredRecord>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let records_ref = &records;
        let acks = conn
            .transaction(async |conn| insert_in_transaction(conn, records_ref).await)
            .await?;
        Ok(stored_records(records, &acks))
    }

    /// The highest `seq` stored for a job (0 when it has none).
    pub async fn last_seq(&self, job_id: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let last: Option<i64> = job_streams::table
            .select(job_streams::last_seq)
            .filter(job_streams::job_id.eq(job_id))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(last.unwrap_or(0))
    }

    /// A job's records with `after_seq < seq < before_seq` that pass `filter`, in `seq` order,
    /// at most `limit` of them.
    pub async fn history(
        &self,
        job_id: i64,
        after_seq: i64,
        before_seq: Option<i64>,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.page(job_id, Some(after_seq), before_seq, filter, limit, false)
            .await
    }

    /// The `limit` records of a job just before `before_seq` that pass `filter`, ascending.
    pub async fn history_before(
        &self,
        job_id: i64,
        before_seq: i64,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let mut page = self
            .page(job_id, None, Some(before_seq), filter, limit, true)
            .await?;
        page.reverse();
        Ok(page)
    }

    /// Up to `limit` records with `after < seq < before` passing `filter`, from the lowest
    /// `seq` up (or from the highest down when `from_the_end`), by the `(job_id, seq)` index.
    async fn page(
        &self,
        job_id: i64,
        after: Option<i64>,
        before: Option<i64>,
        filter: &Filter,
        limit: i64,
        from_the_end: bool,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut query = logs::table
            .select(LogRow::as_select())
            .filter(logs::job_id.eq(job_id))
            .limit(limit)
            .into_boxed();
        query = if from_the_end {
            query.order(logs::seq.desc())
        } else {
            query.order(logs::seq.asc())
        };
        if let Some(after) = after {
            query = query.filter(logs::seq.gt(after));
        }
        if let Some(before) = before {
            query = query.filter(logs::seq.lt(before));
        }
        if let Some(levels) = filter.levels() {
            query = query.filter(logs::level.eq_any(levels));
        }
        if let Some(device) = filter.device_id {
            query = query.filter(logs::device_id.eq(device));
        }
        let rows: Vec<LogRow> = query.load(&mut conn).await?;
        Ok(rows.into_iter().map(StoredRecord::from).collect())
    }

    /// Number of stored rows (for tests and diagnostics).
    pub async fn count(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        Ok(logs::table.count().get_result(&mut conn).await?)
    }
}

/// An ingest request's idempotency key and the hash of its body.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub body_sha256: Vec<u8>,
}

/// What an idempotent insert did.
#[derive(Debug)]
pub enum Insert {
    /// First time: these records were stored.
    Stored(Vec<StoredRecord>),
    /// A retry: nothing stored; these are the first request's acks.
    Replayed(Vec<Ack>),
    /// The key was used before with another body; nothing stored.
    KeyReused,
}

fn count_per_job(records: &[NewRecord]) -> BTreeMap<i64, i64> {
    let mut per_job = BTreeMap::new();
    for r in records {
        *per_job.entry(r.job_id).or_default() += 1;
    }
    per_job
}

/// The body of [`Store::insert`]'s transaction.
async fn insert_in_transaction(
    conn: &mut AsyncPgConnection,
    records: &[NewRecord],
) -> Result<Vec<Ack>, diesel::result::Error> {
    let per_job = &count_per_job(records);
    let counters: Vec<(i64, i64)> = diesel::insert_into(job_streams::table)
        .values(
            per_job
                .iter()
                .map(|(job, n)| (job_streams::job_id.eq(*job), job_streams::last_seq.eq(*n)))
                .collect::<Vec<_>>(),
        )
        .on_conflict(job_streams::job_id)
        .do_update()
        .set(job_streams::last_seq.eq(job_streams::last_seq + excluded(job_streams::last_seq)))
        .returning((job_streams::job_id, job_streams::last_seq))
        .get_results(conn)
        .await?;
    // Next seq to hand out per job: first = last - count + 1.
    let mut next: BTreeMap<i64, i64> = counters
        .into_iter()
        .map(|(job, last)| (job, last - per_job[&job] + 1))
        .collect();
    let seqs: Vec<i64> = records
        .iter()
        .map(|r| {
            let slot = next.entry(r.job_id).or_default();
            let seq = *slot;
            *slot += 1;
            seq
        })
        .collect();
    // One statement whatever the batch size: each column travels as one array parameter
    // (no 32,767-parameter limit, one parse and plan), unnested into rows in request order.
    let returned: Vec<InsertedRow> = diesel::sql_query(
        "INSERT INTO logs (timestamp, log_type, level, job_id, device_id, source, message, meta, seq) \
         SELECT * FROM unnest($1::timestamptz[], $2::varchar[], $3::varchar[], $4::int8[], \
                              $5::int8[], $6::varchar[], $7::text[], $8::jsonb[], $9::int8[]) \
         RETURNING job_id, seq, id",
    )
    .bind::<Array<Timestamptz>, _>(records.iter().map(|r| r.timestamp).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(records.iter().map(|r| r.log_type.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(records.iter().map(|r| r.level.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(records.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<BigInt>>, _>(records.iter().map(|r| r.device_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(records.iter().map(|r| r.source.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(records.iter().map(|r| r.message.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Jsonb>>, _>(records.iter().map(|r| r.meta.as_ref()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(&seqs)
    .load(conn)
    .await?;
    let ids_by_key: std::collections::HashMap<(i64, i64), i64> = returned
        .into_iter()
        .map(|row| ((row.job_id, row.seq), row.id))
        .collect();
    let ids: Vec<i64> = records
        .iter()
        .zip(&seqs)
        .map(|(r, seq)| ids_by_key.get(&(r.job_id, *seq)).copied().unwrap_or(0))
        .collect();
    Ok(records
        .iter()
        .zip(seqs)
        .zip(ids)
        .map(|((r, seq), id)| Ack {
            job_id: r.job_id,
            id,
            seq,
        })
        .collect())
}

/// The stored records: each validated record, moved (not copied) next to its `id` and `seq`.
fn stored_records(records: Vec<NewRecord>, acks: &[Ack]) -> Vec<StoredRecord> {
    records
        .into_iter()
        .zip(acks)
        .map(|(r, ack)| StoredRecord {
            id: ack.id,
            seq: ack.seq,
            job_id: r.job_id,
            device_id: r.device_id,
            timestamp: r.timestamp,
            level: r.level,
            log_type: r.log_type,
            source: r.source,
            message: r.message,
            meta: r.meta,
        })
        .collect()
}
