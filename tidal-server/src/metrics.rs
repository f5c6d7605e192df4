//! Request metrics of the HTTP server: requests per method, route and status, signals
//! ingested over HTTP, and the Prometheus text they render to (appended to the store's own
//! metrics on `/metrics`). Routes are the router's templates (`/v1/items/{id}`), and paths
//! that match no route count as `unmatched`, so label cardinality stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ErrorCode;

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

type RequestKey = (String, String, u16);

/// Counters the server keeps about its requests.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// (method, route, status) → requests answered.
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    /// Signals acknowledged as new writes over HTTP.
    pub signals_written: AtomicU64,
    /// Signals acknowledged as duplicates (retries) over HTTP.
    pub signals_duplicate: AtomicU64,
    /// Ingest requests rejected (any 4xx/5xx answer to `POST /v1/signals`).
    pub ingest_rejected: AtomicU64,
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((method.to_owned(), route.to_owned(), status)).or_insert(0) += 1;
    }

    /// Requests answered so far for one (method, route, status).
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.get(&(method.to_owned(), route.to_owned(), status)).copied().unwrap_or(0)
    }

    /// The counters in Prometheus text format.
    pub fn render(&self, in_flight: usize, ready: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tidal_http_requests_total HTTP requests answered, by method, route and status.\n\
             # TYPE tidal_http_requests_total counter"
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((method, route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "tidal_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }
        drop(requests);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP tidal_http_ingest_signals_total Signals acknowledged over HTTP, new or duplicate.\n\
             # TYPE tidal_http_ingest_signals_total counter\n\
             tidal_http_ingest_signals_total{{result=\"written\"}} {}\n\
             tidal_http_ingest_signals_total{{result=\"duplicate\"}} {}",
            load(&self.signals_written),
            load(&self.signals_duplicate)
        );
        let _ = writeln!(
            out,
            "# HELP tidal_http_ingest_rejected_total Ingest requests answered with an error.\n\
             # TYPE tidal_http_ingest_rejected_total counter\ntidal_http_ingest_rejected_total {}",
            load(&self.ingest_rejected)
        );
        let _ = writeln!(
            out,
            "# HELP tidal_http_requests_in_flight API requests being served.\n\
             # TYPE tidal_http_requests_in_flight gauge\ntidal_http_requests_in_flight {in_flight}\n\
             # HELP tidal_http_ready 1 while the server is ready (see /readyz).\n\
             # TYPE tidal_http_ready gauge\ntidal_http_ready {}",
            u8::from(ready)
        );
        out
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware: counts every answer by route template and status; logs server errors.
pub async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // Only standard methods become labels, so odd requests cannot grow the table.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.record(&method, &route, status.as_u16());
    if status.is_server_error() {
        let code = response.extensions().get::<ErrorCode>().map_or("", |c| c.0);
        // A read that waited for its min_seq in vain is the documented answer, not a fault.
        if code == "not_yet" {
            tracing::debug!(%method, %route, code, "min_seq not applied in time");
        } else {
            tracing::warn!(%method, %route, status = status.as_u16(), code, "request failed with a server error");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_route_and_status() {
        let m = HttpMetrics::default();
        m.record("GET", "/v1/items/{id}", 200);
        m.record("GET", "/v1/items/{id}", 200);
        m.record("POST", "/v1/signals", 400);
        m.signals_written.fetch_add(7, Ordering::Relaxed);
        let out = m.render(2, true);
        assert!(out.contains(
            "tidal_http_requests_total{method=\"GET\",route=\"/v1/items/{id}\",status=\"200\"} 2\n"
        ));
        assert!(out.contains("route=\"/v1/signals\",status=\"400\"} 1\n"), "{out}");
        assert!(out.contains("tidal_http_ingest_signals_total{result=\"written\"} 7\n"));
        assert!(out.contains("tidal_http_requests_in_flight 2\n"));
        assert!(out.contains("tidal_http_ready 1\n"));
        assert_eq!(m.requests("GET", "/v1/items/{id}", 200), 2);
    }
}
