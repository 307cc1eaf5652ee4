//! The HTTP surface. Routes are thin: they parse the request, call `store`, `publisher` or
//! `session`, and map the outcome to a response; they hold no state of their own.

pub mod guard;
pub mod health;
pub mod history;
pub mod ingest;
pub mod params;
pub mod sse;
pub mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::web;
use tokio_util::sync::CancellationToken;

use crate::auth::Policy;
use crate::config::Settings;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::store::Store;

/// What every handler may use; built once by `startup`.
pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    pub publisher: Publisher,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Who may read and ingest.
    pub policy: Policy,
    /// Viewer connection caps.
    pub connections: guard::Connections,
    /// Cancelled on shutdown: viewers close with 1001.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// How long a viewer may keep the gateway waiting (blocked writes, lagging) before it is
    /// given up on.
    pub fn slow_viewer(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.slow_viewer_secs)
    }

    /// A new viewer, watching nothing yet.
    pub fn new_viewer(&self) -> crate::session::Feeds {
        crate::session::Feeds::new(
            self.hub.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.slow_viewer(),
        )
    }
}

/// Registers every route; the static viewer last, as the fallback for `/`.
pub fn configure(cfg: &mut web::ServiceConfig, static_dir: PathBuf) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/logs", web::post().to(ingest::ingest))
        .route("/ws/jobs/{job_id}", web::get().to(ws::job_socket))
        .route("/ws", web::get().to(ws::multi_socket))
        .route("/api/v1/jobs/{job_id}/logs", web::get().to(history::logs))
        .route(
            "/api/v1/jobs/{job_id}/logs.txt",
            web::get().to(history::download),
        )
        .route(
            "/api/v1/jobs/{job_id}/stream",
            web::get().to(sse::job_stream),
        )
        .route("/logs/stream", web::get().to(sse::netraven_stream))
        .route("/api/logs/stream", web::get().to(sse::netraven_stream))
        .service(actix_files::Files::new("/", static_dir).index_file("index.html"));
}
