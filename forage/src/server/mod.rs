//! The Forage HTTP server (axum): the JSON API of docs/forage-api.md under `/v1`, the web
//! UI under `/`, probes, metrics and the OpenAPI document. Loopback by default; an optional
//! bearer token guards `/v1`. Handlers run the app's blocking operations on tokio's
//! blocking pool.

mod error;
mod handlers;
mod ui;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::app::Forage;

/// Default listen address: loopback only.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7391";
/// Largest request body.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// An oversized body is read and dropped up to this many times [`BODY_BYTES_MAX`] before
/// the 413 answer, so the client reads the answer instead of a connection reset.
pub const DRAIN_FACTOR: usize = 4;
/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// What the handlers share.
pub struct ServerState {
    pub app: Arc<Forage>,
    pub token: Option<String>,
}

/// The router over an app (exposed for tests that serve it themselves).
pub fn router(app: Arc<Forage>, token: Option<String>) -> Router {
    let state = Arc::new(ServerState { app, token });
    let v1 = Router::new()
        .route("/v1/feed", get(handlers::feed))
        .route("/v1/feedback", post(handlers::feedback))
        .route("/v1/items/{id}", get(handlers::item))
        .route("/v1/search", get(handlers::search))
        .route("/v1/history", get(handlers::history))
        .route("/v1/saved", get(handlers::saved).post(handlers::save))
        .route("/v1/saved/{id}", axum::routing::delete(handlers::unsave))
        .route("/v1/labels", get(handlers::labels).post(handlers::create_label))
        .route("/v1/labels/{id}", axum::routing::put(handlers::edit_label).delete(handlers::delete_label))
        .route("/v1/labels/{id}/feedback", post(handlers::label_feedback))
        .route("/v1/sources", get(handlers::sources).post(handlers::add_source))
        .route("/v1/sources/import", post(handlers::import_opml))
        .route("/v1/sources/{id}", axum::routing::delete(handlers::remove_source))
        .route("/v1/sources/{id}/refresh", post(handlers::refresh_source))
        .route("/v1/refresh", post(handlers::refresh_all))
        .route("/v1/stats", get(handlers::stats))
        .route("/v1/export", get(handlers::export))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/manage.js", get(ui::manage_js))
        .route("/ui/style.css", get(ui::style_css))
        .route("/healthz", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn(drain_oversized))
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn require_token(State(state): State<Arc<ServerState>>, request: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else { return next.run(request).await };
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match presented.and_then(tidal_client::auth::bearer_of) {
        Some(p) if tidal_client::auth::constant_time_eq(token.as_bytes(), p.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Answers 413 `body_too_large` to a request that declares a body above the limit, after
/// draining it (up to [`DRAIN_FACTOR`] times the limit).
async fn drain_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > BODY_BYTES_MAX as u64 => {
            if n <= (BODY_BYTES_MAX * DRAIN_FACTOR) as u64 {
                let _ = axum::body::to_bytes(request.into_body(), BODY_BYTES_MAX * DRAIN_FACTOR).await;
            }
            let message = format!("body of {n} bytes; at most {BODY_BYTES_MAX}");
            ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str, app: Arc<Forage>, token: Option<String>) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server { listener, router: router(app, token) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). Installs the handlers now, so a signal that
/// arrives before the future is polled is not lost; must be called inside a runtime.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("Ctrl-C: stopping"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router declares (read from this file's source) is in the OpenAPI
    /// document, and the document names no route the router lacks.
    #[test]
    fn openapi_lists_exactly_the_routes() {
        let source = include_str!("mod.rs");
        let mut routed: Vec<&str> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| *path != "/" && !path.starts_with("/ui/"))
            .collect();
        routed.sort_unstable();
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
        let mut documented: Vec<&str> =
            doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(routed, documented);
    }
}
