//! HTTP fetching of feeds: conditional GET, timeouts, a response size cap, retries with
//! exponential backoff, and a per-host concurrency limit.
//!
//! Owns [`HttpFetcher`] and its [`HostLimiter`]. Invariants: at most `per_host_max` requests
//! to one host are in flight at once (counted across threads sharing the fetcher); a body is
//! never read past `response_bytes_max`; only transient failures (5xx, 429, timeouts, network
//! errors) are retried, never 4xx; a 304 returns [`Fetched::NotModified`] without a body.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ureq::Agent;
use ureq::http::StatusCode;

use super::SourceError;

/// Largest response body read, in bytes.
pub const RESPONSE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Default whole-request timeout.
pub const TIMEOUT_MS_DEFAULT: u64 = 15_000;
/// Default number of retries after the first attempt.
pub const RETRIES_DEFAULT: u32 = 2;
/// Default first backoff; it doubles on every retry.
pub const BACKOFF_MS_DEFAULT: u64 = 500;
/// Longest single backoff.
pub const BACKOFF_MS_MAX: u64 = 30_000;
/// Default number of concurrent requests per host.
pub const PER_HOST_MAX_DEFAULT: usize = 2;
/// Most retries a caller may configure.
pub const RETRIES_MAX: u32 = 8;

/// The fetcher's options; [`FetchOptions::default`] gives polite production values.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub timeout_ms: u64,
    pub response_bytes_max: u64,
    /// Retries after the first attempt (clamped to [`RETRIES_MAX`]).
    pub retries: u32,
    pub backoff_ms: u64,
    pub per_host_max: usize,
    pub user_agent: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout_ms: TIMEOUT_MS_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX,
            retries: RETRIES_DEFAULT,
            backoff_ms: BACKOFF_MS_DEFAULT,
            per_host_max: PER_HOST_MAX_DEFAULT,
            user_agent: concat!("forage/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Conditional-GET validators from the previous fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The result of a successful fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the stored copy is current.
    NotModified,
    /// 200: a new body and the validators to send next time.
    Body { bytes: Vec<u8>, validators: Validators },
}

/// A counting semaphore per host.
#[derive(Debug, Default)]
pub struct HostLimiter {
    in_flight: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// Holds one of a host's slots; dropping it frees the slot.
pub struct HostPermit<'a> {
    limiter: &'a HostLimiter,
    host: String,
}

impl HostLimiter {
    /// Waits until `host` has fewer than `max` requests in flight, then takes a slot.
    pub fn acquire(&self, host: &str, max: usize) -> HostPermit<'_> {
        let max = max.max(1);
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while map.get(host).copied().unwrap_or(0) >= max {
            map = self.freed.wait(map).unwrap_or_else(|e| e.into_inner());
        }
        *map.entry(host.to_owned()).or_insert(0) += 1;
        HostPermit { limiter: self, host: host.to_owned() }
    }
}

impl Drop for HostPermit<'_> {
    fn drop(&mut self) {
        let mut map = self.limiter.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.host);
            }
        }
        self.limiter.freed.notify_all();
    }
}

/// The host (and port) part of an `http(s)://` URL, lower-cased.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() { None } else { Some(host.to_ascii_lowercase()) }
}

/// Fetches feeds over HTTP; share one (it is `Sync`) so the per-host limit holds across threads.
pub struct HttpFetcher {
    agent: Agent,
    options: FetchOptions,
    limiter: Arc<HostLimiter>,
}

impl HttpFetcher {
    /// A fetcher with the given options.
    pub fn new(options: FetchOptions) -> HttpFetcher {
        let agent: Agent = Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(options.timeout_ms)))
            .http_status_as_error(false)
            .user_agent(options.user_agent.as_str())
            .build()
            .into();
        HttpFetcher { agent, options, limiter: Arc::new(HostLimiter::default()) }
    }

    /// The options this fetcher was built with.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// Fetches `url`, retrying transient failures with exponential backoff.
    pub fn fetch(&self, url: &str, validators: &Validators) -> Result<Fetched, SourceError> {
        let host = host_of(url).ok_or_else(|| SourceError::UnsupportedUrl { url: url.to_owned() })?;
        let retries = self.options.retries.min(RETRIES_MAX);
        let mut attempt = 0;
        loop {
            let result = {
                let _permit = self.limiter.acquire(&host, self.options.per_host_max);
                self.fetch_once(url, validators)
            };
            match result {
                Err(e) if e.is_transient() && attempt < retries => {
                    let backoff_ms = self.options.backoff_ms.saturating_mul(1 << attempt).min(BACKOFF_MS_MAX);
                    tracing::debug!(url, attempt, backoff_ms, error = %e, "retrying fetch");
                    std::thread::sleep(Duration::from_millis(backoff_ms));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn fetch_once(&self, url: &str, validators: &Validators) -> Result<Fetched, SourceError> {
        let mut req = self.agent.get(url);
        if let Some(etag) = &validators.etag {
            req = req.header("If-None-Match", etag.as_str());
        }
        if let Some(lm) = &validators.last_modified {
            req = req.header("If-Modified-Since", lm.as_str());
        }
        let mut resp = req.call().map_err(|e| map_error(url, e, self.options.response_bytes_max))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(SourceError::HttpStatus { url: url.to_owned(), status: status.as_u16() });
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|v| !v.is_empty())
        };
        let validators = Validators { etag: header("etag"), last_modified: header("last-modified") };
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(self.options.response_bytes_max)
            .read_to_vec()
            .map_err(|e| map_error(url, e, self.options.response_bytes_max))?;
        Ok(Fetched::Body { bytes, validators })
    }
}

fn map_error(url: &str, e: ureq::Error, bytes_max: u64) -> SourceError {
    let url = url.to_owned();
    match e {
        ureq::Error::Timeout(_) => SourceError::Timeout { url },
        ureq::Error::BodyExceedsLimit(_) => SourceError::TooLarge { url, bytes_max },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => SourceError::Timeout { url },
        other => SourceError::Network { url, reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_handles_ports_users_and_paths() {
        assert_eq!(host_of("http://127.0.0.1:8080/a?b").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host_of("https://u:p@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(host_of("nope"), None);
        assert_eq!(host_of("http:///x"), None);
    }

    #[test]
    fn limiter_bounds_concurrency() {
        let limiter = HostLimiter::default();
        let peak = Mutex::new((0usize, 0usize));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let _p = limiter.acquire("h", 2);
                    {
                        let mut g = peak.lock().expect("lock");
                        g.0 += 1;
                        g.1 = g.1.max(g.0);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    peak.lock().expect("lock").0 -= 1;
                });
            }
        });
        let (now, max) = *peak.lock().expect("lock");
        assert_eq!(now, 0);
        assert!((1..=2).contains(&max), "peak {max}");
    }
}
