//! Operational endpoints: `/healthz` (the process runs), `/readyz` (the store is open and
//! the server is not shutting down), `/metrics` (Prometheus text: the store's write-path
//! metrics plus the server's request counters), `/openapi.json`, and the JSON answers for
//! unknown paths and methods.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// The OpenAPI 3.1 document that describes this API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// `GET /healthz`: 200 whenever the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while serving, 503 `not_ready` before that and during shutdown.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        Json(json!({ "status": "ready", "shards": state.db.applied_seqs().len() })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting or shutting down")
            .retry_after(1)
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let db = &state.db;
    let mut text = db.metrics().render(&db.applied_seqs(), db.recovery_report().elapsed);
    text.push_str(&state.metrics.render(state.in_flight(), state.is_ready()));
    if let Some(cluster) = &state.cluster {
        text.push_str(&cluster.metrics_text());
    }
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `GET /openapi.json`: the API description.
pub async fn openapi() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Any path no route matches: 404 `not_found`.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint at `{}`; see /openapi.json", uri.path()))
}

/// A known path with a method it does not serve: 405 `method_not_allowed`.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{}` does not serve {method}", uri.path()),
    )
}
