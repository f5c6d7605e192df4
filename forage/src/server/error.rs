//! The API's error answers: a status and `{"error": {"code", "message", "field"}}`
//! (docs/forage-api.md, "Errors"), and the mapping from [`AppError`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer` token is required",
        )
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::InvalidInput { field, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("{field}: {message}"))
                    .field(field)
            }
            AppError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            AppError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Unsupported(m) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", m),
            AppError::Gone(m) => ApiError::new(StatusCode::GONE, "cursor_expired", m).field("cursor"),
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        (self.status, Json(body)).into_response()
    }
}
