//! `POST /api/v1/logs`: validate every record (all or nothing), store them with their per-job
//! `seq`, then publish them to Redis in one pipelined round trip.

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use chrono::Utc;
use futures_util::StreamExt;

use super::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::record::{self, Ack, BodyError, Limits};
use crate::store::{Idempotency, Insert, StoreError};

/// How the body is framed, from its content type.
fn body_kind(req: &HttpRequest) -> Result<bool, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(false),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(true),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "content type {content_type:?} is not accepted: send application/json (one record or an array) or application/x-ndjson"
        ))),
    }
}

/// Reads the body, refusing it as soon as it passes the cap.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<BytesMut, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body is over the limit of {max} bytes"));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8192).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the body failed: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `Idempotency-Key` header, if any, with the body's hash.
fn idempotency_key(req: &HttpRequest, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    use sha2::Digest;
    Ok(Some(Idempotency {
        key: key.to_string(),
        body_sha256: sha2::Sha256::digest(body).to_vec(),
    }))
}

pub async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let began = std::time::Instant::now();
    super::guard::ingester(&req, &state)?;
    let ndjson = body_kind(&req)?;
    let body = read_body(&req, payload, settings.max_body_bytes).await?;
    let values = record::parse_body(&body, ndjson, settings.max_records_per_request).map_err(
        |e| match e {
            BodyError::Empty => ApiError::BadRequest("the body holds no record".into()),
            BodyError::Malformed(p) if p.field == "record" => ApiError::InvalidRecords(vec![p]),
            BodyError::Malformed(p) => ApiError::BadRequest(format!("{} {}", p.field, p.reason)),
            BodyError::TooManyRecords { count, max } => ApiError::PayloadTooLarge(format!(
                "{count} records in one request is over the limit of {max}"
            )),
        },
    )?;
    let limits = Limits {
        max_message_bytes: settings.max_message_bytes,
        max_meta_depth: settings.max_meta_depth,
    };
    let records =
        record::validate_all(values, &limits, Utc::now()).map_err(ApiError::InvalidRecords)?;

    let idempotency = idempotency_key(&req, &body)?;
    let count = records.len();
    let outcome = match &idempotency {
        Some(key) => state.store.insert_idempotent(records, key).await,
        None => state.store.insert(records).await.map(Insert::Stored),
    }
    .map_err(|e| {
        log::warn!("ingest of {count} records failed: {e}");
        ApiError::Unavailable(match e {
            StoreError::Unavailable(_) => {
                "PostgreSQL is unavailable; nothing was stored, retry later".into()
            }
            StoreError::Query(_) => {
                "storing the records failed; nothing was stored, retry later".into()
            }
        })
    })?;
    let stored =
        match outcome {
            Insert::Stored(stored) => stored,
            Insert::Replayed(acks) => {
                return Ok(HttpResponse::Created()
                    .insert_header(("Idempotent-Replayed", "true"))
                    .json(Created::of(&acks)));
            }
            Insert::KeyReused => return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different body; nothing was stored"
                    .into(),
            )),
        };
    Metrics::inc(&state.metrics.records_ingested, stored.len() as u64);

    let frames: Vec<(i64, String)> = stored.iter().map(|r| (r.job_id, r.to_json())).collect();
    if let Err(e) = state.publisher.publish_or_keep(frames).await {
        // Stored is what counts: the frames are published again when Redis answers, and
        // viewers heal from PostgreSQL meanwhile.
        Metrics::inc(&state.metrics.publish_failures, stored.len() as u64);
        log::warn!(
            "publishing {} stored records failed (kept for retry): {e:#}",
            stored.len()
        );
    }

    let acks: Vec<Ack> = stored.iter().map(|r| r.ack()).collect();
    Metrics::observe(&state.metrics.ingest_seconds, began.elapsed());
    Ok(HttpResponse::Created().json(Created::of(&acks)))
}

/// The 201 body, serialised straight from the acks (a `json!` tree would allocate a map per
/// record).
#[derive(serde::Serialize)]
struct Created<'a> {
    count: usize,
    records: &'a [Ack],
}

impl Created<'_> {
    fn of(acks: &[Ack]) -> Created<'_> {
        Created {
            count: acks.len(),
            records: acks,
        }
    }
}
