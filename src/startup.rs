//! Wires the gateway together from `Settings`: migrations, pool, publisher, hub, the one
//! Redis subscriber, and the HTTP server on a bound listener (port 0 works, for tests).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, Request};
use actix_service::{fn_factory, fn_service, map_config, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server, ServerHandle, ServiceResponse};
use actix_web::{web, App};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::routes::{self, AppState};
use crate::store::{self, Store};
use crate::subscriber::{self, SubscriberConfig};

/// A built, bound, not yet running gateway.
pub struct Application {
    port: u16,
    server: Server,
    /// Cancels the subscriber and closes viewers.
    shutdown: CancellationToken,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.check_exposure()?;
        let policy = settings.policy();
        if policy.jwt_secret.is_none() {
            log::warn!(
                "no JWT secret set: reads need no token (allowed on {} only because it is \
                 loopback or --insecure-no-auth was given)",
                settings.bind
            );
        } else if policy.ingest_tokens.is_empty() {
            log::warn!("a JWT secret is set but no ingest tokens: ingest refuses every request");
        }
        let connections = routes::guard::Connections::new(
            settings.max_connections,
            settings.max_connections_per_ip,
        );
        apply_migrations(&settings).await?;
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(settings.viewer_queue, metrics.clone());
        let store = Store::new(
            &settings.database_url,
            settings.db_pool_size,
            settings.db_timeout(),
        )?;
        let publisher = Publisher::new(
            &settings.redis_url,
            &settings.channel_prefix,
            Duration::from_secs(2),
        )?;
        let shutdown = CancellationToken::new();

        let subscriber = tokio::spawn(subscriber::run(
            SubscriberConfig {
                redis_url: settings.redis_url.clone(),
                prefix: settings.channel_prefix.clone(),
                legacy_channels: settings.legacy_channels(),
                ping_interval: Duration::from_millis(settings.redis_ping_interval_ms),
                ping_timeout: Duration::from_millis(settings.redis_ping_timeout_ms),
            },
            hub.clone(),
            shutdown.clone(),
        ));

        actix_web::rt::spawn(
            publisher
                .clone()
                .run_retries(Duration::from_millis(500), shutdown.clone()),
        );
        actix_web::rt::spawn(purge_idempotency_keys(store.clone(), shutdown.clone()));

        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let static_dir = static_dir(&settings.static_dir);
        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let handshake_timeout = Duration::from_millis(settings.handshake_timeout_ms);
        let state = web::Data::new(AppState {
            policy,
            connections,
            settings,
            store,
            publisher,
            hub,
            metrics,
            shutdown: shutdown.clone(),
        });
        let local_addr = listener.local_addr()?;
        // actix-web's `HttpServer`, plus a hook for upgrade requests: WebSocket viewers take
        // their socket over from the HTTP dispatcher once accepted (see `upgrade`).
        let server = actix_server::Server::build()
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(10)
            .listen("session-log-gateway", listener, move || {
                let (upgrade_state, upgrade_dir) = (state.clone(), static_dir.clone());
                HttpService::build()
                    .client_request_timeout(handshake_timeout)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(local_addr)
                    // Frames go out as soon as they are written: without TCP_NODELAY, Nagle's
                    // algorithm holds small frames back for up to 40 ms behind delayed ACKs.
                    .tcp_nodelay(true)
                    .upgrade(fn_factory(move || {
                        let service =
                            app(upgrade_state.clone(), upgrade_dir.clone()).new_service(());
                        async move {
                            let app = std::rc::Rc::new(service.await?);
                            Ok::<_, ()>(fn_service(move |request| {
                                crate::upgrade::serve(app.clone(), request)
                            }))
                        }
                    }))
                    .finish(app(state.clone(), static_dir.clone()))
                    .tcp()
            })?
            .run();
        Ok(Application {
            port,
            server,
            shutdown,
            subscriber,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets tests stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The cancellation token that stops the subscriber and closes viewers.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the server stops (from `stop()` or a signal when `handle_signals`).
    pub async fn run_until_stopped(self, handle_signals: bool) -> std::io::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        if handle_signals {
            tokio::spawn(async move {
                wait_for_signal().await;
                log::info!("shutting down: closing viewers, finishing requests");
                shutdown.cancel();
                handle.stop(true).await;
            });
        }
        let result = self.server.await;
        self.shutdown.cancel();
        let _ = self.subscriber.await;
        result
    }
}

/// Applies the migrations, waiting up to `--startup-wait-secs` for PostgreSQL to come up (a
/// gateway started alongside its database should not lose the race).
async fn apply_migrations(settings: &Settings) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(settings.startup_wait_secs);
    loop {
        match store::run_migrations(&settings.database_url).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                log::warn!("PostgreSQL not ready ({e:#}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("applying database migrations")),
        }
    }
}

/// The app, as actix-http serves it: every route, behind the access log. (Its `AppConfig`,
/// host and address for URL generation, is the default: nothing here generates URLs.)
fn app(
    state: web::Data<AppState>,
    static_dir: PathBuf,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
    InitError = (),
> {
    let app = App::new()
        .wrap(request_logger())
        .app_data(state)
        .configure(|cfg| routes::configure(cfg, static_dir));
    map_config(app, |()| AppConfig::default())
}

/// Access log with `access_token` values redacted from query strings.
fn request_logger() -> actix_web::middleware::Logger {
    actix_web::middleware::Logger::new("%{r}xi %s %b %Dms").custom_request_replace("r", |req| {
        let query = req.query_string();
        if query.is_empty() {
            format!("{} {}", req.method(), req.path())
        } else {
            let query = crate::auth::redact_query(query);
            format!("{} {}?{query}", req.method(), req.path())
        }
    })
}

/// How long an Idempotency-Key is remembered.
const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Forgets old idempotency keys every ten minutes.
async fn purge_idempotency_keys(store: Store, shutdown: CancellationToken) {
    loop {
        match store.purge_idempotency_keys(IDEMPOTENCY_KEY_TTL).await {
            Ok(0) => {}
            Ok(n) => log::info!("forgot {n} idempotency keys older than a day"),
            Err(e) => log::debug!("purging idempotency keys: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The viewer's directory: as configured when it exists, else the one in the source tree.
fn static_dir(configured: &str) -> PathBuf {
    let path = PathBuf::from(configured);
    if path.is_dir() {
        path
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static")
    }
}
