//! Ranking of candidate items inside the feed: relevance to the user, freshness, the
//! never-show-dismissed rule and the diversity rule across sources.
//!
//! Score = mean cosine similarity to the embeddings of the user's liked items
//!       − mean cosine similarity to the embeddings of the user's rejected items
//!       + [`CONTENT_WEIGHT`] · θ̃·z (the content bandit's draw times the item's features,
//!         see [`crate::bandit::linear`])
//!       + [`FRESHNESS_WEIGHT`] · 0.5^(age / [`FRESHNESS_HALF_LIFE_MS`]).
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

/// An item that may be shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Shared with the caller's index: building candidates allocates no strings.
    pub id: Arc<str>,
    pub source: Arc<str>,
    /// Publication time, ms since the Unix epoch.
    pub published_ms: u64,
    /// L2-normalised sentence embedding, if the item has one (shared with the caller's
    /// index, so building candidates copies no vectors).
    pub embedding: Option<Arc<[f32]>>,
    /// The content bandit's features of the item (see [`crate::bandit::linear`]).
    pub features: Option<Arc<[f32]>>,
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
    /// The content bandit's draw θ̃ for this request, `None` to leave the term out.
    pub content: Option<Vec<f32>>,
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

/// The mean of the comparable vectors of one profile side, per dimension count: the mean
/// similarity of `e` to the side's vectors equals the dot product of `e` with their mean, so
/// ranking costs one dot product per candidate and side however long the profile is.
#[derive(Default)]
struct Centroids {
    by_dims: HashMap<usize, Option<Vec<f32>>>,
}

impl Centroids {
    /// Mean similarity of `e` to the vectors of `side` with the same length (finite ones
    /// only), 0 when there are none.
    fn similarity(&mut self, e: &[f32], side: &[Vec<f32>]) -> f64 {
        let centroid = self.by_dims.entry(e.len()).or_insert_with(|| centroid(side, e.len()));
        let Some(c) = centroid else { return 0.0 };
        let d = dot_f32(e, c);
        if d.is_finite() { f64::from(d) } else { 0.0 }
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

/// Scores the candidates that are not dismissed, keeps the best `keep` (at most
/// [`RANKED_MAX`]) sorted best first (ties: input order), and applies the diversity rule.
/// Selecting before sorting makes a feed that shows a few items of thousands of candidates
/// cost one dot product per candidate and side, not a full sort.
pub fn rank(candidates: Vec<Candidate>, profile: &Profile, now_ms: u64, keep: usize) -> Vec<Ranked> {
    let (mut liked, mut negatives) = (Centroids::default(), Centroids::default());
    let ranked: Vec<Ranked> = candidates
        .into_iter()
        .filter(|c| !profile.dismissed.contains(&*c.id))
        .map(|c| {
            let similarity = c.embedding.as_deref().map_or(0.0, |e| {
                liked.similarity(e, &profile.liked) - negatives.similarity(e, &profile.negatives)
            });
            let content = match (&profile.content, c.features.as_deref()) {
                (Some(theta), Some(z)) if theta.len() == z.len() => f64::from(dot_f32(theta, z)),
                _ => 0.0,
            };
            let content = if content.is_finite() { content } else { 0.0 };
            let freshness = freshness(c.published_ms, now_ms);
            let score = similarity + CONTENT_WEIGHT * content + freshness;
            let score = if score.is_finite() { score } else { 0.0 };
            Ranked { id: c.id, source: c.source, score, similarity, content, freshness }
        })
        .collect();
    let keep = keep.min(RANKED_MAX);
    // Best first; equal scores keep input order (the index breaks ties).
    let order =
        |a: &(usize, Ranked), b: &(usize, Ranked)| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0));
    let mut ranked: Vec<(usize, Ranked)> = ranked.into_iter().enumerate().collect();
    if keep < ranked.len() {
        if keep == 0 {
            return Vec::new();
        }
        ranked.select_nth_unstable_by(keep - 1, order);
        ranked.truncate(keep);
    }
    ranked.sort_by(order);
    ranked.into_iter().map(|(_, r)| r).collect()
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
    embedding: impl Fn(&str) -> Option<&'a Arc<[f32]>>,
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
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn cand(id: &str, source: &str, published_ms: u64, embedding: Option<Vec<f32>>) -> Candidate {
        Candidate {
            id: id.into(),
            source: source.into(),
            published_ms,
            embedding: embedding.map(Arc::from),
            features: None,
        }
    }

    fn ids(items: &[Ranked]) -> Vec<&str> {
        items.iter().map(|r| &*r.id).collect()
    }

    fn sources(items: &[Ranked]) -> String {
        items.iter().map(|r| &*r.source).collect()
    }

    #[test]
    fn similar_to_likes_beats_similar_to_negatives() {
        let profile =
            Profile { liked: vec![vec![1.0, 0.0]], negatives: vec![vec![0.0, 1.0]], ..Default::default() };
        let now = 10 * DAY_MS;
        let out = rank(
            vec![cand("bad", "s", now, Some(vec![0.0, 1.0])), cand("good", "t", now, Some(vec![1.0, 0.0]))],
            &profile,
            now,
            10,
        );
        assert_eq!(&*out[0].id, "good");
        assert!((out[0].score - 2.0).abs() < 1e-9 && (out[1].score - 0.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn fresher_wins_without_embeddings_and_half_life_halves() {
        let now = 10 * DAY_MS;
        let out = rank(
            vec![cand("old", "a", now - DAY_MS, None), cand("new", "b", now, None)],
            &Profile::default(),
            now,
            10,
        );
        assert_eq!(&*out[0].id, "new");
        assert!((out[1].freshness - FRESHNESS_WEIGHT / 2.0).abs() < 1e-9);
        assert_eq!(out[1].similarity, 0.0);
        assert_eq!(freshness(now + DAY_MS, now), FRESHNESS_WEIGHT);
    }

    #[test]
    fn keep_selects_the_best_in_order_with_stable_ties() {
        let now = 10 * DAY_MS;
        let ages = [3u64, 0, 5, 1, 0, 2];
        let candidates = ages
            .iter()
            .enumerate()
            .map(|(i, a)| cand(&i.to_string(), &i.to_string(), now - a * DAY_MS, None))
            .collect();
        let out = rank(candidates, &Profile::default(), now, 3);
        assert_eq!(ids(&out), ["1", "4", "3"]);
        assert!(rank(vec![cand("a", "s", 0, None)], &Profile::default(), 0, 0).is_empty());
    }

    #[test]
    fn lane_dot_matches_plain_dot() {
        for n in [0usize, 1, 7, 8, 9, 384, 390] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_f32(&a, &b) - plain).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn dismissed_items_are_never_returned() {
        let profile = Profile { dismissed: ["x".to_string()].into_iter().collect(), ..Default::default() };
        let out = rank(vec![cand("x", "a", 5, None), cand("y", "a", 1, None)], &profile, 10, 10);
        assert_eq!(out.iter().map(|r| &*r.id).collect::<Vec<_>>(), ["y"]);
    }

    #[test]
    fn mismatched_dimensions_and_nan_do_not_break_ranking() {
        let profile = Profile { liked: vec![vec![1.0, 0.0, 0.0], vec![f32::NAN, 0.0]], ..Default::default() };
        let out = rank(vec![cand("a", "s", 0, Some(vec![1.0, 0.0]))], &profile, 0, 10);
        assert_eq!(out[0].similarity, 0.0);
        assert!(out[0].score.is_finite());
    }

    fn r(id: &str, source: &str) -> Ranked {
        Ranked {
            id: id.into(),
            source: source.into(),
            score: 0.0,
            similarity: 0.0,
            content: 0.0,
            freshness: 0.0,
        }
    }

    #[test]
    fn no_more_than_two_in_a_row_and_stable() {
        let items =
            vec![r("1", "a"), r("2", "a"), r("3", "a"), r("4", "a"), r("5", "b"), r("6", "b"), r("7", "c")];
        let out = diversify_by(items, |x| &*x.source);
        assert_eq!(sources(&out), "aabaabc");
        assert_eq!(out.iter().map(|x| &*x.id).collect::<String>(), "1253467");
    }

    #[test]
    fn separators_are_saved_for_the_dominant_source() {
        // Plain greedy placement spends the others early: "aabcadeaaa".
        let order = [("1", "a"), ("2", "a"), ("3", "b"), ("4", "c"), ("5", "a"), ("6", "d"), ("7", "e")];
        let mut items: Vec<Ranked> = order.iter().map(|(id, s)| r(id, s)).collect();
        items.extend([r("8", "a"), r("9", "a"), r("10", "a")]);
        let out = diversify_by(items, |x| &*x.source);
        let s = sources(&out);
        assert_eq!(s.len(), 10);
        assert!(!s.contains("aaa"), "{s}");
    }

    #[test]
    fn already_diverse_order_is_kept() {
        let items = vec![r("1", "a"), r("2", "b"), r("3", "a"), r("4", "a"), r("5", "b")];
        let out = diversify_by(items.clone(), |x| &*x.source);
        assert_eq!(out, items);
    }

    #[test]
    fn impossible_rest_goes_to_the_end() {
        let items = vec![r("1", "a"), r("2", "a"), r("3", "a"), r("4", "b"), r("5", "a"), r("6", "a")];
        let out = diversify_by(items, |x| &*x.source);
        assert_eq!(sources(&out), "aabaaa");
        assert_eq!(out.len(), 6);
        assert!(diversify_by(Vec::<Ranked>::new(), |x| &*x.source).is_empty());
    }

    #[test]
    fn profile_from_state_takes_the_newest_feedback_and_the_content_term_counts() {
        use tidal::SignalKind;
        let mut state = crate::taste::UserState::default();
        state.apply("liked", &SignalKind::Like, 1);
        state.apply("skipped", &SignalKind::Skip, 2);
        state.apply("unembedded", &SignalKind::Like, 3);
        let vectors: HashMap<&str, Arc<[f32]>> =
            [("liked", Arc::from(vec![1.0f32, 0.0])), ("skipped", Arc::from(vec![0.0f32, 1.0]))]
                .into_iter()
                .collect();
        let mut profile = profile_from_state(&state, |id| vectors.get(id));
        assert_eq!(profile.liked, vec![vec![1.0, 0.0]]);
        assert_eq!(profile.negatives, vec![vec![0.0, 1.0]]);
        let mut near = cand("near", "s", 0, Some(vec![1.0, 0.0]));
        let mut far = cand("far", "s", 0, Some(vec![0.0, 1.0]));
        let out = rank(vec![far.clone(), near.clone()], &profile, 0, 10);
        assert_eq!(ids(&out), ["near", "far"]);
        // A content draw that favours `far` strongly enough turns the order round.
        profile.content = Some(vec![0.0, 3.0]);
        near.features = Some(Arc::from(vec![1.0f32, 0.0]));
        far.features = Some(Arc::from(vec![0.0f32, 1.0]));
        let out = rank(vec![near, far], &profile, 0, 10);
        assert_eq!(ids(&out), ["far", "near"]);
        assert_eq!((out[0].content, out[1].content), (3.0, 0.0));
    }
}
