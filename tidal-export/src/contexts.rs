//! Grouping one shard's signals, in scan order, into contexts that open and close.
//!
//! [`ContextTracker`] owns the open contexts of one pass over one shard. A context is the
//! signals of one key, `(user, session)` or `(user, session, context id)`, with `"-"` for a
//! missing session or context id, that follow each other with no gap longer than
//! `session_gap_ms` of HLC time. The scan position is the largest HLC seen so far; a context
//! whose last signal is more than the gap behind it closes, as do all contexts at the end.
//! Both passes of an export feed the same records through the same tracker, so they see
//! exactly the same contexts, and both passes derive implicit negatives the same way.
//!
//! Invariants:
//! - every open context has exactly one entry in the idle heap; the heap entry's deadline
//!   is at most the context's true deadline (activity only moves deadlines later), so a
//!   popped entry either closes its context or is pushed back with the true deadline;
//! - contexts close in the order (deadline, open order), a pure function of the records, so
//!   the output order is deterministic;
//! - memory is bounded by the open contexts (at most `open_contexts_max`, the least recently
//!   active closes early beyond that) and their items (at most `context_items_max` each).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tidal::hlc::{Hlc, LOGICAL_BITS};
use tidal::score::Weights;
use tidal::signal::{SignalKind, SignalRef};

/// Stands for a missing session or context id.
pub const NO_ID: &str = "-";
/// Separates key parts; ids never contain control characters (signal validation).
const KEY_SEPARATOR: char = '\u{1f}';

/// A span of milliseconds in HLC units (saturating).
pub(crate) fn ms_to_hlc(ms: u64) -> u64 {
    ms.saturating_mul(1 << LOGICAL_BITS)
}

/// How a tracker groups and judges signals.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrackerConfig {
    pub by_context_id: bool,
    pub session_gap_ms: u64,
    pub implicit_window_ms: u64,
    pub weights: Weights,
    pub open_contexts_max: usize,
    pub context_items_max: usize,
}

/// What one context saw of one item.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ItemInContext {
    /// Order of first appearance in the context.
    pub order: u32,
    /// First and last positive signal (`Hlc::ZERO`: none; the store never stamps it).
    pub first_pos: Hlc,
    pub last_pos: Hlc,
    /// Σ weight · value of the item's positive signals in the context.
    pub pos_strength: f64,
    /// Last explicit negative and its weight · value.
    pub last_explicit: Hlc,
    pub explicit_strength: f64,
    /// The latest impression not yet engaged with, judged or expired.
    pending_impression: Hlc,
    /// Latest impression that expired with no engagement (an implicit negative).
    pub implicit: Hlc,
}

impl ItemInContext {
    fn apply(&mut self, kind: &SignalKind, value: f64, hlc: Hlc, config: &TrackerConfig) {
        let window = ms_to_hlc(config.implicit_window_ms);
        if self.pending_impression != Hlc::ZERO && hlc.0.saturating_sub(self.pending_impression.0) > window {
            self.expire_pending();
        }
        let positive = kind.is_positive(value);
        let engaged = positive || (*kind == SignalKind::Dwell && value > 0.0);
        if positive {
            if self.first_pos == Hlc::ZERO {
                self.first_pos = hlc;
            }
            self.last_pos = self.last_pos.max(hlc);
            self.pos_strength += config.weights.of(kind) * value;
        }
        if kind.is_negative(value) {
            // The explicit negative stands for the impression it answers.
            self.pending_impression = Hlc::ZERO;
            if hlc >= self.last_explicit {
                self.last_explicit = hlc;
                self.explicit_strength = config.weights.of(kind) * value;
            }
        } else if engaged {
            self.pending_impression = Hlc::ZERO;
        } else if *kind == SignalKind::Impression {
            // A repeated impression restarts the window: the item was shown again.
            self.pending_impression = hlc;
        }
    }

    fn expire_pending(&mut self) {
        self.implicit = self.implicit.max(self.pending_impression);
        self.pending_impression = Hlc::ZERO;
    }

    /// The context's own negative on this item: its time, and whether it is explicit.
    pub fn own_negative(&self) -> Option<(Hlc, bool)> {
        if self.last_explicit != Hlc::ZERO {
            Some((self.last_explicit.max(self.implicit), true))
        } else if self.implicit != Hlc::ZERO {
            Some((self.implicit, false))
        } else {
            None
        }
    }

    pub fn is_chosen(&self) -> bool {
        self.first_pos != Hlc::ZERO
    }
}

/// A context that closed: its key, its extent and its items in order of appearance.
#[derive(Clone, Debug)]
pub(crate) struct ClosedContext {
    pub user: Box<str>,
    pub session: Box<str>,
    /// The context id part of the key (`Some` only when keyed by context id).
    pub context: Option<Box<str>>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub hlc_min: Hlc,
    pub hlc_max: Hlc,
    pub signals: u64,
    pub items: Vec<(Box<str>, ItemInContext)>,
    /// Signals whose item was not tracked because the context held `context_items_max`.
    pub items_dropped: u64,
}

impl ClosedContext {
    #[cfg(test)]
    pub fn item(&self, item: &str) -> Option<&ItemInContext> {
        self.items.iter().find(|(name, _)| &**name == item).map(|(_, state)| state)
    }
}

struct OpenContext {
    id: u64,
    closed: ClosedContext,
    items: hashbrown::HashMap<Box<str>, ItemInContext>,
}

impl OpenContext {
    fn deadline(&self, gap: u64) -> u64 {
        self.closed.hlc_max.0.saturating_add(gap)
    }

    fn close(mut self) -> ClosedContext {
        let mut items: Vec<_> = self.items.into_iter().collect();
        for (_, item) in &mut items {
            if item.pending_impression != Hlc::ZERO {
                item.expire_pending();
            }
        }
        items.sort_by_key(|(_, item)| item.order);
        self.closed.items = items;
        self.closed
    }
}

/// The open contexts of one pass over one shard.
pub(crate) struct ContextTracker {
    config: TrackerConfig,
    gap: u64,
    open: hashbrown::HashMap<Box<str>, OpenContext>,
    /// (deadline, open order, key) of every open context; smallest first.
    idle: BinaryHeap<Reverse<(u64, u64, Box<str>)>>,
    now: Hlc,
    next_id: u64,
    key: String,
    /// Contexts closed because `open_contexts_max` was reached.
    pub forced_closes: u64,
    /// Most contexts open at once so far.
    pub open_peak: usize,
}

impl ContextTracker {
    pub fn new(config: TrackerConfig) -> Self {
        ContextTracker {
            gap: ms_to_hlc(config.session_gap_ms),
            config,
            open: hashbrown::HashMap::new(),
            idle: BinaryHeap::new(),
            now: Hlc::ZERO,
            next_id: 0,
            key: String::new(),
            forced_closes: 0,
            open_peak: 0,
        }
    }

    /// Feeds the next record of the scan. Contexts that the record's time closes are handed
    /// to `on_close` first, oldest deadline first.
    pub fn push<E>(
        &mut self,
        seq: u64,
        hlc: Hlc,
        signal: &SignalRef<'_>,
        on_close: &mut impl FnMut(ClosedContext) -> Result<(), E>,
    ) -> Result<(), E> {
        self.now = self.now.max(hlc);
        self.close_idle(on_close)?;
        self.build_key(signal);
        if !self.open.contains_key(self.key.as_str()) {
            self.open_context(seq, hlc, signal);
        }
        let (config, key) = (&self.config, self.key.as_str());
        // Invariant: the context for `key` was inserted just above if it was missing.
        let Some(open) = self.open.get_mut(key) else { return Ok(()) };
        let c = &mut open.closed;
        (c.last_seq, c.signals) = (seq, c.signals + 1);
        (c.hlc_min, c.hlc_max) = (c.hlc_min.min(hlc), c.hlc_max.max(hlc));
        if let Some(state) = open.items.get_mut(signal.item) {
            state.apply(&signal.kind, signal.value, hlc, config);
        } else if open.items.len() < config.context_items_max {
            let mut state = ItemInContext { order: open.items.len() as u32, ..ItemInContext::default() };
            state.apply(&signal.kind, signal.value, hlc, config);
            open.items.insert(signal.item.into(), state);
        } else {
            c.items_dropped += 1;
        }
        if self.open.len() > self.config.open_contexts_max {
            self.close_least_recent(on_close)?;
        }
        Ok(())
    }

    /// Closes every open context (end of the scan), in the order (deadline, open order).
    pub fn finish<E>(&mut self, on_close: &mut impl FnMut(ClosedContext) -> Result<(), E>) -> Result<(), E> {
        let mut rest: Vec<(u64, u64, Box<str>)> = std::mem::take(&mut self.idle)
            .into_iter()
            .filter_map(|Reverse((_, _, key))| {
                let open = self.open.get(&key)?;
                Some((open.deadline(self.gap), open.id, key))
            })
            .collect();
        rest.sort_unstable();
        for (_, _, key) in rest {
            self.close_key(&key, on_close)?;
        }
        Ok(())
    }

    fn build_key(&mut self, signal: &SignalRef<'_>) {
        self.key.clear();
        self.key.push_str(signal.user);
        self.key.push(KEY_SEPARATOR);
        self.key.push_str(signal.session.unwrap_or(NO_ID));
        if self.config.by_context_id {
            self.key.push(KEY_SEPARATOR);
            self.key.push_str(signal.context.unwrap_or(NO_ID));
        }
    }

    fn open_context(&mut self, seq: u64, hlc: Hlc, signal: &SignalRef<'_>) {
        let id = self.next_id;
        self.next_id += 1;
        let closed = ClosedContext {
            user: signal.user.into(),
            session: signal.session.unwrap_or(NO_ID).into(),
            context: self.config.by_context_id.then(|| signal.context.unwrap_or(NO_ID).into()),
            first_seq: seq,
            last_seq: seq,
            hlc_min: hlc,
            hlc_max: hlc,
            signals: 0,
            items: Vec::new(),
            items_dropped: 0,
        };
        let key: Box<str> = self.key.as_str().into();
        self.idle.push(Reverse((hlc.0.saturating_add(self.gap), id, key.clone())));
        self.open.insert(key, OpenContext { id, closed, items: hashbrown::HashMap::new() });
        self.open_peak = self.open_peak.max(self.open.len());
    }

    /// Closes contexts idle for longer than the gap at the current scan position.
    fn close_idle<E>(&mut self, on_close: &mut impl FnMut(ClosedContext) -> Result<(), E>) -> Result<(), E> {
        while let Some(Reverse((deadline, _, _))) = self.idle.peek() {
            if *deadline >= self.now.0 {
                break;
            }
            let Some(Reverse((_, _, key))) = self.idle.pop() else { break };
            let Some(open) = self.open.get(&key) else { continue };
            let true_deadline = open.deadline(self.gap);
            if true_deadline >= self.now.0 {
                let id = open.id;
                self.idle.push(Reverse((true_deadline, id, key)));
            } else {
                self.close_key(&key, on_close)?;
            }
        }
        Ok(())
    }

    /// Closes the least recently active context (the open-context limit was reached).
    fn close_least_recent<E>(
        &mut self,
        on_close: &mut impl FnMut(ClosedContext) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(Reverse((deadline, _, key))) = self.idle.pop() {
            let Some(open) = self.open.get(&key) else { continue };
            let true_deadline = open.deadline(self.gap);
            if true_deadline > deadline {
                let id = open.id;
                self.idle.push(Reverse((true_deadline, id, key)));
                continue;
            }
            self.forced_closes += 1;
            return self.close_key(&key, on_close);
        }
        Ok(())
    }

    fn close_key<E>(
        &mut self,
        key: &str,
        on_close: &mut impl FnMut(ClosedContext) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.open.remove(key) {
            Some(open) => on_close(open.close()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "contexts_tests.rs"]
mod tests;
