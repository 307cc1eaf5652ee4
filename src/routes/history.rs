//! A job's stored history: `GET /api/v1/jobs/{job_id}/logs` (JSON pages by `seq`, with a
//! cursor) and `GET /api/v1/jobs/{job_id}/logs.txt` (the whole job as a text download).

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;

use super::params::{job_id, StreamQuery};
use super::{guard, AppState};
use crate::error::ApiError;
use crate::record::{format_timestamp, StoredRecord};
use crate::store::{Filter, Store, StoreError};

/// Records per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: i64 = 500;
const MAX_LIMIT: i64 = 5_000;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<i64>,
    level: Option<String>,
    device_id: Option<i64>,
}

fn unavailable(e: StoreError) -> ApiError {
    log::warn!("history read failed: {e}");
    ApiError::Unavailable("PostgreSQL is unavailable, retry later".into())
}

fn filter_of(level: Option<String>, device_id: Option<i64>) -> Result<Filter, ApiError> {
    let query = StreamQuery {
        level,
        device_id,
        ..Default::default()
    };
    Ok(query.parse()?.1)
}

/// One page: `{"job_id","records":[…],"next_after_seq","last_seq"}`, records ascending by
/// `seq`. `next_after_seq` is the cursor for the next page (null on the last page).
pub async fn logs(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    guard::reader(&req, &state)?;
    let job_id = job_id(&path)?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    if query.after_seq.is_some_and(|s| s < 0) || query.before_seq.is_some_and(|s| s < 1) {
        return Err(ApiError::BadRequest(
            "after_seq must be 0 or more, before_seq 1 or more".into(),
        ));
    }
    let filter = filter_of(query.level, query.device_id)?;
    let store = &state.store;
    let records = match (query.after_seq, query.before_seq) {
        (None, Some(before)) => store.history_before(job_id, before, &filter, limit).await,
        (after, before) => {
            store
                .history(job_id, after.unwrap_or(0), before, &filter, limit)
                .await
        }
    }
    .map_err(unavailable)?;
    let last_seq = store.last_seq(job_id).await.map_err(unavailable)?;
    let next = match records.last() {
        Some(r) if records.len() as i64 == limit && query.before_seq.is_none() => r.seq.to_string(),
        _ => "null".to_string(),
    };
    // Each record is serialised once, straight into the page.
    let mut body = format!("{{\"job_id\":{job_id},\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&record.to_json());
    }
    body.push_str(&format!(
        "],\"next_after_seq\":{next},\"last_seq\":{last_seq}}}"
    ));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// One line of the text download.
fn text_line(r: &StoredRecord) -> String {
    let device = r
        .device_id
        .map(|d| format!(" [device {d}]"))
        .unwrap_or_default();
    let source = r
        .source
        .as_deref()
        .map(|s| format!(" {s}:"))
        .unwrap_or_default();
    format!(
        "{} {:<8}{device}{source} {}\n",
        format_timestamp(&r.timestamp),
        r.level.as_str().to_uppercase(),
        r.message
    )
}

/// The whole job as text, streamed page by page.
pub async fn download(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    guard::reader(&req, &state)?;
    let job_id = job_id(&path)?;
    let query = query.into_inner();
    let filter = filter_of(query.level, query.device_id)?;
    let store: Store = state.store.clone();
    // Fail before the 200 if PostgreSQL is down.
    store.last_seq(job_id).await.map_err(unavailable)?;
    let pages = futures_util::stream::unfold(Some(0i64), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.history(job_id, after, None, &filter, MAX_LIMIT).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as i64 == MAX_LIMIT).then(|| page[page.len() - 1].seq);
                    let text: String = page.iter().map(text_line).collect();
                    Some((Ok::<_, actix_web::Error>(Bytes::from(text)), next))
                }
                Err(e) => {
                    log::warn!("download of job {job_id} cut short: {e}");
                    let err = actix_web::error::ErrorServiceUnavailable("PostgreSQL unavailable");
                    Some((Err(err), None))
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"job-{job_id}.log\""),
        ))
        .streaming(pages))
}
