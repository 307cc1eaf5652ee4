//! Path and query parameters shared by the streaming (WebSocket, SSE) and history routes.

use serde::Deserialize;

use crate::error::ApiError;
use crate::record::Level;
use crate::session::Start;
use crate::store::Filter;

/// Query parameters shared by the streaming routes.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    pub after_seq: Option<i64>,
    pub tail: Option<i64>,
    pub level: Option<String>,
    pub device_id: Option<i64>,
}

impl StreamQuery {
    /// Checks the parameters and splits them into where to start and what to keep.
    pub fn parse(&self) -> Result<(Start, Filter), ApiError> {
        if self.after_seq.is_some_and(|s| s < 0) {
            return Err(ApiError::BadRequest("after_seq must be 0 or more".into()));
        }
        if self.tail.is_some_and(|t| t < 0) {
            return Err(ApiError::BadRequest("tail must be 0 or more".into()));
        }
        if self.device_id.is_some_and(|d| d < 1) {
            return Err(ApiError::BadRequest(
                "device_id must be a positive integer".into(),
            ));
        }
        let min_level = match self
            .level
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            None => None,
            Some(text) => Some(Level::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "level {text:?} is not one of debug, info, warning, error, critical"
                ))
            })?),
        };
        Ok((
            Start {
                after_seq: self.after_seq,
                tail: self.tail,
            },
            Filter {
                min_level,
                device_id: self.device_id,
            },
        ))
    }
}

/// Checks a job id from the path.
pub fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| invalid_job_id(raw))
        .and_then(valid_job_id)
}

/// Checks a job id that is already a number (e.g. from a JSON client frame).
pub fn valid_job_id(id: i64) -> Result<i64, ApiError> {
    if id >= 1 {
        Ok(id)
    } else {
        Err(invalid_job_id(&id.to_string()))
    }
}

fn invalid_job_id(raw: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "job id {raw:?} must be an integer from 1 to 9223372036854775807"
    ))
}
