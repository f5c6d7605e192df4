//! Item reads of the app: one item with its signal counts, full-text search, and offline
//! evaluation of bandit policies from the impression logs.

use std::collections::{BTreeMap, HashMap};

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
    pub ips: f64,
    pub snips: f64,
    pub n: usize,
    pub effective_sample_size: f64,
}

/// What `forage eval` reports.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalSummary {
    pub impressions: usize,
    pub truncated: bool,
    /// The logging policy's own reward per impression (the baseline).
    pub logged_reward: f64,
    pub estimates: Vec<PolicyEstimate>,
}

fn estimate(policy: &str, report: EvalReport) -> PolicyEstimate {
    PolicyEstimate {
        policy: policy.to_owned(),
        ips: report.ips,
        snips: report.snips,
        n: report.n,
        effective_sample_size: report.effective_sample_size,
    }
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
    /// policies by inverse propensity scoring: `uniform` (every arm alike), `greedy` (the
    /// arm with the best logged reward rate only) and the logging policy itself.
    pub fn evaluate_policies(&self) -> Result<EvalSummary, AppError> {
        let logs = self.store.read_logs()?;
        let impressions = &logs.impressions;
        let logged_reward = if impressions.is_empty() {
            0.0
        } else {
            impressions.iter().map(|l| l.reward).sum::<f64>() / impressions.len() as f64
        };
        let mut by_arm: HashMap<&str, (f64, f64)> = HashMap::new();
        for l in impressions {
            let e = by_arm.entry(l.arm.as_str()).or_insert((0.0, 0.0));
            e.0 += l.reward;
            e.1 += 1.0;
        }
        let arms = by_arm.len().max(1) as f64;
        let best = by_arm
            .iter()
            .max_by(|a, b| (a.1.0 / a.1.1).total_cmp(&(b.1.0 / b.1.1)).then(b.0.cmp(a.0)))
            .map(|(arm, _)| (*arm).to_owned());
        let uniform = evaluate(impressions, |_| 1.0 / arms);
        let greedy =
            evaluate(impressions, |l: &LoggedImpression| f64::from(best.as_deref() == Some(l.arm.as_str())));
        let logging = evaluate(impressions, |l| l.propensity);
        Ok(EvalSummary {
            impressions: impressions.len(),
            truncated: logs.truncated,
            logged_reward,
            estimates: vec![
                estimate("thompson (logging)", logging),
                estimate("uniform", uniform),
                estimate("greedy", greedy),
            ],
        })
    }
}
