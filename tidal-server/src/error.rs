//! [`ApiError`]: every error the HTTP API answers, as a status code and the JSON body
//! `{"error": {"code", "message", "field"}}`, and the mapping from the store's [`Error`].
//!
//! `code` is a stable, machine-readable name (listed in `docs/http-api.md` and the OpenAPI
//! document); `message` is for people; `field` names the offending input (`signals[3].kind`,
//! `min_seq`) or is `null`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use tidal::error::{Error, ErrorKind};

/// The `code` of an error answer, left in the response's extensions for the middleware
/// (metrics and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// An error answer of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (503 answers).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, retry_after_s: None }
    }

    /// Names the offending input.
    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` is required",
        )
    }

    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry shortly",
        )
        .retry_after(1)
    }

    pub fn timeout() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than its time limit",
        )
        .retry_after(1)
    }

    /// The store's error, with `field` naming the input it concerns when known.
    pub fn from_store(error: Error) -> ApiError {
        let message = error.to_string();
        let (status, code) = match &error {
            Error::InvalidSignal { index, field, .. } => {
                let e = ApiError::bad_request("invalid_signal", message);
                return e.field(format!("signals[{index}].{field}"));
            }
            Error::SessionGap { .. } => (StatusCode::CONFLICT, "session_gap"),
            Error::StaleDuplicate { .. } => (StatusCode::CONFLICT, "stale_duplicate"),
            Error::BatchBytesTooLarge { .. } => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message)
                    .field("signals");
            }
            Error::BatchTooLarge { .. } => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message)
                    .field("signals");
            }
            Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::NotYet { .. } => {
                let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_yet", message);
                return e.field("min_seq").retry_after(1);
            }
            Error::Closed => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::ShardFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shard_failed"),
            Error::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Error::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
            other => match other.kind() {
                ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_request"),
                ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
                ErrorKind::Corruption => (StatusCode::INTERNAL_SERVER_ERROR, "corruption"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            },
        };
        let error = ApiError::new(status, code, message);
        if status == StatusCode::SERVICE_UNAVAILABLE { error.retry_after(1) } else { error }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::from_store(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            Body { error: Inner { code: self.code, message: &self.message, field: self.field.as_deref() } };
        // Serialising strings and an option cannot fail; the fallback keeps this total.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"error":{"code":"internal"}}"#.to_vec());
        let mut response = (self.status, json).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_status_and_code() {
        let e =
            ApiError::from(Error::InvalidSignal { index: 3, field: "kind".into(), reason: "unknown".into() });
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, "invalid_signal", Some("signals[3].kind"))
        );
        let e =
            ApiError::from(Error::SessionGap { user: "u".into(), session: "s".into(), expected: 2, got: 4 });
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "session_gap"));
        let e = ApiError::from(Error::NotYet { shard: 0, applied: 1, wanted: 9 });
        assert_eq!(
            (e.status, e.code, e.retry_after_s),
            (StatusCode::SERVICE_UNAVAILABLE, "not_yet", Some(1))
        );
        assert!(e.message.contains("applied seq 1") && e.message.contains("needs 9"), "{}", e.message);
        let e = ApiError::from(Error::BatchTooLarge { len: 9, max: 1 });
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = ApiError::from(Error::Closed);
        assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        let e = ApiError::from(Error::Snapshot("bad".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
