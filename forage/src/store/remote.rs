//! [`RemoteTidal`]: [`TidalAccess`] over HTTP to a `tidal serve` process (or, later, a
//! cluster's front end), so Forage can run without an embedded store.
//!
//! Read-your-writes: every ack names its shard and seq; the client keeps the highest seq it
//! was acked per shard and sends them as `min_seq` on every read, so a read never misses a
//! write this client made. Limits of the remote path, by design of Tidal's HTTP API:
//! - exports come from `GET /v1/export`, which has no hooks: the client puts item texts in
//!   the `chosen`/`rejected`/`completion` columns from the row's ids afterwards, but prompts
//!   name item ids and there are no `mined` negatives (the prompt, mined and progress hooks
//!   are not called);
//! - the export takes only `format`, `test_fraction`, `seed` and `by_context_id`; options
//!   that differ from their defaults in any other field are refused as
//!   [`StoreError::Unsupported`] rather than silently ignored, except `exported_at_ms`, which
//!   the server stamps with its own clock;
//! - [`TidalAccess::read_logs`] is unsupported (the raw history is not served); evaluate on
//!   the store's data directory instead;
//! - `http://` or `https://` (rustls with the webpki roots).
//!
//! Errors map by status: 4xx is [`StoreError::Refused`] (nothing was stored: a bad signal, a
//! wrong token), except 408, 429 and 409 `export_busy`, which like 5xx and transport
//! failures are [`StoreError::Unavailable`] (retry, with the same idempotency keys). A read's
//! 404 means "never seen" only when it names the `id`; a 404 for an unknown endpoint (a wrong
//! base URL) is `Refused`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tidal::export::{ExportOptions, Hooks};
use tidal::{Ack, Signal, SignalKind};
use ureq::Agent;
use ureq::http::StatusCode;

use super::{ExportSummary, HistoryItem, KindCounts, StoreError, TidalAccess, UserSummary};
use crate::bandit::ips::Logs;

/// Timeout of one request to Tidal (exports get [`EXPORT_TIMEOUT`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one export request.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest answer read from Tidal, except exports (which stream).
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How long a read waits for this client's own writes to be applied.
const WAIT_MS: u64 = 5000;

/// A remote Tidal reached over HTTP.
pub struct RemoteTidal {
    base: String,
    token: Option<String>,
    agent: Agent,
    export_agent: Agent,
    /// Highest acked seq per shard (read-your-writes).
    seen: Mutex<BTreeMap<u32, u64>>,
}

#[derive(Deserialize)]
struct IngestAnswer {
    acks: Vec<Ack>,
}

#[derive(Deserialize)]
struct KindTotals {
    count: i64,
}

#[derive(Deserialize)]
struct ItemAnswer {
    kinds: BTreeMap<String, KindTotals>,
}

#[derive(Deserialize)]
struct HistoryAnswer {
    item: String,
    kind: SignalKind,
    value: f64,
}

#[derive(Deserialize)]
struct UserAnswer {
    hard_negatives: Vec<String>,
    history: Vec<HistoryAnswer>,
}

fn agent(timeout: Duration) -> Agent {
    Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// Percent-encodes a path segment (item and user ids may hold `:`, `/`, spaces).
fn encode_segment(s: &str) -> String {
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

impl RemoteTidal {
    /// A client for the Tidal server at `base` (`http://host:port`), with an optional bearer
    /// token. Nothing is sent until the first call; [`RemoteTidal::check`] probes it.
    pub fn new(base: &str, token: Option<String>) -> Result<RemoteTidal, StoreError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StoreError::Refused(format!(
                "tidal url `{base}` must start with http:// or https://"
            )));
        }
        Ok(RemoteTidal {
            base,
            token,
            agent: agent(REQUEST_TIMEOUT),
            export_agent: agent(EXPORT_TIMEOUT),
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// Asks the server's readiness probe; an error says why it is not usable.
    pub fn check(&self) -> Result<(), StoreError> {
        let resp = self.agent.get(format!("{}/readyz", self.base)).call().map_err(unavailable)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("{}/readyz answered {}", self.base, resp.status())))
        }
    }

    fn min_seq(&self) -> Option<String> {
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

    fn auth(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// GETs `path` with `min_seq`; `Ok(None)` when the server has no such id.
    fn read<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>, StoreError> {
        let mut url = format!("{}{path}?wait_ms={WAIT_MS}", self.base);
        if let Some(min_seq) = self.min_seq() {
            url.push_str(&format!("&min_seq={}", encode_segment(&min_seq)));
        }
        let mut resp = self.auth(self.agent.get(&url)).call().map_err(unavailable)?;
        let body =
            resp.body_mut().with_config().limit(ANSWER_BYTES_MAX).read_to_string().map_err(unavailable)?;
        if resp.status() == StatusCode::NOT_FOUND && names_missing_id(&body) {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(resp.status(), &body));
        }
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| StoreError::Unavailable(format!("bad answer from {url}: {e}")))
    }
}

fn unavailable(e: ureq::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Is this 404 body Tidal's "no such item/user" (field `id`)? Any other 404 (no endpoint at
/// the path: a wrong base URL, another service) is an error, not an empty answer, or a
/// misconfigured client would read priors forever.
fn names_missing_id(body: &str) -> bool {
    let Ok(answer) = serde_json::from_str::<Value>(body) else { return false };
    answer.pointer("/error/code").and_then(Value::as_str) == Some("not_found")
        && answer.pointer("/error/field").and_then(Value::as_str) == Some("id")
}

/// Error codes of a 4xx answer that mean "retry later", not "bad input".
const RETRYABLE_CODES: [&str; 1] = ["export_busy"];

fn status_error(status: StatusCode, body: &str) -> StoreError {
    let message = format!("tidal answered {status}: {}", body.chars().take(500).collect::<String>());
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(Value::as_str).map(str::to_owned));
    let retryable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || code.is_some_and(|c| RETRYABLE_CODES.contains(&c.as_str()));
    if status.is_client_error() && !retryable {
        StoreError::Refused(message)
    } else {
        StoreError::Unavailable(message)
    }
}

/// Refuses export options the server cannot take (see the module docs), naming them.
fn check_export_options(options: &ExportOptions) -> Result<(), StoreError> {
    let sent = ExportOptions {
        format: options.format,
        test_fraction: options.test_fraction,
        seed: options.seed,
        by_context_id: options.by_context_id,
        exported_at_ms: options.exported_at_ms,
        ..ExportOptions::default()
    };
    if *options == sent {
        return Ok(());
    }
    Err(StoreError::Unsupported(format!(
        "a remote export takes only format, test_fraction, seed and by_context_id; these options differ \
         from their defaults and would be ignored: {options:?}"
    )))
}

/// Puts item texts into an export row from its id columns.
fn add_texts(row: &mut Value, hooks: &Hooks<'_>) {
    let Some(provider) = hooks.item_text else { return };
    for (id_col, text_col) in
        [("chosen_id", "chosen"), ("rejected_id", "rejected"), ("item_id", "completion")]
    {
        let Some(id) = row.get(id_col).and_then(Value::as_str).map(str::to_owned) else { continue };
        if let (Some(text), Some(obj)) = (provider.text(&id), row.as_object_mut()) {
            obj.insert(text_col.to_owned(), Value::String(text));
        }
    }
}

impl TidalAccess for RemoteTidal {
    fn write(&self, signals: Vec<Signal>) -> Result<Vec<Ack>, StoreError> {
        let url = format!("{}/v1/signals", self.base);
        let mut req = self.agent.post(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send_json(&signals).map_err(unavailable)?;
        let body =
            resp.body_mut().with_config().limit(ANSWER_BYTES_MAX).read_to_string().map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(status_error(resp.status(), &body));
        }
        let answer: IngestAnswer = serde_json::from_str(&body)
            .map_err(|e| StoreError::Unavailable(format!("bad ingest answer: {e}")))?;
        self.note_acks(&answer.acks);
        Ok(answer.acks)
    }

    fn item_counts(&self, item: &str) -> Result<KindCounts, StoreError> {
        let answer: Option<ItemAnswer> = self.read(&format!("/v1/items/{}", encode_segment(item)))?;
        let kinds = answer.map(|a| a.kinds).unwrap_or_default();
        Ok(KindCounts(kinds.into_iter().map(|(k, t)| (k, t.count.max(0) as u64)).collect()))
    }

    fn user(&self, user: &str) -> Result<Option<UserSummary>, StoreError> {
        let answer: Option<UserAnswer> = self.read(&format!("/v1/users/{}", encode_segment(user)))?;
        Ok(answer.map(|a| UserSummary {
            hard_negatives: a.hard_negatives,
            history: a
                .history
                .into_iter()
                .map(|h| HistoryItem { item: h.item, kind: h.kind, value: h.value })
                .collect(),
        }))
    }

    fn export_jsonl(
        &self,
        out: &mut (dyn Write + Send),
        options: &ExportOptions,
        hooks: &Hooks<'_>,
    ) -> Result<ExportSummary, StoreError> {
        check_export_options(options)?;
        let url = format!(
            "{}/v1/export?format={}&file=jsonl&test_fraction={}&seed={}&by_context_id={}",
            self.base,
            options.format.as_str(),
            options.test_fraction,
            options.seed,
            options.by_context_id
        );
        let mut req = self.export_agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(unavailable)?;
        if !resp.status().is_success() {
            let body =
                resp.body_mut().with_config().limit(ANSWER_BYTES_MAX).read_to_string().unwrap_or_default();
            return Err(status_error(resp.status(), &body));
        }
        // The same keys as the embedded export's summary, zeros included.
        let rows_by_source = ["explicit", "implicit", "history", "mined"].map(|s| (s.to_owned(), 0)).into();
        let mut summary = ExportSummary { rows: 0, rows_by_source };
        let reader = BufReader::new(resp.body_mut().with_config().limit(u64::MAX).reader());
        for line in reader.lines() {
            let line = line.map_err(|e| StoreError::Unavailable(format!("export stream: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let mut row: Value = serde_json::from_str(&line)
                .map_err(|e| StoreError::Unavailable(format!("bad export row: {e}")))?;
            add_texts(&mut row, hooks);
            // KTO's desirable rows have no negative source; the embedded summary leaves them out too.
            if let Some(source) = row.get("negative_source").and_then(Value::as_str) {
                *summary.rows_by_source.entry(source.to_owned()).or_insert(0) += 1;
            }
            summary.rows += 1;
            serde_json::to_writer(&mut *out, &row).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            out.write_all(b"\n").map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        Ok(summary)
    }

    fn read_logs(&self) -> Result<Logs, StoreError> {
        Err(StoreError::Unsupported(format!(
            "impression logs are read from the store's history, which {} does not serve; run `forage eval` \
             with --tidal-dir on the server's data directory",
            self.base
        )))
    }

    /// A remote Tidal serves no raw history (its HTTP API has recent rings and exports):
    /// the app then rebuilds what it can from [`TidalAccess::user`] (see `app::users`).
    fn scan_user_events(
        &self,
        _user: Option<&str>,
        _on_event: &mut dyn FnMut(crate::store::UserEvent<'_>),
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(format!(
            "{}: a remote Tidal serves no raw signal history over HTTP",
            self.describe()
        )))
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("arm:me:3"), "arm%3Ame%3A3");
        assert_eq!(encode_segment("it-0a1B"), "it-0a1B");
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(RemoteTidal::new("localhost:7390", None).is_err());
        assert!(RemoteTidal::new("https://tidal.example", None).is_ok());
        assert!(RemoteTidal::new("http://127.0.0.1:7390/", None).is_ok());
    }

    #[test]
    fn statuses_map_to_refused_or_unavailable() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m","field":null}}}}"#);
        let refused = |s: u16, code: &str| {
            matches!(status_error(StatusCode::from_u16(s).unwrap(), &body(code)), StoreError::Refused(_))
        };
        assert!(refused(400, "invalid_signal"));
        assert!(refused(401, "unauthorized"));
        assert!(refused(409, "session_gap"));
        assert!(!refused(409, "export_busy"), "a busy export is retried, not refused");
        assert!(!refused(503, "not_yet"));
        assert!(!refused(429, "overloaded"));
        assert!(refused(404, "not a json body at all") && !refused(502, "<html>"));
    }

    #[test]
    fn export_options_the_server_cannot_take_are_refused() {
        let defaults = ExportOptions::default();
        let taken = ExportOptions {
            test_fraction: 0.0,
            seed: 7,
            by_context_id: true,
            exported_at_ms: 5,
            ..defaults.clone()
        };
        assert!(check_export_options(&taken).is_ok());
        let ignored = ExportOptions { implicit_window_ms: 1, ..defaults };
        assert!(matches!(check_export_options(&ignored), Err(StoreError::Unsupported(_))));
    }
}
