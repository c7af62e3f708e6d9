//! The API's one error type, rendered as an RFC 9457 problem document with a
//! stable code. Internal failures are logged with their detail and answered
//! without it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use driftless_protocol::{ErrorCode, Problem};
use driftless_store::BlobError;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: Option<String>,
    /// Sent as `Retry-After` (seconds).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a human detail (never secrets).
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
            retry_after: None,
        }
    }

    /// An error with only its code's title.
    pub fn code(code: ErrorCode) -> Self {
        Self {
            code,
            detail: None,
            retry_after: None,
        }
    }

    /// 429: come back after `secs` seconds (also in `Retry-After`).
    pub fn rate_limited(detail: impl Into<String>, secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::new(ErrorCode::RateLimited, detail)
        }
    }

    /// "Not found", the answer for missing things and other users' things alike.
    pub fn not_found() -> Self {
        Self::code(ErrorCode::NotFound)
    }

    /// The stable code.
    pub fn error_code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::new(self.code, self.detail);
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(Problem::CONTENT_TYPE),
        );
        // Every answer that asks for a retry says when (RFC 9110 §10.2.3):
        // a backing service that is down, a commit that is running.
        let retry_after = self.retry_after.or(match self.code {
            ErrorCode::Unavailable => Some(crate::ops::retry_after(1, 5)),
            ErrorCode::UploadBusy => Some(1),
            ErrorCode::RateLimited => Some(1),
            _ => None,
        });
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::code(ErrorCode::Unavailable)
            }
            _ => Self::code(ErrorCode::Internal),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        tracing::error!(error = %e, "object storage error");
        if e.retryable() {
            Self::code(ErrorCode::Unavailable)
        } else {
            Self::code(ErrorCode::Internal)
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
