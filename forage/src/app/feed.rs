//! The feed: candidates per source from the in-memory index, ranked inside each source
//! ([`crate::rank`]), slots allocated across sources by Thompson sampling
//! ([`crate::bandit::plan_feed`]), every shown item logged to Tidal as an impression with
//! its propensity and the page's context id.
//!
//! Paging: a page's `next_cursor` is its context id. The server remembers, per context, the
//! items shown and the next position (bounded: [`CONTEXTS_MAX`], oldest forgotten first),
//! so the next page continues the positions and never repeats an item; an unknown cursor is
//! an error rather than a silent restart (positions are part of the impressions' keys).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde::Serialize;

use super::index::CandidateIndex;
use super::views::{ItemView, ItemViews};
use super::{AppError, Forage};
use crate::bandit::{self, ArmCandidates, POLICY_THOMPSON};
use crate::rank::{self, Candidate};

/// Items on a page unless the request says otherwise.
pub const LIMIT_DEFAULT: usize = 20;
/// Most items on one page.
pub const LIMIT_MAX: usize = 100;
/// Most ids in a request's exclude list.
pub const EXCLUDE_MAX: usize = 1000;
/// Candidates ranked per source (its newest items): bounds a request's work however large
/// the catalog grows; older items have little freshness left anyway.
pub const CANDIDATES_PER_ARM_MAX: usize = 2000;
/// Contexts remembered for paging.
pub const CONTEXTS_MAX: usize = 10_000;
/// Items remembered per user as recently shown: a new feed prefers other items, so two
/// visits in a row do not open on the same page.
pub const RECENT_SHOWN_MAX: usize = 200;
/// Users whose recently shown items are remembered (oldest user forgotten first).
pub const RECENT_USERS_MAX: usize = 10_000;
/// Most items shown in one context (over all its pages).
pub const CONTEXT_ITEMS_MAX: usize = crate::bandit::FEED_SLOTS_MAX;

/// A feed request.
#[derive(Clone, Debug, Default)]
pub struct FeedRequest {
    pub user: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub label: Option<i64>,
    pub source: Option<i64>,
    pub exclude: Vec<String>,
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
}

#[derive(Clone, Debug, Default)]
struct ContextState {
    user: String,
    shown: HashSet<String>,
    next_position: u32,
}

/// The contexts remembered for paging, and each user's recently shown items.
#[derive(Default)]
pub struct Contexts {
    inner: Mutex<ContextsInner>,
}

#[derive(Default)]
struct ContextsInner {
    map: HashMap<String, ContextState>,
    order: VecDeque<String>,
    recent: HashMap<String, VecDeque<String>>,
    recent_users: VecDeque<String>,
}

impl Contexts {
    fn lock(&self) -> std::sync::MutexGuard<'_, ContextsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the next `limit` positions of `user`'s context (fewer when the context is
    /// nearly full): returns the first reserved position, the slots, and the items shown in
    /// it so far. Reserving under the lock keeps two concurrent requests for the same cursor
    /// from logging impressions at the same positions (their keys would collide).
    fn reserve(&self, context: &str, user: &str, limit: usize) -> Option<(u32, usize, HashSet<String>)> {
        let mut inner = self.lock();
        let state = inner.map.get_mut(context).filter(|s| s.user == user)?;
        let slots = limit.min(CONTEXT_ITEMS_MAX.saturating_sub(state.next_position as usize));
        let start = state.next_position;
        state.next_position += slots as u32;
        Some((start, slots, state.shown.clone()))
    }

    /// Records what a page of `context` showed (a new context is created), and remembers
    /// the items as the user's recently shown ones.
    fn put(&self, context: String, user: &str, next_position: u32, shown: &[bandit::Shown]) {
        let mut inner = self.lock();
        let user = user.to_owned();
        let mut created = false;
        let state = inner.map.entry(context.clone()).or_insert_with(|| {
            created = true;
            ContextState { user: user.clone(), ..ContextState::default() }
        });
        state.shown.extend(shown.iter().map(|s| s.item.clone()));
        state.next_position = state.next_position.max(next_position);
        if created {
            inner.order.push_back(context);
        }
        while inner.order.len() > CONTEXTS_MAX {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
        if !inner.recent.contains_key(&user) {
            inner.recent_users.push_back(user.clone());
        }
        let recent = inner.recent.entry(user).or_default();
        recent.extend(shown.iter().map(|s| s.item.clone()));
        while recent.len() > RECENT_SHOWN_MAX {
            recent.pop_front();
        }
        while inner.recent_users.len() > RECENT_USERS_MAX {
            if let Some(old) = inner.recent_users.pop_front() {
                inner.recent.remove(&old);
            }
        }
    }

    /// The items recently shown to `user`.
    fn recent(&self, user: &str) -> HashSet<String> {
        self.lock().recent.get(user).map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }
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
        let (context, start, slots, shown_before) = self.open_context(req.cursor.as_deref(), &user, limit)?;
        let index = self.candidate_index()?;
        let allowed = self.filter_set(req)?;
        let mut exclude: HashSet<String> = req.exclude.iter().cloned().collect();
        exclude.extend(shown_before);
        let embedding = |id: &str| index.embedding(id).map(|e| e.to_vec());
        let profile = rank::profile_from_tidal(self.store.as_ref(), &user, &exclude, embedding)?;
        let now = super::now_ms().max(0) as u64;
        let t_profile = started.elapsed();
        // Prefer items not shown lately; fall back to them when too few others are left.
        let recent = self.contexts.recent(&user);
        let filter = Filter { source: req.source, allowed: allowed.as_ref(), avoid: &recent };
        let (mut arms, mut scores) = arm_candidates(&index, slots, &filter, &profile, now);
        if arms.iter().map(|a| a.items.len()).sum::<usize>() < slots && !recent.is_empty() {
            let filter = Filter { avoid: &HashSet::new(), ..filter };
            (arms, scores) = arm_candidates(&index, slots, &filter, &profile, now);
        }
        let t_rank = started.elapsed();
        let arm_names: Vec<&str> = arms.iter().map(|a| a.arm.as_str()).collect();
        let posteriors = bandit::read_posteriors(self.store.as_ref(), &user, &arm_names)?;
        let mut shown = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            bandit::plan_feed(&arms, &posteriors, slots, &mut *rng)
        };
        for s in &mut shown {
            s.position += start;
        }
        let t_plan = started.elapsed();
        bandit::log_impressions(self.store.as_ref(), &user, &context, POLICY_THOMPSON, &shown)?;
        let t_log = started.elapsed();
        let next_position = start + slots as u32;
        let more = shown.len() == limit && (next_position as usize) < CONTEXT_ITEMS_MAX;
        self.contexts.put(context.clone(), &user, next_position, &shown);
        let items = self.feed_items(&shown, &scores)?;
        let elapsed = started.elapsed();
        tracing::debug!(
            profile_us = t_profile.as_micros() as u64,
            rank_us = (t_rank - t_profile).as_micros() as u64,
            plan_us = (t_plan - t_rank).as_micros() as u64,
            log_us = (t_log - t_plan).as_micros() as u64,
            items_us = (elapsed - t_log).as_micros() as u64,
            "feed page built"
        );
        self.metrics.feed(elapsed);
        Ok(FeedPage { next_cursor: more.then(|| context.clone()), context, items })
    }

    /// The context a request continues (its cursor) or a new one, with the first position
    /// and the number of slots reserved for this page, and the items the context showed.
    fn open_context(
        &self,
        cursor: Option<&str>,
        user: &str,
        limit: usize,
    ) -> Result<(String, u32, usize, HashSet<String>), AppError> {
        match cursor {
            Some(cursor) => {
                let (start, slots, shown) = self.contexts.reserve(cursor, user, limit).ok_or_else(|| {
                    AppError::invalid("cursor", "unknown or expired cursor; request a new feed without one")
                })?;
                Ok((cursor.to_owned(), start, slots, shown))
            }
            None => {
                let id = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random::<u64>();
                Ok((format!("ctx-{id:016x}"), 0, limit.min(CONTEXT_ITEMS_MAX), HashSet::new()))
            }
        }
    }

    /// The candidate index for the catalog as it is now.
    pub(crate) fn candidate_index(&self) -> Result<std::sync::Arc<CandidateIndex>, AppError> {
        let soft = self.soft_generation.load(Ordering::SeqCst) + self.worker_status().embedded_total;
        let generation = (self.generation.load(Ordering::SeqCst), soft);
        Ok(self.index.get(generation, &self.index_source)?)
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

/// Which candidates a request may see besides the profile's dismissals.
#[derive(Clone, Copy)]
struct Filter<'a> {
    /// Only this source.
    source: Option<i64>,
    /// Only these items (a label filter).
    allowed: Option<&'a HashSet<String>>,
    /// Not these items (recently shown).
    avoid: &'a HashSet<String>,
}

/// The ranked candidates of every source that has some, and every candidate's score.
fn arm_candidates(
    index: &CandidateIndex,
    slots: usize,
    filter: &Filter<'_>,
    profile: &rank::Profile,
    now_ms: u64,
) -> (Vec<ArmCandidates>, HashMap<String, f64>) {
    let mut arms = Vec::new();
    let mut scores = HashMap::new();
    for (source_id, entries) in &index.by_source {
        if filter.source.is_some_and(|s| s != *source_id) {
            continue;
        }
        let arm: Arc<str> = Arc::from(source_id.to_string());
        let candidates: Vec<Candidate> = entries
            .iter()
            .filter(|e| !profile.dismissed.contains(&*e.id) && !filter.avoid.contains(&*e.id))
            .filter(|e| filter.allowed.is_none_or(|a| a.contains(&*e.id)))
            .take(CANDIDATES_PER_ARM_MAX)
            .map(|e| Candidate {
                id: e.id.clone(),
                source: arm.clone(),
                published_ms: e.time_ms.max(0) as u64,
                embedding: e.embedding.clone(),
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let ranked = rank::rank(candidates, profile, now_ms, slots);
        let items = ranked.iter().map(|r| r.id.to_string()).collect();
        scores.extend(ranked.into_iter().map(|r| (r.id.to_string(), r.score)));
        arms.push(ArmCandidates { arm: arm.to_string(), items });
    }
    (arms, scores)
}
