//! Body and query extractors whose every rejection is a problem document
//! with a stable code: wrong content type, body over the limit, malformed
//! JSON, a query string that does not parse.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use driftless_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json` with problem+json rejections.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(reject(rejection)),
        }
    }
}

/// `axum::extract::Query` with problem+json rejections (`invalid_request`).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(ApiError::new(ErrorCode::InvalidRequest, r.body_text())),
        }
    }
}

fn reject(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::code(ErrorCode::UnsupportedMediaType),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(ErrorCode::MalformedJson, e.body_text()),
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            // A digest that fails to parse says so in serde's message (see
            // DigestError): answer with the precise code.
            let code = if text.contains("a hash is") {
                ErrorCode::HashMalformed
            } else {
                ErrorCode::MalformedJson
            };
            ApiError::new(code, text)
        }
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::code(ErrorCode::BodyTooLarge)
        }
        other => ApiError::new(ErrorCode::InvalidRequest, other.body_text()),
    }
}
