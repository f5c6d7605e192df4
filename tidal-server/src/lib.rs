//! `tidal serve`: the HTTP API over an open [`Db`] in the same process.
//!
//! - [`mod@routes`] builds the router: the route table (which the OpenAPI test compares with
//!   `openapi.json`), fallbacks, and the middleware stack (request metrics, bearer token,
//!   in-flight limit and request timeout).
//! - [`ingest`] is `POST /v1/signals`; [`reads`] the `GET /v1/...` reads with `min_seq`;
//!   [`handlers`] the probes, `/metrics` and `/openapi.json`.
//! - [`error`] turns every failure into `{"error": {code, message, field}}` with its status.
//! - [`config`] resolves flags, environment and TOML file.
//! - [`conn`] wraps accepted connections so hyper's own answers to unparseable requests
//!   (400, 414, 431) carry the JSON error body too.
//!
//! Lifecycle: the store is opened before [`Server::bind`]; the server is ready as soon as it
//! is bound. When the shutdown future resolves, `/readyz` answers 503, the listener stops
//! accepting, and in-flight requests finish (bounded by `shutdown_grace`). The caller then
//! snapshots and closes the store. Store calls that block (waiting for a `min_seq`) run on
//! the blocking pool; writes wait for their acks without blocking a worker.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod error;
pub mod export;
pub mod forward;
pub mod handlers;
pub mod ingest;
pub mod metrics;
pub mod reads;
pub mod routes;

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

pub use config::{ConfigLayer, Limits, ServerConfig};
pub use error::ApiError;
pub use routes::{router, routes};
use tidal::db::Db;

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub limits: Limits,
    token: Option<String>,
    ready: AtomicBool,
    pub metrics: metrics::HttpMetrics,
    /// Permits for requests under `/v1`; none left means 503 `overloaded`.
    permits: Semaphore,
    /// The cluster this node is part of (`None`: a standalone server).
    pub cluster: Option<Arc<dyn cluster::ClusterView>>,
}

impl AppState {
    /// State for a server over `db`; not ready until [`AppState::set_ready`].
    pub fn new(db: Db, limits: Limits, token: Option<String>) -> AppState {
        AppState {
            db,
            limits,
            token,
            ready: AtomicBool::new(false),
            metrics: metrics::HttpMetrics::default(),
            permits: Semaphore::new(limits.requests_in_flight_max),
            cluster: None,
        }
    }

    /// The same state, as a node of `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<dyn cluster::ClusterView>) -> AppState {
        self.cluster = Some(cluster);
        self
    }

    /// True once the server serves and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// `/v1` requests being served now.
    pub fn in_flight(&self) -> usize {
        self.limits.requests_in_flight_max.saturating_sub(self.permits.available_permits())
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds `config.listen` (port 0 picks a free port) over an open store.
    pub async fn bind(db: Db, config: &ServerConfig) -> io::Result<Server> {
        Server::bind_node(db, config, None).await
    }

    /// [`Server::bind`] for a node of a cluster (`Some`) or a standalone store (`None`).
    pub async fn bind_node(
        db: Db,
        config: &ServerConfig,
        cluster: Option<Arc<dyn cluster::ClusterView>>,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let mut state = AppState::new(db, config.limits, config.token.clone());
        if let Some(cluster) = cluster {
            state = state.with_cluster(cluster);
        }
        Ok(Server { listener, state: Arc::new(state) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish, for at most the configured grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let state = self.state;
        let addr = self.listener.local_addr()?;
        let app = router(state.clone());
        let began = Arc::new(Notify::new());
        let signal = {
            let (state, began) = (state.clone(), began.clone());
            async move {
                shutdown.await;
                state.set_ready(false);
                tracing::info!("shutting down: no new connections; finishing requests in flight");
                began.notify_one();
            }
        };
        state.set_ready(true);
        tracing::info!(%addr, "serving HTTP");
        let serve =
            axum::serve(conn::JsonListener(self.listener), app).with_graceful_shutdown(signal).into_future();
        let grace = state.limits.shutdown_grace;
        tokio::select! {
            served = serve => served,
            () = async { began.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still in flight after the grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). Installs the handlers now, so a signal that
/// arrives before the future is polled is not lost; must be called inside a runtime.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    #[test]
    fn readyz_follows_the_ready_flag_and_healthz_does_not() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), tidal::Options::default()).unwrap();
        let state = Arc::new(AppState::new(db.clone(), Limits::default(), None));
        let ready =
            |s: &Arc<AppState>| runtime.block_on(handlers::readyz(State(s.clone()))).into_response().status();
        assert_eq!(ready(&state), StatusCode::SERVICE_UNAVAILABLE, "not ready before serving");
        state.set_ready(true);
        assert_eq!(ready(&state), StatusCode::OK);
        state.set_ready(false);
        assert_eq!(ready(&state), StatusCode::SERVICE_UNAVAILABLE, "not ready while shutting down");
        assert_eq!(runtime.block_on(handlers::healthz()).into_response().status(), StatusCode::OK);
        drop(state);
        db.close().unwrap();
    }
}
