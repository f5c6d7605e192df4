//! The router: one table of routes (method, path template, handler) that both builds the
//! axum router and lists the routes for the OpenAPI coverage test, plus the middleware.
//!
//! Middleware, outermost first: request metrics (sees every answer, 401s included), the
//! bearer token, then for `/v1` only the in-flight limit (503 `overloaded` when full, never
//! a queue) and the request timeout (503 `timeout`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing;

use super::error::ApiError;
use super::{AppState, auth, export, handlers, ingest, metrics, reads};

/// Path prefix of the versioned API; the limits apply under it.
pub const API_PREFIX: &str = "/v1/";

type AppRouter = Router<Arc<AppState>>;

/// The routes and the router they build, kept in step.
struct Table {
    router: AppRouter,
    routes: Vec<(Method, &'static str)>,
}

impl Table {
    fn new() -> Table {
        Table { router: Router::new(), routes: Vec::new() }
    }

    fn get<H: Handler<T, Arc<AppState>>, T: 'static>(mut self, path: &'static str, handler: H) -> Table {
        self.routes.push((Method::GET, path));
        self.router = self.router.route(path, routing::get(handler));
        self
    }

    fn post<H: Handler<T, Arc<AppState>>, T: 'static>(mut self, path: &'static str, handler: H) -> Table {
        self.routes.push((Method::POST, path));
        self.router = self.router.route(path, routing::post(handler));
        self
    }
}

fn table() -> Table {
    Table::new()
        .post("/v1/signals", ingest::post_signals)
        .get("/v1/items/{id}", reads::item)
        .get("/v1/top", reads::top)
        .get("/v1/users/{id}", reads::user)
        .get("/v1/users/{id}/sessions/{session}", reads::session)
        .get("/v1/users/{id}/hard-negatives", reads::hard_negatives)
        .get("/v1/stats", reads::stats)
        .get("/v1/export", export::export)
        .get("/v1/cluster/status", crate::cluster::status)
        .post("/v1/cluster/shards/{shard}/promote", crate::cluster::promote)
        .get("/healthz", handlers::healthz)
        .get("/readyz", handlers::readyz)
        .get("/metrics", handlers::metrics)
        .get("/openapi.json", handlers::openapi)
}

/// Every (method, path template) the router serves.
pub fn routes() -> Vec<(Method, &'static str)> {
    table().routes
}

/// The complete application over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let body_bytes_max = state.limits.body_bytes_max;
    table()
        .router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), limit_api))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// Middleware: bounds `/v1` requests in flight and in time.
async fn limit_api(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(API_PREFIX) {
        return next.run(request).await;
    }
    let Ok(_permit) = state.permits.try_acquire() else {
        return ApiError::overloaded().into_response();
    };
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}
