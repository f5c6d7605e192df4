//! The feed: candidates per source from the in-memory index (minus everything the user
//! was already shown: the seen state of `app::users`), ranked inside each source
//! ([`crate::rank`], with the user's taste and the content bandit's draw), slots allocated
//! across sources by Thompson sampling ([`crate::bandit::plan_feed`]), every shown item
//! logged to Tidal as an impression with its propensity and the page's context id, then
//! marked seen.
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
use crate::bandit::{self, ArmCandidates};
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
    pub propensity: f64,
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
        let ranked = {
            // One read guard at a time, never held while taking the catalog (`app::index`).
            let index = handle.read();
            let profile = self.profile(&mut entry, &index);
            arm_candidates(&index, slots, &filter, &mut entry, &profile, now)
        };
        let t_rank = started.elapsed();
        let arm_names: Vec<&str> = ranked.arms.iter().map(|a| a.arm.as_str()).collect();
        let posteriors = bandit::read_posteriors(self.store.as_ref(), &user, &arm_names)?;
        let mut shown = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let rule = self.config.diversity;
            bandit::plan_feed_with(&ranked.arms, &posteriors, slots, rule, &mut *rng)
        };
        for s in &mut shown {
            s.position += start;
        }
        let t_plan = started.elapsed();
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
            log_us = (t_log - t_plan).as_micros() as u64,
            items_us = (elapsed - t_log).as_micros() as u64,
            "feed page built"
        );
        self.metrics.feed(elapsed);
        Ok(FeedPage { next_cursor: more.then(|| context.clone()), context, items, exhausted, seen })
    }

    /// The user's taste profile and this request's content-bandit draw.
    fn profile(&self, entry: &mut UserEntry, index: &CandidateIndex) -> rank::Profile {
        entry.fold_pending(index);
        let mut profile = rank::profile_from_state(&entry.state, |id| index.embedding(id));
        if let (true, Some(projection)) = (self.config.content_bandit, index.projection()) {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let theta = entry.model.sample(&mut *rng, self.config.exploration);
            profile.content = projection.pull_back(&theta);
        }
        profile
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
    let mut out = ArmsRanked { arms: Vec::new(), scores: HashMap::new(), unseen: Some(0) };
    let UserEntry { state, touched, .. } = entry;
    touched.sync(state, index);
    let scorer = rank::Scorer::new(profile, index.dims(), index.projection());
    // One buffer for every source: candidates borrow ids and vectors from the index.
    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(CANDIDATES_PER_ARM_MAX + 1);
    for (source_id, numbers) in index.sources() {
        if filter.source.is_some_and(|s| s != source_id) {
            continue;
        }
        candidates.clear();
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
        let arm: Arc<str> = Arc::from(source_id.to_string());
        let ranked = rank::rank(&candidates, &arm, &scorer, now_ms, slots);
        let items = ranked.iter().map(|r| r.id.to_string()).collect();
        // Freshness is left out of the slot offsets: it says when, not how good.
        let scores = ranked.iter().map(|r| r.score - r.freshness).collect();
        out.scores.extend(ranked.into_iter().map(|r| (r.id.to_string(), r.score)));
        out.arms.push(ArmCandidates { arm: arm.to_string(), items, scores });
    }
    out
}
