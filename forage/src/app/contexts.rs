//! The paging contexts: for each feed context id, its user and the next position to log.
//!
//! A page's `next_cursor` is its context id; the next page continues its positions (they
//! are part of the impressions' idempotency keys). Contexts are derived from the logged
//! impressions (context id and `position` attribute), rebuilt at start-up from Tidal's
//! history, so a cursor keeps working across restarts. Which items a context showed needs
//! no record here: every shown item is in the user's seen state and never shown again.
//!
//! Invariants: at most [`CONTEXTS_MAX`] contexts are held, the least recently used
//! forgotten first; a forgotten or never-issued cursor is [`CursorError::Expired`]
//! (HTTP 410), not a silent restart.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::taste::RecencySet;

/// Contexts remembered for paging.
pub const CONTEXTS_MAX: usize = 10_000;
/// Most items shown in one context (over all its pages).
pub const CONTEXT_ITEMS_MAX: usize = crate::bandit::FEED_SLOTS_MAX;

#[derive(Clone, Debug)]
struct ContextState {
    user: String,
    next_position: u32,
}

/// Why a cursor cannot continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Unknown: never issued, forgotten, or issued to another user.
    Expired,
}

/// The contexts (see the module docs).
#[derive(Default)]
pub struct Contexts {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, ContextState>,
    recency: RecencySet,
}

impl Contexts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a logged impression of `user` at `position` in `context` (start-up rebuild
    /// and every page).
    pub fn note(&self, context: &str, user: &str, position: u32) {
        let mut inner = self.lock();
        let next = position.saturating_add(1);
        match inner.map.get_mut(context) {
            Some(state) => state.next_position = state.next_position.max(next),
            None => {
                let state = ContextState { user: user.to_owned(), next_position: next };
                inner.map.insert(context.to_owned(), state);
            }
        }
        let key: std::sync::Arc<str> = std::sync::Arc::from(context);
        inner.recency.touch(&key, usize::MAX);
        while inner.recency.len() > CONTEXTS_MAX {
            let Some(oldest) = inner.recency.newest_first().last().cloned() else { break };
            inner.recency.remove(&oldest);
            inner.map.remove(&*oldest);
        }
    }

    /// Reserves the next `limit` positions of `user`'s `context` (fewer when it is nearly
    /// full): the first reserved position and the slot count. Reserving under the lock keeps
    /// two concurrent requests for one cursor from logging at the same positions.
    pub fn reserve(&self, context: &str, user: &str, limit: usize) -> Result<(u32, usize), CursorError> {
        let mut inner = self.lock();
        let state = inner.map.get_mut(context).filter(|s| s.user == user).ok_or(CursorError::Expired)?;
        let slots = limit.min(CONTEXT_ITEMS_MAX.saturating_sub(state.next_position as usize));
        let start = state.next_position;
        state.next_position += slots as u32;
        Ok((start, slots))
    }

    /// Starts a context (a first page): its positions from 0.
    pub fn start(&self, context: &str, user: &str, slots: usize) {
        let mut inner = self.lock();
        let state = ContextState { user: user.to_owned(), next_position: slots as u32 };
        inner.map.insert(context.to_owned(), state);
        drop(inner);
        if slots > 0 {
            self.note(context, user, slots as u32 - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_continue_positions_and_unknown_ones_expire() {
        let c = Contexts::default();
        c.start("a", "me", 10);
        assert_eq!(c.reserve("a", "me", 10), Ok((10, 10)));
        assert_eq!(c.reserve("a", "you", 10), Err(CursorError::Expired));
        assert_eq!(c.reserve("b", "me", 10), Err(CursorError::Expired));
        // Rebuilt from impressions: the next position follows the highest logged one.
        let r = Contexts::default();
        for p in [3, 0, 7, 1] {
            r.note("x", "me", p);
        }
        assert_eq!(r.reserve("x", "me", 5), Ok((8, 5)));
        assert_eq!(r.reserve("x", "me", 1000), Ok((13, CONTEXT_ITEMS_MAX - 13)));
    }
}
