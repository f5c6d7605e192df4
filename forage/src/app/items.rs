//! Item reads of the app: one item with its signal counts, full-text search, and offline
//! evaluation of bandit policies from the impression logs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::views::{ItemView, ItemViews};
use super::{AppError, Forage};
use crate::bandit::{EvalReport, LoggedImpression, evaluate};

/// Most search results on one page.
pub const SEARCH_LIMIT_MAX: usize = 100;
/// Longest search query.
pub const QUERY_BYTES_MAX: usize = 1024;

/// An item with its signal counts in Tidal (summed over users).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ItemDetail {
    #[serde(flatten)]
    pub item: ItemView,
    pub signals: BTreeMap<String, u64>,
}

/// One policy's offline estimate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PolicyEstimate {
    pub policy: String,
    /// What the policy does, in a few words.
    pub description: String,
    pub ips: f64,
    pub snips: f64,
    pub n: usize,
    pub effective_sample_size: f64,
    /// Impressions the policy could not be scored on (see [`crate::bandit::ips`]).
    pub skipped: usize,
}

/// What `forage eval` reports.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalSummary {
    pub impressions: usize,
    pub truncated: bool,
    /// Impressions logged before item-level propensities existed: their source's
    /// propensity stands in for the item's.
    pub source_level_only: usize,
    /// The logging policy's own reward per impression (the baseline).
    pub logged_reward: f64,
    pub estimates: Vec<PolicyEstimate>,
}

fn estimate(policy: &str, description: String, report: EvalReport) -> PolicyEstimate {
    PolicyEstimate {
        policy: policy.to_owned(),
        description,
        ips: report.ips,
        snips: report.snips,
        n: report.n,
        effective_sample_size: report.effective_sample_size,
        skipped: report.skipped,
    }
}

/// The logging policy's probability of the item given its source: 1 for an older log,
/// whose propensity is the source's.
fn within_source(l: &LoggedImpression) -> f64 {
    if l.item_level { l.within_propensity.unwrap_or(f64::NAN) } else { 1.0 }
}

/// The source with the best logged reward rate (ties: the smallest name), and the number
/// of sources in the logs.
fn best_source(impressions: &[LoggedImpression]) -> (Option<String>, usize) {
    let mut by_arm: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for l in impressions {
        let e = by_arm.entry(l.arm.as_str()).or_insert((0.0, 0.0));
        e.0 += l.reward;
        e.1 += 1.0;
    }
    let best = by_arm
        .iter()
        .max_by(|a, b| (a.1.0 / a.1.1).total_cmp(&(b.1.0 / b.1.1)).then(b.0.cmp(a.0)))
        .map(|(arm, _)| (*arm).to_owned());
    (best, by_arm.len())
}

/// The policies `forage eval` scores, with the probability each gives the logged item of
/// an impression (NaN: the record lacks what the policy needs, so it is skipped).
fn policy_estimates(impressions: &[LoggedImpression]) -> Vec<PolicyEstimate> {
    let policies: BTreeSet<&str> = impressions.iter().map(|l| l.policy.as_str()).collect();
    let logging = policies.into_iter().collect::<Vec<_>>().join(", ");
    let (best, arms) = best_source(impressions);
    let best_name = best.as_deref().unwrap_or("none");
    let arms_f = arms.max(1) as f64;
    vec![
        estimate(
            "logging",
            format!("the policy that wrote the logs ({logging})"),
            evaluate(impressions, |l| l.propensity),
        ),
        estimate(
            "uniform-items",
            "any of the slot's candidates, uniformly".to_owned(),
            evaluate(impressions, |l| l.candidates.map_or(f64::NAN, |n| 1.0 / f64::from(n.max(1)))),
        ),
        estimate(
            "uniform-sources",
            format!("any of the {arms} sources in the logs, uniformly; the item as logged"),
            evaluate(impressions, |l| within_source(l) / arms_f),
        ),
        estimate(
            "greedy-source",
            format!("always the source with the best logged like rate ({best_name}); the item as logged"),
            evaluate(impressions, |l| {
                if best.as_deref() == Some(l.arm.as_str()) { within_source(l) } else { 0.0 }
            }),
        ),
        estimate(
            "content-greedy",
            "the feed ranking by the content model's mean instead of a draw; the source as logged".to_owned(),
            evaluate(impressions, |l| l.greedy_propensity.unwrap_or(f64::NAN)),
        ),
    ]
}

impl Forage {
    /// One item with its labels and signal counts.
    pub fn item(&self, id: &str) -> Result<ItemDetail, AppError> {
        let view = {
            let catalog = self.catalog();
            let item = catalog.get_item(id)?.ok_or_else(|| AppError::NotFound(format!("no item `{id}`")))?;
            ItemViews::new(&catalog).view(item)?
        };
        let signals = self.store.item_counts(id)?.0;
        Ok(ItemDetail { item: view, signals })
    }

    /// Full-text search, best match first.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<ItemView>, AppError> {
        if query.trim().is_empty() || query.len() > QUERY_BYTES_MAX {
            return Err(AppError::invalid("q", format!("must be 1..={QUERY_BYTES_MAX} bytes, not blank")));
        }
        if !(1..=SEARCH_LIMIT_MAX).contains(&limit) {
            return Err(AppError::invalid("limit", format!("{limit} is not in 1..={SEARCH_LIMIT_MAX}")));
        }
        let catalog = self.catalog();
        let items = catalog.search(query, limit)?;
        let mut views = ItemViews::new(&catalog);
        Ok(items.into_iter().map(|i| views.view(i)).collect::<Result<_, _>>()?)
    }

    /// Estimates, from the impression logs in Tidal, the reward per impression of other
    /// policies by inverse propensity scoring, with the item-level propensities the feed
    /// logs (see [`crate::bandit::item_choice`]): the logging policy itself, uniform choice
    /// over the slot's candidates, uniform choice over sources, always the best source,
    /// and the feed without content exploration (ranking by the content model's mean).
    pub fn evaluate_policies(&self) -> Result<EvalSummary, AppError> {
        let logs = self.store.read_logs()?;
        let impressions = &logs.impressions;
        let logged_reward = if impressions.is_empty() {
            0.0
        } else {
            impressions.iter().map(|l| l.reward).sum::<f64>() / impressions.len() as f64
        };
        Ok(EvalSummary {
            impressions: impressions.len(),
            truncated: logs.truncated,
            source_level_only: impressions.iter().filter(|l| !l.item_level).count(),
            logged_reward,
            estimates: policy_estimates(impressions),
        })
    }
}
