//! Errors at the HTTP edge: each variant is a status code and a JSON body
//! `{"error": "...", "problems": [...]}` that names the problem.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::record::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request cannot be read (malformed JSON, bad query parameter, empty body).
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many connections (from this client, or in all).
    #[error("{0}")]
    TooManyConnections(String),
    /// Some records are invalid; nothing was stored.
    #[error("{} invalid field(s); nothing was stored", .0.len())]
    InvalidRecords(Vec<Problem>),
    /// Over a size cap.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request conflicts with an earlier one (an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// A content type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// PostgreSQL could not be reached; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected fault (logged with its context).
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InvalidRecords(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            log::error!("internal error: {e:#}");
        }
        let mut body = json!({ "error": self.to_string() });
        if let ApiError::InvalidRecords(problems) = self {
            body["problems"] = json!(problems);
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(
            self,
            ApiError::Unavailable(_) | ApiError::TooManyConnections(_)
        ) {
            response.insert_header(("Retry-After", "1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(body)
    }
}
