//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready to serve: the Redis subscriber is subscribed and PostgreSQL answers.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let redis = state.metrics.subscriber_up();
    let postgres = tokio::time::timeout(Duration::from_secs(2), state.store.ping())
        .await
        .unwrap_or(false);
    let body = json!({ "redis_subscriber": redis, "postgres": postgres });
    if redis && postgres {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}
