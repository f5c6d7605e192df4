//! Stats (arm posteriors and feedback rates, from the bandit's counters in Tidal) and the
//! process metrics served at `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tidal::SignalKind;

use super::{AppError, Forage};
use crate::bandit::{self, ArmCounts};

/// One arm's state.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ArmStats {
    pub source_id: i64,
    pub title: Option<String>,
    pub alpha: f64,
    pub beta: f64,
    pub mean: f64,
    pub impressions: u64,
    pub rewards: u64,
    pub negatives: u64,
}

/// Feedback totals over all arms.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FeedbackTotals {
    pub impressions: u64,
    pub likes: u64,
    pub dislikes: u64,
    pub skips: u64,
    pub opens: u64,
    /// Likes per impression (0 without impressions).
    pub like_rate: f64,
}

/// The answer of `GET /v1/stats`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub user: String,
    pub items: usize,
    /// Items with an embedding from the current model.
    pub embedded: u64,
    pub model: String,
    pub store: String,
    pub arms: Vec<ArmStats>,
    pub feedback: FeedbackTotals,
}

/// Request counters and feed latencies for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    feed_requests: u64,
    feed_seconds_sum: f64,
    feed_seconds_max: f64,
    feedback: BTreeMap<(String, bool), u64>,
}

impl Metrics {
    pub(super) fn feed(&self, elapsed: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.feed_requests += 1;
        m.feed_seconds_sum += elapsed.as_secs_f64();
        m.feed_seconds_max = m.feed_seconds_max.max(elapsed.as_secs_f64());
    }

    pub(super) fn feedback(&self, kind: &str, duplicate: bool) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.feedback.entry((kind.to_owned(), duplicate)).or_insert(0) += 1;
    }
}

impl Forage {
    /// Arm posteriors and feedback totals of a user.
    pub fn stats(&self, user: Option<&str>) -> Result<Stats, AppError> {
        let user = self.user_or_default(user)?.to_owned();
        let (sources, items, pending) = {
            let catalog = self.catalog();
            let pending = catalog.count_items_without_embedding(self.embedder.name())?;
            (catalog.list_sources()?, catalog.count_items(None)?, pending)
        };
        let mut arms = Vec::with_capacity(sources.len());
        let mut feedback = FeedbackTotals::default();
        for source in sources {
            let counter = self.store.item_counts(&bandit::arm_item_id(&user, &source.id.to_string()))?;
            let counts = ArmCounts {
                impressions: counter.get(&SignalKind::Impression),
                rewards: counter.get(&SignalKind::Like) + counter.get(&SignalKind::Click),
                negatives: counter.get(&SignalKind::Skip) + counter.get(&SignalKind::Dislike),
            };
            feedback.impressions += counts.impressions;
            feedback.likes += counter.get(&SignalKind::Like);
            feedback.dislikes += counter.get(&SignalKind::Dislike);
            feedback.skips += counter.get(&SignalKind::Skip);
            feedback.opens += counter.get(&SignalKind::Click);
            let p = bandit::posterior_from_counts(counts);
            arms.push(ArmStats {
                source_id: source.id,
                title: source.title,
                alpha: p.alpha,
                beta: p.beta,
                mean: p.mean(),
                impressions: counts.impressions,
                rewards: counts.rewards,
                negatives: counts.negatives,
            });
        }
        if feedback.impressions > 0 {
            feedback.like_rate = feedback.likes as f64 / feedback.impressions as f64;
        }
        Ok(Stats {
            user,
            items,
            embedded: items.saturating_sub(pending) as u64,
            model: self.embedder.name().to_owned(),
            store: self.store.describe(),
            arms,
            feedback,
        })
    }

    /// The Prometheus text of the app's metrics.
    pub fn metrics_text(&self) -> String {
        let m = self.metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
        let worker = self.worker_status();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP forage_feed_requests_total Feed pages served.");
        let _ = writeln!(out, "# TYPE forage_feed_requests_total counter");
        let _ = writeln!(out, "forage_feed_requests_total {}", m.feed_requests);
        let _ = writeln!(out, "# HELP forage_feed_seconds Time to build a feed page.");
        let _ = writeln!(out, "# TYPE forage_feed_seconds summary");
        let _ = writeln!(out, "forage_feed_seconds_sum {}", m.feed_seconds_sum);
        let _ = writeln!(out, "forage_feed_seconds_count {}", m.feed_requests);
        let _ = writeln!(out, "# HELP forage_feed_seconds_max Slowest feed page so far.");
        let _ = writeln!(out, "# TYPE forage_feed_seconds_max gauge");
        let _ = writeln!(out, "forage_feed_seconds_max {}", m.feed_seconds_max);
        let _ = writeln!(
            out,
            "# HELP forage_feedback_total Feedback requests by kind and whether they were retries."
        );
        let _ = writeln!(out, "# TYPE forage_feedback_total counter");
        for ((kind, duplicate), n) in &m.feedback {
            let _ = writeln!(out, "forage_feedback_total{{kind=\"{kind}\",duplicate=\"{duplicate}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP forage_embedded_items_total Items embedded by the background worker.");
        let _ = writeln!(out, "# TYPE forage_embedded_items_total counter");
        let _ = writeln!(out, "forage_embedded_items_total {}", worker.embedded_total);
        out
    }
}
