//! Checks every route makes before doing its work: credentials (via `auth::Policy`), the
//! WebSocket `Origin`, and the viewer connection caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::http::header::{AUTHORIZATION, HOST, ORIGIN};
use actix_web::HttpRequest;

use super::AppState;
use crate::auth::{bearer_token, Claims, IngestAccess};
use crate::error::ApiError;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn header(req: &HttpRequest, name: actix_web::http::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A reader (WebSocket, SSE, history) must present a valid viewer JWT when a secret is set.
pub fn reader(req: &HttpRequest, state: &AppState) -> Result<Option<Claims>, ApiError> {
    let token = bearer_token(header(req, AUTHORIZATION), req.query_string());
    state
        .policy
        .check_reader(token.as_deref(), now())
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// An ingest request must present a service token when tokens (or a JWT secret) are set.
pub fn ingester(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = bearer_token(header(req, AUTHORIZATION), "");
    match state.policy.check_ingest(token.as_deref(), now()) {
        IngestAccess::Allowed => Ok(()),
        IngestAccess::Unauthorized(why) => Err(ApiError::Unauthorized(why)),
        IngestAccess::Forbidden(why) => Err(ApiError::Forbidden(why)),
    }
}

/// A browser's WebSocket must come from an allowed origin.
pub fn origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let origin = header(req, ORIGIN);
    if state.policy.origin_allowed(origin, header(req, HOST)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin {:?} may not open WebSockets here (see GATEWAY_ALLOWED_ORIGINS)",
            origin.unwrap_or("")
        )))
    }
}

/// Counts viewer connections, in all and per client address.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Open connections per client address (their sum is the total).
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_total: usize,
    max_per_ip: usize,
}

/// One counted connection; dropping it releases the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Connections,
    ip: IpAddr,
}

impl Connections {
    pub fn new(max_total: usize, max_per_ip: usize) -> Connections {
        Connections {
            open: Arc::default(),
            max_total,
            max_per_ip,
        }
    }

    /// Takes a slot for a new viewer connection, or says which cap it hits.
    pub fn acquire(&self, req: &HttpRequest) -> Result<ConnectionSlot, ApiError> {
        let ip = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        if total >= self.max_total {
            return Err(ApiError::TooManyConnections(format!(
                "the gateway holds its maximum of {} viewer connections",
                self.max_total
            )));
        }
        let mine = open.entry(ip).or_default();
        if *mine >= self.max_per_ip {
            return Err(ApiError::TooManyConnections(format!(
                "at most {} viewer connections per client address",
                self.max_per_ip
            )));
        }
        *mine += 1;
        Ok(ConnectionSlot {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
