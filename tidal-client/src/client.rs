//! [`Client`]: a blocking HTTP client of one Tidal server, with read-your-writes.
//!
//! Every ack names its shard and seq; the client keeps the highest seq it was acked per
//! shard and sends them as `min_seq` on every read, so a read never misses a write this
//! client made (on any replica that serves the token).
//!
//! Errors: [`ClientError::Api`] carries the server's status and error code; its
//! [`ClientError::is_retryable`] is true for 5xx, 408, 429 and 409 `export_busy` (retry with
//! the same idempotency keys), false for other 4xx (nothing was stored: fix the request).
//! Transport failures are retryable too.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidal::Ack;
use ureq::Agent;

use crate::wire::{ErrorBody, IngestAnswer};

/// Timeout of each phase of one request: connect, send, wait for the answer, read it
/// (exports get [`EXPORT_TIMEOUT`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one export request.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest answer read, except exports (which stream).
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How long a read asks the server to wait for this client's own writes.
pub const READ_WAIT_MS: u64 = 5000;

/// Error codes of a 4xx answer that mean "retry later", not "bad input".
const RETRYABLE_CODES: [&str; 1] = ["export_busy"];

/// What can go wrong talking to Tidal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{url} answered {status} {code}: {message}")]
    Api { url: String, status: u16, code: String, message: String, field: Option<String> },
    /// No answer: connection refused, timeout, TLS.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// An answer that is not what the API documents.
    #[error("bad answer from {url}: {message}")]
    Decode { url: String, message: String },
    /// The client was configured wrongly.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// True when the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { status, code, .. } => {
                *status >= 500 || *status == 408 || *status == 429 || RETRYABLE_CODES.contains(&code.as_str())
            }
            ClientError::Transport { .. } | ClientError::Decode { .. } => true,
            ClientError::Config(_) => false,
        }
    }

    /// True for the 404 of a read whose id the store never saw (field `id`), as opposed to
    /// a 404 for a path the server does not have (a wrong base URL).
    pub fn is_missing_id(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, code, field, .. }
            if code == "not_found" && field.as_deref() == Some("id"))
    }
}

/// A client of the Tidal server at one base URL.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: Agent,
    export_agent: Agent,
    /// Highest acked seq per shard (read-your-writes).
    seen: Mutex<BTreeMap<u32, u64>>,
}

/// An agent whose every phase but name resolution is bounded by `timeout`.
///
/// Not `timeout_global`: when any timeout covers resolution, ureq resolves the host on a
/// new thread per request (even an IP literal, even on a pooled connection) so that it can
/// give up. Under 64 concurrent clients those thread spawns (stack mmap and munmap under
/// the process's mmap lock) cost more CPU than the requests themselves. Resolution then
/// runs inline and is bounded by the system resolver's own timeouts.
fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_connect(Some(timeout))
        .timeout_send_request(Some(timeout))
        .timeout_send_body(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Percent-encodes a path segment or query value (ids may hold `:`, `/`, spaces).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `base` (`http://host:port` or `https://…`), with an optional bearer
    /// token. Nothing is sent until the first call; [`Client::ready`] probes the server.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "tidal url `{base}` must start with http:// or https://"
            )));
        }
        Ok(Client {
            base,
            token,
            agent: agent(REQUEST_TIMEOUT),
            export_agent: agent(EXPORT_TIMEOUT),
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /readyz`: Ok once the server serves.
    pub fn ready(&self) -> Result<(), ClientError> {
        let url = format!("{}/readyz", self.base);
        let resp = self.agent.get(&url).call().map_err(|e| transport(&url, e))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(ClientError::Api {
                url,
                status,
                code: "not_ready".into(),
                message: "the server is not ready".into(),
                field: None,
            }),
        }
    }

    /// The `min_seq` token of every write this client was acknowledged.
    pub fn min_seq(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_empty() {
            return None;
        }
        Some(seen.iter().map(|(shard, seq)| format!("{shard}:{seq}")).collect::<Vec<_>>().join(","))
    }

    fn note_acks(&self, acks: &[Ack]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for ack in acks {
            let slot = seen.entry(ack.shard).or_insert(0);
            *slot = (*slot).max(ack.seq);
        }
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// `POST /v1/signals` with any serializable batch (signals, or raw JSON values).
    pub fn ingest<S: Serialize + ?Sized>(&self, signals: &S) -> Result<IngestAnswer, ClientError> {
        let url = format!("{}/v1/signals", self.base);
        let mut resp =
            self.authorized(self.agent.post(&url)).send_json(signals).map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        let body = read_body(&url, &mut resp)?;
        if !(200..300).contains(&status) {
            return Err(api_error(&url, status, &body));
        }
        let answer: IngestAnswer = decode(&url, &body)?;
        self.note_acks(&answer.acks);
        Ok(answer)
    }

    /// `GET path` (such as `/v1/items/ID`, segments already encoded) with this client's
    /// `min_seq`; `Ok(None)` when the store never saw the id.
    pub fn read<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{path}{sep}wait_ms={READ_WAIT_MS}", self.base);
        if let Some(min_seq) = self.min_seq() {
            url.push_str(&format!("&min_seq={}", encode_component(&min_seq)));
        }
        let mut resp = self.authorized(self.agent.get(&url)).call().map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        let body = read_body(&url, &mut resp)?;
        if !(200..300).contains(&status) {
            let error = api_error(&url, status, &body);
            return if error.is_missing_id() { Ok(None) } else { Err(error) };
        }
        decode(&url, &body).map(Some)
    }

    /// `GET /v1/export?QUERY`: the export as a byte stream (JSON Lines or Parquet).
    pub fn export(&self, query: &str) -> Result<Box<dyn Read + Send>, ClientError> {
        let url = format!("{}/v1/export?{query}", self.base);
        let resp = self.authorized(self.export_agent.get(&url)).call().map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let text = body.with_config().limit(ANSWER_BYTES_MAX).read_to_string().unwrap_or_default();
            return Err(api_error(&url, status, &text));
        }
        Ok(Box::new(body.into_with_config().limit(u64::MAX).reader()))
    }
}

fn transport(url: &str, e: ureq::Error) -> ClientError {
    ClientError::Transport { url: url.to_owned(), message: e.to_string() }
}

fn read_body(url: &str, resp: &mut ureq::http::Response<ureq::Body>) -> Result<String, ClientError> {
    resp.body_mut().with_config().limit(ANSWER_BYTES_MAX).read_to_string().map_err(|e| transport(url, e))
}

fn decode<T: DeserializeOwned>(url: &str, body: &str) -> Result<T, ClientError> {
    serde_json::from_str(body)
        .map_err(|e| ClientError::Decode { url: url.to_owned(), message: e.to_string() })
}

/// The error of a non-2xx answer; a body that is not Tidal's error JSON keeps its first
/// 500 characters as the message.
pub fn api_error(url: &str, status: u16, body: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            url: url.to_owned(),
            status,
            code: e.error.code,
            message: e.error.message,
            field: e.error.field,
        },
        Err(_) => ClientError::Api {
            url: url.to_owned(),
            status,
            code: String::new(),
            message: body.chars().take(500).collect(),
            field: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode_component("arm:me:3"), "arm%3Ame%3A3");
        assert_eq!(encode_component("it-0a1B"), "it-0a1B");
        assert_eq!(encode_component("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(Client::new("localhost:7390", None).is_err());
        assert!(Client::new("https://tidal.example", None).is_ok());
        assert_eq!(Client::new("http://127.0.0.1:7390/", None).unwrap().base(), "http://127.0.0.1:7390");
    }

    #[test]
    fn statuses_map_to_retryable_or_not() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m","field":null}}}}"#);
        let retryable = |s: u16, b: &str| api_error("u", s, b).is_retryable();
        assert!(!retryable(400, &body("invalid_signal")));
        assert!(!retryable(401, &body("unauthorized")));
        assert!(!retryable(409, &body("session_gap")));
        assert!(retryable(409, &body("export_busy")), "a busy export is retried");
        assert!(retryable(503, &body("not_yet")));
        assert!(retryable(429, &body("overloaded")));
        assert!(!retryable(404, "not a json body at all") && retryable(502, "<html>"));
        let missing = r#"{"error":{"code":"not_found","message":"m","field":"id"}}"#;
        assert!(api_error("u", 404, missing).is_missing_id());
        assert!(!api_error("u", 404, &body("not_found")).is_missing_id(), "no field: a wrong path");
    }

    #[test]
    fn acks_raise_the_min_seq_token() {
        let client = Client::new("http://127.0.0.1:1", None).unwrap();
        assert_eq!(client.min_seq(), None);
        let hlc = tidal::Hlc::new(1, 0);
        client.note_acks(&[Ack::new(2, 7, hlc), Ack::new(0, 3, hlc), Ack::new(2, 5, hlc)]);
        assert_eq!(client.min_seq().as_deref(), Some("0:3,2:7"));
    }
}
