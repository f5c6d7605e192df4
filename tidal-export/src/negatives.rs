//! Hard negatives: what pass 1 learns about every user of a shard, and how pass 2 picks a
//! context's chosen and rejected items from it.
//!
//! [`NegativeIndex`] owns, per user and item, the time of the last positive and of the last
//! negative (explicit or implicit) over the user's whole history, folded from every closed
//! context of pass 1. Its memory grows with the distinct (user, item) pairs that have a
//! positive or a negative, never with the signal count; items are interned once per shard.
//! A pair is a *hard negative* when its last negative is later than its last positive
//! (add-wins on the positive: a later positive removes it, a later negative brings it back).
//!
//! [`select`] applies the rules of `docs/export.md` to one closed context: chosen items
//! (positive in the context), then rejected items in priority order: the context's own
//! explicit negatives, its implicit ones, the user's other hard negatives (`history`, most
//! recent first) and mined ones. A rejected item is never chosen in the context and always
//! a hard negative of the user (mined items: never engaged with at all).

use std::borrow::Cow;
use std::sync::Arc;

use super::contexts::{ClosedContext, ItemInContext};
use super::hooks::MinedNegatives;
use tidal::hlc::Hlc;
use tidal::score::Weights;
use tidal::signal::SignalKind;

/// Where a rejected item comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSource {
    /// A dislike, skip, low rating or rejected label in the same context.
    Explicit,
    /// An impression in the same context with no engagement within the window.
    Implicit,
    /// A hard negative of the user from elsewhere in their history.
    History,
    /// Supplied by the [`MinedNegatives`] hook.
    Mined,
}

impl NegativeSource {
    pub const ALL: [NegativeSource; 4] =
        [NegativeSource::Explicit, NegativeSource::Implicit, NegativeSource::History, NegativeSource::Mined];

    pub fn as_str(self) -> &'static str {
        match self {
            NegativeSource::Explicit => "explicit",
            NegativeSource::Implicit => "implicit",
            NegativeSource::History => "history",
            NegativeSource::Mined => "mined",
        }
    }
}

/// One (user, item) pair over the user's whole history.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PairState {
    pub last_pos: Hlc,
    pub last_neg: Hlc,
    /// weight · value of the last negative (the impression weight for an implicit one).
    pub neg_strength: f64,
}

impl PairState {
    pub fn is_hard(&self) -> bool {
        self.last_neg > self.last_pos
    }
}

/// One user's pairs, and after [`NegativeIndex::finalize`] their hard negatives sorted
/// most recent first (ties by item id).
#[derive(Debug, Default)]
pub(crate) struct UserHistory {
    pub pairs: hashbrown::HashMap<Arc<str>, PairState>,
    pub hard: Vec<(Hlc, Arc<str>)>,
}

/// Pass 1's result for one shard.
#[derive(Debug, Default)]
pub(crate) struct NegativeIndex {
    items: hashbrown::HashSet<Arc<str>>,
    users: hashbrown::HashMap<Box<str>, UserHistory>,
    pairs: u64,
}

impl NegativeIndex {
    /// Folds a closed context of pass 1 into its user's pairs.
    pub fn fold(&mut self, ctx: &ClosedContext, weights: &Weights) {
        let impression_weight = weights.of(&SignalKind::Impression);
        for (name, item) in &ctx.items {
            let negative = last_negative(item, impression_weight);
            if item.last_pos == Hlc::ZERO && negative.is_none() {
                continue;
            }
            let interned = match self.items.get(&**name) {
                Some(found) => found.clone(),
                None => {
                    let new: Arc<str> = Arc::from(&**name);
                    self.items.insert(new.clone());
                    new
                }
            };
            let user = match self.users.get_mut(&*ctx.user) {
                Some(user) => user,
                None => self.users.entry(ctx.user.clone()).or_default(),
            };
            let pair = user.pairs.entry(interned).or_insert_with(|| {
                self.pairs += 1;
                PairState::default()
            });
            pair.last_pos = pair.last_pos.max(item.last_pos);
            if let Some((hlc, strength)) = negative.filter(|(hlc, _)| *hlc > pair.last_neg) {
                (pair.last_neg, pair.neg_strength) = (hlc, strength);
            }
        }
    }

    /// Sorts every user's hard negatives; call once, after pass 1.
    pub fn finalize(&mut self) {
        self.items = hashbrown::HashSet::new();
        for user in self.users.values_mut() {
            user.hard = user
                .pairs
                .iter()
                .filter(|(_, pair)| pair.is_hard())
                .map(|(item, pair)| (pair.last_neg, item.clone()))
                .collect();
            user.hard.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        }
    }

    pub fn user(&self, user: &str) -> Option<&UserHistory> {
        self.users.get(user)
    }

    /// Distinct (user, item) pairs with a positive or a negative.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    pub fn users(&self) -> u64 {
        self.users.len() as u64
    }
}

/// The item's last negative in the context: time and weight · value.
fn last_negative(item: &ItemInContext, impression_weight: f64) -> Option<(Hlc, f64)> {
    match item.own_negative()? {
        _ if item.implicit > item.last_explicit => Some((item.implicit, impression_weight)),
        (hlc, _) => Some((hlc, item.explicit_strength)),
    }
}

/// Caps of one context's selection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelectLimits {
    pub items_max: usize,
    pub history_max: usize,
    pub mined_max: usize,
}

/// A chosen item of a context.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chosen<'a> {
    pub item: &'a str,
    pub first_pos: Hlc,
    /// Σ weight · value of its positive signals in the context.
    pub strength: f64,
}

/// A rejected item of a context.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rejected<'a> {
    pub item: Cow<'a, str>,
    pub source: NegativeSource,
    /// weight · value of the negative that makes it rejected (0 for mined items).
    pub strength: f64,
    /// When the context rejected it (`Hlc(u64::MAX)` for history and mined items).
    pub anchor: Hlc,
}

/// A context's chosen and rejected items, in priority order.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Selection<'a> {
    pub chosen: Vec<Chosen<'a>>,
    pub rejected: Vec<Rejected<'a>>,
}

/// Picks a closed context's chosen and rejected items (see the module docs).
pub(crate) fn select<'a>(
    ctx: &'a ClosedContext,
    user: Option<&'a UserHistory>,
    limits: SelectLimits,
    mined: Option<&dyn MinedNegatives>,
    weights: &Weights,
) -> Selection<'a> {
    let mut chosen: Vec<Chosen<'a>> = ctx
        .items
        .iter()
        .filter(|(_, item)| item.is_chosen())
        .map(|(name, item)| Chosen { item: name, first_pos: item.first_pos, strength: item.pos_strength })
        .collect();
    // Items are in order of appearance, so a stable sort keeps ties deterministic.
    chosen.sort_by_key(|c| c.first_pos);
    chosen.truncate(limits.items_max);
    let mut rejected = own_negatives(ctx, user, weights);
    if !chosen.is_empty() {
        let mut taken: hashbrown::HashSet<&str> = chosen.iter().map(|c| c.item).collect();
        taken.extend(rejected.iter().filter_map(|r| match r.item {
            Cow::Borrowed(item) => Some(item),
            Cow::Owned(_) => None,
        }));
        if let Some(user) = user {
            let history =
                user.hard.iter().filter(|(_, item)| !taken.contains(&**item)).take(limits.history_max);
            rejected.extend(history.map(|(_, item)| Rejected {
                item: Cow::Borrowed(&**item),
                source: NegativeSource::History,
                strength: user.pairs.get(item).map_or(0.0, |p| p.neg_strength),
                anchor: Hlc(u64::MAX),
            }));
        }
        if let Some(hook) = mined.filter(|_| limits.mined_max > 0) {
            let found = mine(hook, ctx, &chosen, user, &rejected, limits.mined_max);
            rejected.extend(found);
        }
    }
    rejected.truncate(limits.items_max);
    Selection { chosen, rejected }
}

/// The context's own negatives that are still hard negatives of the user.
fn own_negatives<'a>(
    ctx: &'a ClosedContext,
    user: Option<&UserHistory>,
    weights: &Weights,
) -> Vec<Rejected<'a>> {
    let impression_weight = weights.of(&SignalKind::Impression);
    let mut own: Vec<(u32, Rejected<'a>)> = Vec::new();
    for (name, item) in &ctx.items {
        let Some((anchor, explicit)) = item.own_negative().filter(|_| !item.is_chosen()) else { continue };
        let hard = match user.and_then(|u| u.pairs.get(&**name)) {
            Some(pair) => pair.is_hard(),
            // Not folded in pass 1 (a limit dropped it there): judge by the context alone.
            None => anchor > item.last_pos,
        };
        if !hard {
            continue;
        }
        let (source, strength) = if explicit {
            (NegativeSource::Explicit, item.explicit_strength)
        } else {
            (NegativeSource::Implicit, impression_weight)
        };
        own.push((item.order, Rejected { item: Cow::Borrowed(name), source, strength, anchor }));
    }
    own.sort_by(|(oa, a), (ob, b)| (a.source, a.anchor, oa).cmp(&(b.source, b.anchor, ob)));
    own.into_iter().map(|(_, r)| r).collect()
}

/// Asks the hook, then keeps items the user never engaged with that are not yet rejected.
fn mine<'a>(
    hook: &dyn MinedNegatives,
    ctx: &ClosedContext,
    chosen: &[Chosen<'_>],
    user: Option<&UserHistory>,
    rejected: &[Rejected<'_>],
    mined_max: usize,
) -> Vec<Rejected<'a>> {
    let chosen_ids: Vec<&str> = chosen.iter().map(|c| c.item).collect();
    let in_context: hashbrown::HashSet<&str> = ctx.items.iter().map(|(name, _)| &**name).collect();
    let engaged = |item: &str| in_context.contains(item) || user.is_some_and(|u| u.pairs.contains_key(item));
    let mut seen: hashbrown::HashSet<String> = rejected.iter().map(|r| r.item.to_string()).collect();
    let mut out = Vec::new();
    for item in hook.mine(&ctx.user, &chosen_ids, &engaged) {
        if out.len() >= mined_max {
            break;
        }
        if engaged(&item) || !seen.insert(item.clone()) {
            continue;
        }
        out.push(Rejected {
            item: Cow::Owned(item),
            source: NegativeSource::Mined,
            strength: 0.0,
            anchor: Hlc(u64::MAX),
        });
    }
    out
}
