//! The JSON bodies of Tidal's HTTP API, shared by the server (which writes them) and every
//! client (which reads them): ingest answers, read answers with their `token`, and errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidal::Ack;
use tidal::hlc::Hlc;
use tidal::query::ShardStats;

/// The answer to an ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestAnswer {
    /// One ack per signal, in input order; `duplicate` marks retries.
    pub acks: Vec<Ack>,
    /// Pass as `min_seq` to a read to see these writes.
    pub token: String,
}

/// A read's answer with the token of the seqs it reflects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WithToken<T> {
    #[serde(flatten)]
    pub body: T,
    pub token: String,
}

/// One kind's totals on an item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindTotals {
    pub count: i64,
    pub value_sum: f64,
}

/// The last label signal of an item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastLabel {
    pub label: String,
    pub confirmed: bool,
}

/// `GET /v1/items/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemBody {
    pub item: String,
    pub kinds: BTreeMap<String, KindTotals>,
    pub last_rating: Option<f64>,
    pub last_label: Option<LastLabel>,
    pub first_hlc: Hlc,
    pub last_hlc: Hlc,
    /// Weighted, time-decayed score now.
    pub score: Option<f64>,
    pub seqs: Vec<u64>,
}

/// `GET /v1/users/{id}/hard-negatives`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardNegatives {
    pub user: String,
    pub hard_negatives: Vec<String>,
    pub seq: u64,
}

/// What opening the store recovered, in brief.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryBrief {
    pub elapsed_ms: u64,
    pub records_replayed: u64,
    pub wal_bytes: u64,
    pub torn_tails: usize,
}

/// `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsBody {
    pub shards: Vec<ShardStats>,
    pub recovery: RecoveryBrief,
    pub seqs: Vec<u64>,
}

/// Every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
