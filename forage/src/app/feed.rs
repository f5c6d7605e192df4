//! The feed: candidates per source from the in-memory index (minus everything the user
//! was already shown: the seen state of `app::users`), ranked inside each source
//! ([`crate::rank`], with the user's taste and the content bandit's draw), slots allocated
//! across sources by Thompson sampling ([`crate::bandit::plan_feed`]), every shown item's
//! item-level propensity estimated ([`crate::bandit::item_choice`], over the best
//! candidates of its source), every shown item logged to Tidal as an impression with its
//! propensities and the page's context id, then marked seen.
//!
//! Paging: a page's `next_cursor` is its context id (`app::contexts`); an unknown or
//! forgotten cursor is [`AppError::Gone`] (HTTP 410). When no unseen item is left, the page
//! says so (`exhausted`) instead of showing old items again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;
use serde::Serialize;

use super::contexts::{CONTEXT_ITEMS_MAX, CursorError};
use super::index::{CandidateIndex, IndexHandle};
use super::users::{self, UserEntry};
use super::views::{ItemView, ItemViews};
use super::{AppError, Forage};
use crate::bandit::item_choice::{self, CONTENT_DRAWS, ContentDraws};
use crate::bandit::{self, ArmCandidates, ItemLevel};
use crate::rank::{self, Candidate};

/// Items on a page unless the request says otherwise.
pub const LIMIT_DEFAULT: usize = 20;
/// Most items on one page.
pub const LIMIT_MAX: usize = 100;
/// Most ids in a request's exclude list.
pub const EXCLUDE_MAX: usize = 1000;
/// Candidates ranked per source (its newest unseen items): bounds a request's work however
/// large the catalog grows; older items have little freshness left anyway.
pub const CANDIDATES_PER_ARM_MAX: usize = 2000;
/// Name of the feed's policy in the impressions' `policy` attribute: Thompson sampling over
/// sources, linear Thompson sampling over content inside each source.
pub const POLICY_FEED: &str = "thompson+lints";

/// A feed request.
#[derive(Clone, Debug, Default)]
pub struct FeedRequest {
    pub user: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub label: Option<i64>,
    pub source: Option<i64>,
    pub exclude: Vec<String>,
    /// Rank and plan a page without logging it or marking its items seen (the demo's
    /// terminal preview): nothing is written, so nothing counts as shown.
    pub preview: bool,
}

/// One item of a feed page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FeedItem {
    #[serde(flatten)]
    pub item: ItemView,
    pub position: u32,
    /// Probability that the slot went to the item's source.
    pub propensity: f64,
    /// Probability that the slot went to this item (see [`crate::bandit::item_choice`]).
    pub item_propensity: f64,
    pub score: f64,
    /// The bandit arm (source id) the slot went to.
    pub arm: String,
}

/// A feed page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FeedPage {
    pub context: String,
    pub items: Vec<FeedItem>,
    pub next_cursor: Option<String>,
    /// No unseen item is left for this request (its filters applied): the page is short or
    /// empty, and showing more needs new items (a refresh, another source).
    pub exhausted: bool,
    /// Items the user has been shown so far (over all pages).
    pub seen: usize,
}

fn check_request(req: &FeedRequest) -> Result<usize, AppError> {
    let limit = req.limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(AppError::invalid("limit", format!("{limit} is not in 1..={LIMIT_MAX}")));
    }
    if req.exclude.len() > EXCLUDE_MAX {
        return Err(AppError::invalid(
            "exclude",
            format!("{} ids, at most {EXCLUDE_MAX}", req.exclude.len()),
        ));
    }
    if let Some(bad) = req.exclude.iter().find(|id| id.is_empty() || id.len() > tidal::signal::ID_BYTES_MAX) {
        return Err(AppError::invalid("exclude", format!("bad item id {bad:?}")));
    }
    Ok(limit)
}

impl Forage {
    /// One feed page for a user (see the module docs).
    pub fn feed(&self, req: &FeedRequest) -> Result<FeedPage, AppError> {
        let started = std::time::Instant::now();
        let limit = check_request(req)?;
        let user = self.user_or_default(req.user.as_deref())?.to_owned();
        let handle = self.candidate_index()?;
        let allowed = self.filter_set(req)?;
        let exclude: HashSet<&str> = req.exclude.iter().map(String::as_str).collect();
        let entry = self.users.get(&user, self.store.as_ref())?;
        // Held until the page is logged and marked seen (see `app::users`).
        let mut entry = users::lock(&entry);
        let (context, start, slots) = if req.preview {
            ("preview".to_owned(), 0, limit)
        } else {
            self.open_context(req.cursor.as_deref(), &user, limit)?
        };
        let t_open = started.elapsed();
        let now = super::now_ms().max(0) as u64;
        let filter = Filter { source: req.source, allowed: allowed.as_ref(), exclude: &exclude };
        let (ranked, draws) = {
            // One read guard at a time, never held while taking the catalog (`app::index`).
            let index = handle.read();
            let (profile, draws) = self.profile(&mut entry, &index);
            (arm_candidates(&index, slots, &filter, &mut entry, &profile, now), draws)
        };
        let t_rank = started.elapsed();
        let arm_names: Vec<&str> = ranked.arms.iter().map(|a| a.arm.as_str()).collect();
        let posteriors = bandit::read_posteriors(self.store.as_ref(), &user, &arm_names)?;
        let (mut shown, allocation) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let rule = self.config.diversity;
            bandit::plan_feed_allocated(&ranked.arms, &posteriors, slots, rule, &mut *rng)
        };
        for s in &mut shown {
            s.position += start;
        }
        let t_plan = started.elapsed();
        estimate_item_levels(&handle.read(), &ranked, &allocation, &draws, &mut shown);
        let t_items = started.elapsed();
        if req.preview {
            drop(entry);
            let items = self.feed_items(&shown, &ranked.scores)?;
            return Ok(FeedPage { context, items, next_cursor: None, exhausted: false, seen: 0 });
        }
        bandit::log_impressions(self.store.as_ref(), &user, &context, POLICY_FEED, &shown)?;
        let t_log = started.elapsed();
        for s in &shown {
            entry.apply(&s.item, &tidal::SignalKind::Impression, now);
            self.contexts.note(&context, &user, s.position);
        }
        entry.fold_pending(&handle.read());
        let seen = entry.state.shown_count();
        drop(entry);
        let exhausted = ranked.unseen_left_after(shown.len()) == Some(0);
        let next_position = start + slots as u32;
        let more = shown.len() == limit && !exhausted && (next_position as usize) < CONTEXT_ITEMS_MAX;
        let items = self.feed_items(&shown, &ranked.scores)?;
        let elapsed = started.elapsed();
        tracing::debug!(
            open_us = t_open.as_micros() as u64,
            rank_us = (t_rank - t_open).as_micros() as u64,
            plan_us = (t_plan - t_rank).as_micros() as u64,
            item_propensity_us = (t_items - t_plan).as_micros() as u64,
            log_us = (t_log - t_items).as_micros() as u64,
            items_us = (elapsed - t_log).as_micros() as u64,
            "feed page built"
        );
        self.metrics.feed(elapsed);
        Ok(FeedPage { next_cursor: more.then(|| context.clone()), context, items, exhausted, seen })
    }

    /// The user's taste profile, this request's content-bandit draw, and the extra draws
    /// behind the item-level propensities (from their own generator, so that estimating
    /// them never changes what the page shows).
    fn profile(&self, entry: &mut UserEntry, index: &CandidateIndex) -> (rank::Profile, ContentDraws) {
        entry.fold_pending(index);
        let mut profile = rank::profile_from_state(&entry.state, |id| index.embedding(id));
        let Some(projection) = index.projection() else { return (profile, ContentDraws::default()) };
        let posterior = entry.model.posterior();
        if self.config.content_bandit {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let theta = posterior.sample(&mut *rng, self.config.exploration);
            profile.content = projection.pull_back(&theta);
        }
        let logged = profile.content.as_ref().map(|d| d.theta.as_slice());
        let mut rng = self.propensity_rng.lock().unwrap_or_else(|p| p.into_inner());
        let draws = ContentDraws::new(posterior, logged, &mut *rng, self.config.exploration, CONTENT_DRAWS);
        (profile, draws)
    }

    /// The context a request continues (its cursor) or a new one, with the first position
    /// and the number of slots reserved for this page.
    fn open_context(
        &self,
        cursor: Option<&str>,
        user: &str,
        limit: usize,
    ) -> Result<(String, u32, usize), AppError> {
        match cursor {
            Some(cursor) => {
                let (start, slots) =
                    self.contexts.reserve(cursor, user, limit).map_err(|CursorError::Expired| {
                        AppError::Gone(format!(
                            "cursor `{cursor}` is unknown or expired; request a new feed without one"
                        ))
                    })?;
                Ok((cursor.to_owned(), start, slots))
            }
            None => {
                let id = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random::<u64>();
                let context = format!("ctx-{id:016x}");
                let slots = limit.min(CONTEXT_ITEMS_MAX);
                self.contexts.start(&context, user, slots);
                Ok((context, 0, slots))
            }
        }
    }

    /// The candidate index, caught up with the catalog (see `app::index`).
    pub(crate) fn candidate_index(&self) -> Result<IndexHandle, AppError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        Ok(self.index.get(generation, &self.index_source, &self.catalog)?)
    }

    /// The ids a label filter allows (`None`: no label filter).
    fn filter_set(&self, req: &FeedRequest) -> Result<Option<HashSet<String>>, AppError> {
        let Some(label) = req.label else { return Ok(None) };
        let catalog = self.catalog();
        if catalog.get_label(label)?.is_none() {
            return Err(AppError::NotFound(format!("no label {label}")));
        }
        Ok(Some(catalog.items_with_label(label)?))
    }

    fn feed_items(
        &self,
        shown: &[bandit::Shown],
        scores: &HashMap<String, f64>,
    ) -> Result<Vec<FeedItem>, AppError> {
        let catalog = self.catalog();
        let mut views = ItemViews::new(&catalog);
        let ids: Vec<&str> = shown.iter().map(|s| s.item.as_str()).collect();
        let by_id: HashMap<String, ItemView> =
            views.by_ids(&ids)?.into_iter().map(|v| (v.id.clone(), v)).collect();
        Ok(shown
            .iter()
            .filter_map(|s| {
                let item = by_id.get(&s.item)?.clone();
                Some(FeedItem {
                    item,
                    position: s.position,
                    propensity: s.propensity,
                    item_propensity: s.item_level.map_or(s.propensity, |l| l.propensity),
                    score: scores.get(&s.item).copied().unwrap_or(0.0),
                    arm: s.source.clone(),
                })
            })
            .collect())
    }
}

/// Which candidates a request may see besides the user's seen items.
#[derive(Clone, Copy)]
struct Filter<'a> {
    /// Only this source.
    source: Option<i64>,
    /// Only these items (a label filter).
    allowed: Option<&'a HashSet<String>>,
    /// Not these items (the request's exclude list).
    exclude: &'a HashSet<&'a str>,
}

/// The ranked candidates of every source that has some.
struct ArmsRanked {
    arms: Vec<ArmCandidates>,
    /// Per arm, in the same order: its best candidates as `(exact score, freshness, item
    /// number)`, best first, for the item-level propensities ([`item_choice`]).
    pools: Vec<Vec<(f64, f64, u32)>>,
    /// Candidates ranked over all arms.
    candidates: usize,
    scores: HashMap<String, f64>,
    /// Unseen candidates found, `None` when some source had more than were ranked.
    unseen: Option<usize>,
}

impl ArmsRanked {
    /// Unseen candidates left once `shown` of them are shown (`None`: many).
    fn unseen_left_after(&self, shown: usize) -> Option<usize> {
        self.unseen.map(|n| n.saturating_sub(shown))
    }
}

/// The ranked candidates of every source that has unseen ones, and every candidate's score.
/// The user's touched bits are brought up to the index first, so a clear bit proves an
/// item is not hidden and only touched items cost a lookup in the user's state.
fn arm_candidates(
    index: &CandidateIndex,
    slots: usize,
    filter: &Filter<'_>,
    entry: &mut UserEntry,
    profile: &rank::Profile,
    now_ms: u64,
) -> ArmsRanked {
    let mut out = ArmsRanked {
        arms: Vec::new(),
        pools: Vec::new(),
        candidates: 0,
        scores: HashMap::new(),
        unseen: Some(0),
    };
    let UserEntry { state, touched, .. } = entry;
    touched.sync(state, index);
    let scorer = rank::Scorer::new(profile, index.dims(), index.projection());
    // One buffer for every source: candidates borrow ids and vectors from the index.
    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(CANDIDATES_PER_ARM_MAX + 1);
    let mut candidate_numbers: Vec<u32> = Vec::with_capacity(CANDIDATES_PER_ARM_MAX + 1);
    for (source_id, numbers) in index.sources() {
        if filter.source.is_some_and(|s| s != source_id) {
            continue;
        }
        candidates.clear();
        candidate_numbers.clear();
        for &n in numbers {
            let id = index.id(n);
            if (touched.may_hide(n) && state.is_hidden(id))
                || (!filter.exclude.is_empty() && filter.exclude.contains(&**id))
                || filter.allowed.is_some_and(|a| !a.contains(&**id))
            {
                continue;
            }
            let published_ms = index.time_ms(n).max(0) as u64;
            candidates.push(Candidate {
                id,
                published_ms,
                embedding: index.row(n),
                features: index.feature_row(n),
            });
            candidate_numbers.push(n);
            if candidates.len() > CANDIDATES_PER_ARM_MAX {
                break;
            }
        }
        out.unseen = match out.unseen {
            Some(n) if candidates.len() <= CANDIDATES_PER_ARM_MAX => Some(n + candidates.len()),
            _ => None,
        };
        if candidates.is_empty() {
            continue;
        }
        candidates.truncate(CANDIDATES_PER_ARM_MAX);
        out.candidates += candidates.len();
        let arm: Arc<str> = Arc::from(source_id.to_string());
        let pool = item_choice::pool_size(slots);
        let (ranked, pool) = rank::rank_with_pool(&candidates, &arm, &scorer, now_ms, slots, pool);
        let entry = |(s, i): (f64, u32)| {
            (s, rank::freshness(candidates[i as usize].published_ms, now_ms), candidate_numbers[i as usize])
        };
        out.pools.push(pool.into_iter().map(entry).collect());
        let items = ranked.iter().map(|r| r.id.to_string()).collect();
        // Freshness is left out of the slot offsets: it says when, not how good.
        let scores = ranked.iter().map(|r| r.score - r.freshness).collect();
        out.scores.extend(ranked.into_iter().map(|r| (r.id.to_string(), r.score)));
        out.arms.push(ArmCandidates { arm: arm.to_string(), items, scores });
    }
    out
}

/// Sets every shown item's item-level decision ([`crate::bandit::item_choice`]): the
/// probability of the item for its slot (and within its source), the candidates left at
/// its step, and the content-greedy policy's probability of it. An arm's `k`-th item on the
/// page is its pool's `k`-th entry (the pool starts with the kept items, in order).
fn estimate_item_levels(
    index: &CandidateIndex,
    ranked: &ArmsRanked,
    allocation: &bandit::Allocation,
    draws: &ContentDraws,
    shown: &mut [bandit::Shown],
) {
    let pools: Vec<item_choice::ArmPool<'_>> = ranked
        .pools
        .iter()
        .map(|pool| item_choice::ArmPool {
            scores: pool.iter().map(|e| e.0).collect(),
            freshness: pool.iter().map(|e| e.1).collect(),
            features: pool.iter().map(|e| index.feature_row(e.2)).collect(),
        })
        .collect();
    let estimates = item_choice::item_propensities(&pools, allocation, draws);
    for s in shown {
        let Some(e) = estimates.get(s.step as usize) else { continue };
        debug_assert_eq!(
            ranked
                .pools
                .get(allocation.choices[s.step as usize].arm)
                .and_then(|p| p.get(s.rank as usize))
                .map(|e| &**index.id(e.2)),
            Some(s.item.as_str())
        );
        s.item_level = Some(ItemLevel {
            propensity: e.propensity,
            within: e.within,
            candidates: ranked.candidates.saturating_sub(s.step as usize).try_into().unwrap_or(u32::MAX),
            greedy: e.greedy,
        });
    }
}
