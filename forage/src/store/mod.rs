//! Forage's access to Tidal, behind one trait so the app runs on an embedded store or on a
//! remote `tidal serve` alike.
//!
//! Owns [`TidalAccess`] (what Forage needs of Tidal: write signals, read an item's per-kind
//! counts, read a user's recent history and hard negatives, export preference rows, scan the
//! impression logs) and its two implementations: [`tidal::Db`] in-process (this module) and
//! [`remote::RemoteTidal`] over HTTP. Invariants:
//! - a write is all-or-nothing: an error means no signal of the batch was stored (Tidal's
//!   batch rule, kept by both implementations);
//! - reads see every write whose call returned (read-your-writes: the embedded store applies
//!   before it acks; the remote one passes the write's token as `min_seq`).

pub mod remote;

use std::collections::BTreeMap;
use std::io::Write;

use tidal::{Ack, Db, Signal, SignalKind};
use tidal_export::{ExportOptions, FileFormat, Hooks};

use crate::bandit::ips::{self, Logs};

/// What talking to Tidal can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Tidal refused the input (a bad signal, a SeqNo gap): nothing was stored.
    #[error("tidal refused the request: {0}")]
    Refused(String),
    /// Tidal is unreachable, overloaded or failed; the write may be retried with the same
    /// idempotency keys.
    #[error("tidal is unavailable: {0}")]
    Unavailable(String),
    /// This implementation cannot do it (say, reading raw logs from a remote store).
    #[error("not supported by this store: {0}")]
    Unsupported(String),
}

impl From<tidal::Error> for StoreError {
    fn from(e: tidal::Error) -> Self {
        match e.kind() {
            tidal::ErrorKind::InvalidInput | tidal::ErrorKind::Conflict => StoreError::Refused(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<tidal_export::ExportError> for StoreError {
    fn from(e: tidal_export::ExportError) -> Self {
        match e.kind() {
            tidal::ErrorKind::InvalidInput => StoreError::Refused(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// How many signals of each kind an item has, summed over users (kind name → count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindCounts(pub BTreeMap<String, u64>);

impl KindCounts {
    /// The count of one kind (0 when absent).
    pub fn get(&self, kind: &SignalKind) -> u64 {
        self.0.get(kind.as_str()).copied().unwrap_or(0)
    }
}

/// One entry of a user's recent history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryItem {
    pub item: String,
    pub kind: SignalKind,
    pub value: f64,
}

/// What Tidal knows about a user that Forage reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserSummary {
    /// Items the user rejected and has not wanted since.
    pub hard_negatives: Vec<String>,
    /// Most recent signals, oldest first (a bounded ring in Tidal).
    pub history: Vec<HistoryItem>,
}

/// One signal of a real user (the bandit's counter users are left out), as Tidal stored it:
/// what Forage rebuilds its per-user state from ([`TidalAccess::scan_user_events`]).
#[derive(Clone, Debug, PartialEq)]
pub struct UserEvent<'a> {
    pub user: &'a str,
    pub item: &'a str,
    pub kind: SignalKind,
    pub context: Option<&'a str>,
    /// The impression's `position` attribute, when it has one.
    pub position: Option<u32>,
    /// When Tidal stamped the signal (its HLC's physical part), ms since the Unix epoch.
    pub at_ms: u64,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub rows: u64,
    /// Rows by the source of their negative (`explicit`, `implicit`, `history`, `mined`).
    pub rows_by_source: BTreeMap<String, u64>,
}

/// Forage's access to Tidal. All calls block; call them from a blocking context.
pub trait TidalAccess: Send + Sync {
    /// Writes a batch of signals, all or nothing.
    fn write(&self, signals: Vec<Signal>) -> Result<Vec<Ack>, StoreError>;
    /// Per-kind counts of an item (empty when Tidal never saw it).
    fn item_counts(&self, item: &str) -> Result<KindCounts, StoreError>;
    /// A user's hard negatives and recent history (`None` when Tidal never saw the user).
    fn user(&self, user: &str) -> Result<Option<UserSummary>, StoreError>;
    /// Exports preference rows as JSON Lines into `out`. `hooks` give item texts and mined
    /// negatives; an implementation that cannot call them says so in its docs.
    fn export_jsonl(
        &self,
        out: &mut (dyn Write + Send),
        options: &ExportOptions,
        hooks: &Hooks<'_>,
    ) -> Result<ExportSummary, StoreError>;
    /// Every logged impression joined with its reward, for offline evaluation.
    fn read_logs(&self) -> Result<Logs, StoreError>;
    /// Calls `on_event` with every signal Tidal holds of `user` (of every real user when
    /// `None`), each user's in write order: the complete history, not the recent ring.
    fn scan_user_events(
        &self,
        user: Option<&str>,
        on_event: &mut dyn FnMut(UserEvent<'_>),
    ) -> Result<(), StoreError>;
    /// Where the store is, for logs and `/v1/stats` (`embedded:DIR` or the base URL).
    fn describe(&self) -> String;
}

impl TidalAccess for Db {
    fn write(&self, signals: Vec<Signal>) -> Result<Vec<Ack>, StoreError> {
        Ok(self.write_batch(signals)?)
    }

    fn item_counts(&self, item: &str) -> Result<KindCounts, StoreError> {
        let Some(view) = Db::item(self, item) else { return Ok(KindCounts::default()) };
        let summary = view.summary();
        let counts = summary.kinds.iter().map(|(k, t)| (k.clone(), t.count.max(0) as u64)).collect();
        Ok(KindCounts(counts))
    }

    fn user(&self, user: &str) -> Result<Option<UserSummary>, StoreError> {
        Ok(Db::user(self, user).map(|v| UserSummary {
            hard_negatives: v.hard_negatives,
            history: v
                .history
                .into_iter()
                .map(|h| HistoryItem { item: h.item.to_string(), kind: h.kind, value: h.value })
                .collect(),
        }))
    }

    fn export_jsonl(
        &self,
        out: &mut (dyn Write + Send),
        options: &ExportOptions,
        hooks: &Hooks<'_>,
    ) -> Result<ExportSummary, StoreError> {
        let report = tidal_export::export_to_writer(self, out, FileFormat::Jsonl, options, hooks)?;
        let s = report.rows_by_source;
        let by_source =
            [("explicit", s.explicit), ("implicit", s.implicit), ("history", s.history), ("mined", s.mined)];
        let rows_by_source = by_source.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Ok(ExportSummary { rows: report.rows, rows_by_source })
    }

    fn read_logs(&self) -> Result<Logs, StoreError> {
        Ok(ips::read_logs(self)?)
    }

    fn scan_user_events(
        &self,
        user: Option<&str>,
        on_event: &mut dyn FnMut(UserEvent<'_>),
    ) -> Result<(), StoreError> {
        let seqs = self.applied_seqs();
        let shards: Vec<u32> = match user {
            Some(u) => vec![self.router().shard_for(u)],
            None => (0..seqs.len() as u32).collect(),
        };
        for shard in shards {
            let until = seqs.get(shard as usize).map_or(0, |s| s + 1);
            tidal::history::scan_history(self.vfs(), self.dir(), shard, until, |_, hlc, s| {
                if s.user.starts_with(crate::bandit::COUNTER_USER_PREFIX) || user.is_some_and(|u| u != s.user)
                {
                    return Ok(());
                }
                let position = s
                    .attrs
                    .iter()
                    .find(|(k, _)| *k == crate::bandit::ATTR_POSITION)
                    .and_then(|(_, v)| v.parse().ok());
                on_event(UserEvent {
                    user: s.user,
                    item: s.item,
                    kind: s.kind,
                    context: s.context,
                    position,
                    at_ms: hlc.physical_ms(),
                });
                Ok(())
            })?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.dir().display())
    }
}
