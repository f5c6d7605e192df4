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

use serde::Deserialize;
use serde_json::Value;
use tidal::{Ack, Signal, SignalKind};
use tidal_client::client::encode_component;
use tidal_client::{Client, ClientError};
use tidal_export::{ExportOptions, Hooks};

use super::{ExportSummary, HistoryItem, KindCounts, StoreError, TidalAccess, UserSummary};
use crate::bandit::ips::Logs;

/// A remote Tidal reached over HTTP (through [`tidal_client::Client`]).
pub struct RemoteTidal {
    client: Client,
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

impl RemoteTidal {
    /// A client for the Tidal server at `base` (`http://host:port`), with an optional bearer
    /// token. Nothing is sent until the first call; [`RemoteTidal::check`] probes it.
    pub fn new(base: &str, token: Option<String>) -> Result<RemoteTidal, StoreError> {
        Ok(RemoteTidal { client: Client::new(base, token).map_err(store_error)? })
    }

    /// Asks the server's readiness probe; an error says why it is not usable.
    pub fn check(&self) -> Result<(), StoreError> {
        self.client.ready().map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>, StoreError> {
        self.client.read(path).map_err(store_error)
    }
}

/// Refused (fix the request) or Unavailable (retry with the same keys), by the client's rule.
fn store_error(e: ClientError) -> StoreError {
    if e.is_retryable() { StoreError::Unavailable(e.to_string()) } else { StoreError::Refused(e.to_string()) }
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
        Ok(self.client.ingest(&signals).map_err(store_error)?.acks)
    }

    fn item_counts(&self, item: &str) -> Result<KindCounts, StoreError> {
        let answer: Option<ItemAnswer> = self.read(&format!("/v1/items/{}", encode_component(item)))?;
        let kinds = answer.map(|a| a.kinds).unwrap_or_default();
        Ok(KindCounts(kinds.into_iter().map(|(k, t)| (k, t.count.max(0) as u64)).collect()))
    }

    fn user(&self, user: &str) -> Result<Option<UserSummary>, StoreError> {
        let answer: Option<UserAnswer> = self.read(&format!("/v1/users/{}", encode_component(user)))?;
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
        let query = format!(
            "format={}&file=jsonl&test_fraction={}&seed={}&by_context_id={}",
            options.format.as_str(),
            options.test_fraction,
            options.seed,
            options.by_context_id
        );
        let stream = self.client.export(&query).map_err(store_error)?;
        // The same keys as the embedded export's summary, zeros included.
        let rows_by_source = ["explicit", "implicit", "history", "mined"].map(|s| (s.to_owned(), 0)).into();
        let mut summary = ExportSummary { rows: 0, rows_by_source };
        let reader = BufReader::new(stream);
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
            self.client.base()
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
        self.client.base().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(RemoteTidal::new("localhost:7390", None).is_err());
        assert!(RemoteTidal::new("https://tidal.example", None).is_ok());
        assert!(RemoteTidal::new("http://127.0.0.1:7390/", None).is_ok());
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
