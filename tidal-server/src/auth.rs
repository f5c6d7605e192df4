//! The optional bearer token. When the server has one, every request but `/healthz` and
//! `/readyz` must carry `Authorization: Bearer <token>`; anything else is 401 `unauthorized`.
//! The comparison takes the same time wherever the first differing byte is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Paths anyone may call: probes must work without credentials.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Middleware: rejects requests without the server's token.
pub async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else {
        return next.run(request).await;
    };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match bearer_credentials(request.headers()) {
        Some(presented) if tidal_client::auth::constant_time_eq(token.as_bytes(), presented.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// The credentials of the request's `Authorization: Bearer …` header, if it has one.
pub fn bearer_credentials(headers: &HeaderMap) -> Option<&str> {
    tidal_client::auth::bearer_of(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}
