//! Ranking of candidate items inside the feed: relevance to the user, freshness, the
//! never-show-dismissed rule and the diversity rule across sources.
//!
//! Score = mean cosine similarity to the embeddings of the user's liked items
//!       − mean cosine similarity to the embeddings of the user's rejected items
//!       + [`CONTENT_WEIGHT`] · θ̃·z (the content bandit's draw times the item's features,
//!         see [`crate::bandit::linear`])
//!       + [`FRESHNESS_WEIGHT`] · 0.5^(age / [`FRESHNESS_HALF_LIFE_MS`]).
//!
//! Cost: every term but freshness is linear in the item's embedding `e`. The two mean
//! similarities are `e·c₊ − e·c₋` with the sides' centroids, and with `z = [P e; 1]` the
//! content term is `(Pᵀθ̃)·e + θ̃_bias` ([`ContentDraw`]). A [`Scorer`] folds all three into
//! one query vector `q = c₊ − c₋ + w·Pᵀθ̃` once per request, so a candidate costs one dot
//! product with its embedding, read in place from the index's slab, and no allocation.
//! Reading 384 floats per candidate is what bounds the time (memory traffic, not
//! arithmetic), so [`rank`] works in two passes: the first scores every candidate on its
//! [`crate::bandit::linear::DIMS`] features with `q₆₄ = [P(c₊ − c₋); 0] + w·θ̃` (the
//! content term exactly, the taste terms through the random projection, which keeps inner
//! products up to a small error), the second rescores the best [`SHORTLIST_PER_KEPT`] per
//! kept item (at least [`SHORTLIST_MIN`]) exactly on the embeddings and keeps the best of
//! those. So the order of what is shown is the exact score's; only the shortlist comes from
//! the approximation (`rank_tests` checks that it finds the exact best items). The parts
//! of the score are computed for the kept items only.
//!
//! The profile ([`profile_from_state`]) takes the newest [`PROFILE_EMBEDDINGS_MAX`] liked
//! and rejected items of the user's remembered state (`crate::taste`), by the time of the
//! feedback.
//!
//! Invariants:
//! * a dismissed item (a Tidal hard negative of the user, or any id in the caller's exclude
//!   set) is never returned;
//! * embeddings are L2-normalised, so cosine similarity is a dot product; a missing
//!   embedding, an empty profile side, or vectors of different dimensions contribute 0;
//!   non-finite scores become 0, so sorting is total;
//! * after [`diversify_with`], no more than the rule's run of items in a row share a
//!   source, except in the tail that cannot be arranged so (see there); [`rank`] itself
//!   orders one source's candidates by score only (the rule applies to the whole page).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::bandit::linear::{DIMS, Projection};

/// Weight of the freshness term (its value for an item published now).
pub const FRESHNESS_WEIGHT: f64 = 1.0;
/// Age at which the freshness term has halved: one day.
pub const FRESHNESS_HALF_LIFE_MS: f64 = 24.0 * 3600.0 * 1000.0;
/// Most items of one source allowed in a row by default ([`Diversity::default`]).
pub const SAME_SOURCE_RUN_MAX: usize = 2;

/// The diversity rule across sources: at most `same_source_run_max` items of one source in
/// a row, hence at most `⌊run·(n+1)/(run+1)⌋` of a page of `n` from one source while other
/// sources have items (7 of 10 with the default run of 2); `None` turns the rule off (a
/// page may then come from one source alone). Configurable with `forage serve --diversity-run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diversity {
    pub same_source_run_max: Option<usize>,
}

impl Default for Diversity {
    fn default() -> Self {
        Diversity { same_source_run_max: Some(SAME_SOURCE_RUN_MAX) }
    }
}

impl Diversity {
    /// No rule.
    pub const OFF: Diversity = Diversity { same_source_run_max: None };

    /// Most of `slots` one source may fill while others have items.
    pub fn share_max(&self, slots: usize) -> usize {
        match self.same_source_run_max {
            Some(run) if run > 0 => ((run * (slots + 1)) / (run + 1)).min(slots),
            _ => slots,
        }
    }
}
/// Most items [`rank`] returns (the best ones); bounds the quadratic diversity pass.
pub const RANKED_MAX: usize = 10_000;
/// Most liked or negative embeddings a profile keeps (the most recent ones).
pub const PROFILE_EMBEDDINGS_MAX: usize = 256;
/// Weight of the content bandit's term (its draw estimates a like-probability in 0..1).
pub const CONTENT_WEIGHT: f64 = 1.0;
/// Candidates the first (feature) pass passes on to exact scoring, per item kept.
pub const SHORTLIST_PER_KEPT: usize = 8;
/// Fewest candidates the first pass passes on; with fewer candidates there is one pass.
pub const SHORTLIST_MIN: usize = 200;

/// An item that may be shown, borrowed from the caller's index: ranking copies no ids and
/// no vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a Arc<str>,
    /// Publication time, ms since the Unix epoch.
    pub published_ms: u64,
    /// L2-normalised sentence embedding, if the item has one.
    pub embedding: Option<&'a [f32]>,
    /// The embedding's content-bandit features (see [`crate::bandit::linear`]).
    pub features: Option<&'a [f32]>,
}

/// The content bandit's draw θ̃ pulled back to the embedding space: for an item with
/// embedding `e` and features `z = project(e)`, `θ̃·z = direction·e + bias`
/// ([`crate::bandit::linear::Projection::pull_back`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContentDraw {
    /// θ̃ itself, over the features.
    pub theta: Vec<f32>,
    pub direction: Vec<f32>,
    pub bias: f64,
}

/// What the ranker knows about the user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Embeddings of items the user liked.
    pub liked: Vec<Vec<f32>>,
    /// Embeddings of the user's hard negatives.
    pub negatives: Vec<Vec<f32>>,
    /// Ids never to show (the caller usually filters before ranking; this is a backstop).
    pub dismissed: HashSet<String>,
    /// The content bandit's draw for this request, `None` to leave the term out.
    pub content: Option<ContentDraw>,
}

/// A ranked item with the parts of its score.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub id: Arc<str>,
    pub source: Arc<str>,
    pub score: f64,
    /// Mean similarity to liked items minus mean similarity to hard negatives.
    pub similarity: f64,
    /// The content bandit's term θ̃·z (before [`CONTENT_WEIGHT`]).
    pub content: f64,
    pub freshness: f64,
}

/// A profile folded into one query vector for embeddings of `dims` dimensions (see the
/// module docs). Vectors of the profile with another length are left out; candidates with
/// another length score as unembedded.
#[derive(Clone, Debug)]
pub struct Scorer<'p> {
    dims: usize,
    /// `c₊ − c₋`.
    taste: Vec<f32>,
    /// `Pᵀθ̃` and `θ̃_bias`, zero without a draw.
    content: Vec<f32>,
    content_bias: f64,
    /// `taste + CONTENT_WEIGHT · content`.
    query: Vec<f32>,
    bias: f64,
    /// The first pass's `q₆₄` (see the module docs), `None`: one exact pass.
    features_query: Option<Vec<f32>>,
    dismissed: &'p HashSet<String>,
}

impl<'p> Scorer<'p> {
    /// A scorer for embeddings of `dims` dimensions whose features come from `projection`
    /// (`None`: no first pass, every candidate is scored exactly).
    pub fn new(profile: &'p Profile, dims: usize, projection: Option<&Projection>) -> Scorer<'p> {
        let mut taste = centroid(&profile.liked, dims).unwrap_or_else(|| vec![0.0; dims]);
        if let Some(neg) = centroid(&profile.negatives, dims) {
            taste.iter_mut().zip(neg).for_each(|(t, n)| *t -= n);
        }
        let (content, content_bias) = match &profile.content {
            Some(d) if d.direction.len() == dims && d.direction.iter().all(|x| x.is_finite()) => {
                (d.direction.clone(), if d.bias.is_finite() { d.bias } else { 0.0 })
            }
            _ => (vec![0.0; dims], 0.0),
        };
        let w = CONTENT_WEIGHT as f32;
        let query = taste.iter().zip(&content).map(|(t, c)| t + w * c).collect();
        let bias = CONTENT_WEIGHT * content_bias;
        let features_query = projection.filter(|p| p.input_dims() == dims).and_then(|p| {
            let mut q = p.project(&taste)?;
            q[DIMS - 1] = 0.0;
            match &profile.content {
                Some(d) if d.theta.len() == DIMS && d.theta.iter().all(|x| x.is_finite()) => {
                    q.iter_mut().zip(&d.theta).for_each(|(q, t)| *q += CONTENT_WEIGHT as f32 * t);
                }
                _ => {}
            }
            Some(q)
        });
        Scorer {
            dims,
            taste,
            content,
            content_bias,
            query,
            bias,
            features_query,
            dismissed: &profile.dismissed,
        }
    }

    /// The first pass's score of `c`: on its features when it has some, else exact.
    #[inline]
    fn rough_score(&self, q: &[f32], c: &Candidate<'_>, now_ms: u64) -> f64 {
        match c.features.filter(|z| z.len() == DIMS) {
            Some(z) => {
                let score = f64::from(dot_f32(q, z)) + freshness(c.published_ms, now_ms);
                if score.is_finite() { score } else { 0.0 }
            }
            None => self.score(c, now_ms),
        }
    }

    /// The embedding of `c` if it can be scored.
    fn embedding<'c>(&self, c: &Candidate<'c>) -> Option<&'c [f32]> {
        c.embedding.filter(|e| e.len() == self.dims && self.dims > 0)
    }

    /// The whole score of `c` (one dot product).
    #[inline]
    fn score(&self, c: &Candidate<'_>, now_ms: u64) -> f64 {
        let linear = self.embedding(c).map_or(0.0, |e| f64::from(dot_f32(&self.query, e)) + self.bias);
        let linear = if linear.is_finite() { linear } else { 0.0 };
        let score = linear + freshness(c.published_ms, now_ms);
        if score.is_finite() { score } else { 0.0 }
    }

    /// `c` with the parts of its score.
    fn ranked(&self, c: &Candidate<'_>, source: &Arc<str>, now_ms: u64) -> Ranked {
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let (similarity, content) = self.embedding(c).map_or((0.0, 0.0), |e| {
            let content = f64::from(dot_f32(&self.content, e)) + self.content_bias;
            (finite(f64::from(dot_f32(&self.taste, e))), finite(content))
        });
        let freshness = freshness(c.published_ms, now_ms);
        let score = finite(similarity + CONTENT_WEIGHT * content + freshness);
        Ranked { id: c.id.clone(), source: source.clone(), score, similarity, content, freshness }
    }
}

/// Dot product of two equally long f32 slices, summed in eight lanes so the compiler can
/// vectorise it (a plain `sum()` must add in order, one dependent add per element: about
/// 8x slower on 384 dims). Unit vectors lose nothing that matters to ranking in f32.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn centroid(side: &[Vec<f32>], dims: usize) -> Option<Vec<f32>> {
    if dims == 0 {
        return None;
    }
    let mut sum = vec![0.0f64; dims];
    let mut n = 0usize;
    for v in side.iter().filter(|v| v.len() == dims && v.iter().all(|x| x.is_finite())) {
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += f64::from(*x));
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|s| (s / n as f64) as f32).collect())
}

/// The freshness term for an item published at `published_ms`, seen at `now_ms` (items from
/// the future count as published now).
pub fn freshness(published_ms: u64, now_ms: u64) -> f64 {
    let age_ms = now_ms.saturating_sub(published_ms) as f64;
    FRESHNESS_WEIGHT * 0.5f64.powf(age_ms / FRESHNESS_HALF_LIFE_MS)
}

/// Scores the candidates (of one `source`) that are not dismissed, keeps the best `keep`
/// (at most [`RANKED_MAX`]) sorted best first (ties: input order), and returns them with
/// the parts of their scores. Selecting (`select_nth_unstable`) before sorting makes a
/// feed that shows a few items of thousands of candidates cost one dot product per
/// candidate plus a sort of the few kept, and only the kept become [`Ranked`] values.
pub fn rank(
    candidates: &[Candidate<'_>],
    source: &Arc<str>,
    scorer: &Scorer<'_>,
    now_ms: u64,
    keep: usize,
) -> Vec<Ranked> {
    rank_with_pool(candidates, source, scorer, now_ms, keep, 0).0
}

/// [`rank`], and the best `pool` candidates (at least the kept ones, at most the exactly
/// scored shortlist) as `(exact score, index in candidates)`, best first: the competitors of
/// the item-level propensity estimate ([`crate::bandit::item_choice`]). The kept items are
/// the pool's first ones, in the same order.
pub fn rank_with_pool(
    candidates: &[Candidate<'_>],
    source: &Arc<str>,
    scorer: &Scorer<'_>,
    now_ms: u64,
    keep: usize,
    pool: usize,
) -> (Vec<Ranked>, Vec<(f64, u32)>) {
    let keep = keep.min(RANKED_MAX);
    if keep == 0 {
        return (Vec::new(), Vec::new());
    }
    let check = !scorer.dismissed.is_empty();
    let allowed = |c: &Candidate<'_>| !check || !scorer.dismissed.contains(&**c.id);
    let shortlist = (keep * SHORTLIST_PER_KEPT).max(SHORTLIST_MIN);
    let mut scored: Vec<(f64, u32)> = match &scorer.features_query {
        Some(q) if candidates.len() > shortlist => {
            let mut rough: Vec<(f64, u32)> = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| allowed(c))
                .map(|(i, c)| (scorer.rough_score(q, c, now_ms), i as u32))
                .collect();
            select_best(&mut rough, shortlist);
            rough.into_iter().map(|(_, i)| (scorer.score(&candidates[i as usize], now_ms), i)).collect()
        }
        _ => candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| allowed(c))
            .map(|(i, c)| (scorer.score(c, now_ms), i as u32))
            .collect(),
    };
    select_best(&mut scored, keep.max(pool));
    scored.sort_unstable_by(best_first);
    let ranked = scored
        .iter()
        .take(keep)
        .map(|&(_, i)| scorer.ranked(&candidates[i as usize], source, now_ms))
        .collect();
    (ranked, scored)
}

/// Best first; equal scores keep input order (the index breaks ties).
fn best_first(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `keep` of `scored` (in no particular order), `keep` > 0.
fn select_best(scored: &mut Vec<(f64, u32)>, keep: usize) {
    if keep < scored.len() {
        scored.select_nth_unstable_by(keep - 1, best_first);
        scored.truncate(keep);
    }
}

/// Reorders `items` so that no more than [`SAME_SOURCE_RUN_MAX`] in a row share a source,
/// otherwise keeping their order: each position takes the earliest remaining item that does
/// not extend a too-long run, unless the source with the most items left needs this
/// position (with `o` other items left, `r` items of one source fit only if
/// `r <= SAME_SOURCE_RUN_MAX * (o + 1)`; spending a separator now must keep that true).
/// When no remaining item can be placed (every one is from the source of the current run),
/// the rest is appended in its order: the rule then fails only in that tail, and no item is
/// ever dropped.
pub fn diversify_by<T>(items: Vec<T>, source: impl Fn(&T) -> &str) -> Vec<T> {
    diversify_with(items, SAME_SOURCE_RUN_MAX, source)
}

/// [`diversify_by`] with runs of at most `run_max` (0 or more items than there are: no-op).
pub fn diversify_with<T>(items: Vec<T>, run_max: usize, source: impl Fn(&T) -> &str) -> Vec<T> {
    if run_max == 0 || run_max >= items.len() {
        return items;
    }
    let mut left: HashMap<String, usize> = HashMap::new();
    for t in &items {
        *left.entry(source(t).to_owned()).or_insert(0) += 1;
    }
    let mut pending: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut out: Vec<T> = Vec::with_capacity(pending.len());
    let mut start = 0;
    while start < pending.len() {
        let blocked: Option<String> = run_source(&out, run_max, &source);
        let need =
            needy_source(&left, pending.len() - out.len(), run_max).filter(|d| blocked.as_deref() != Some(d));
        let allowed = |t: &T| match &need {
            Some(d) => source(t) == d,
            None => blocked.as_deref() != Some(source(t)),
        };
        let pick = pending[start..].iter().position(|p| p.as_ref().is_some_and(allowed)).map(|i| start + i);
        let Some(i) = pick else {
            out.extend(pending.drain(start..).flatten());
            break;
        };
        if let Some(t) = pending[i].take() {
            if let Some(n) = left.get_mut(source(&t)) {
                *n -= 1;
            }
            out.push(t);
        }
        while start < pending.len() && pending[start].is_none() {
            start += 1;
        }
    }
    out
}

/// The source that must take the next position: the one with the most items left, when
/// placing any other item now would leave it more items than the other items can separate.
fn needy_source(left: &HashMap<String, usize>, remaining: usize, run_max: usize) -> Option<String> {
    let (dominant, r) = left.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    let others = remaining - r;
    (*r > run_max * others && others > 0).then(|| dominant.clone())
}

/// The source the next item must not have: the source of the last `run_max` items when
/// they all share it.
fn run_source<T>(out: &[T], run_max: usize, source: &impl Fn(&T) -> &str) -> Option<String> {
    let tail = out.get(out.len().checked_sub(run_max)?..)?;
    let first = source(tail.first()?);
    tail.iter().all(|t| source(t) == first).then(|| first.to_owned())
}

/// The profile of a user from their remembered state: the embeddings of their newest
/// [`PROFILE_EMBEDDINGS_MAX`] liked and rejected items (by the time of the feedback; items
/// without an embedding are left out). `embedding` looks an item's embedding up.
pub fn profile_from_state<'a>(
    state: &crate::taste::UserState,
    embedding: impl Fn(&str) -> Option<&'a [f32]>,
) -> Profile {
    let side = |set: &crate::taste::RecencySet| -> Vec<Vec<f32>> {
        set.newest_first()
            .filter_map(|id| embedding(id))
            .take(PROFILE_EMBEDDINGS_MAX)
            .map(|e| e.to_vec())
            .collect()
    };
    Profile { liked: side(&state.liked), negatives: side(&state.rejected), ..Profile::default() }
}

#[cfg(test)]
#[path = "rank_tests.rs"]
mod tests;
