//! Every user's remembered state in memory: the [`UserState`] (seen items, likes and
//! rejections with recency, history) and the content bandit's posterior
//! ([`LinearThompson`]), rebuilt from Tidal's complete history and kept current as the app
//! logs signals.
//!
//! Invariants:
//! - the state of a user is built from Tidal (never guessed): at start-up every user's from
//!   one scan of the history of all shards (`TidalAccess::scan_user_events`), or on first
//!   use with a scan of the user's shard; afterwards the app applies a signal only after
//!   Tidal acknowledged its write, so memory never holds what Tidal lacks;
//! - one user's entry is behind its own mutex, held by a feed request from ranking to
//!   logging, so two concurrent pages of one user never show the same item;
//! - at most [`USERS_MAX`] users are held; the least recently used one is dropped and
//!   rebuilt from Tidal when it comes back;
//! - with a store that serves no raw history (a remote Tidal), a user's state starts from
//!   Tidal's recent ring and hard negatives (`complete` false): items shown before the ring's
//!   reach may then be shown again. This is the documented limit of remote stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tidal::SignalKind;

use super::AppError;
use super::index::CandidateIndex;
use super::seen_bits::TouchedBits;
use crate::bandit::linear::LinearThompson;
use crate::store::{StoreError, TidalAccess, UserEvent};
use crate::taste::{RecencySet, UserState};

/// Most users whose state is held in memory.
pub const USERS_MAX: usize = 10_000;

/// One user's state and content-bandit posterior.
#[derive(Default)]
pub struct UserEntry {
    pub state: UserState,
    pub model: LinearThompson,
    /// Built from the complete history (false: from the recent ring only).
    pub complete: bool,
    /// Which index items the user touched, kept in step by each feed request.
    pub touched: TouchedBits,
}

impl UserEntry {
    /// Applies an acknowledged signal.
    pub fn apply(&mut self, item: &str, kind: &SignalKind, at_ms: u64) {
        self.state.apply(item, kind, at_ms);
    }

    /// Folds the pending observations whose items have features in `index` into the
    /// bandit; the others wait (their items are not embedded yet) unless they name items
    /// the index does not hold at all, which are dropped.
    pub fn fold_pending(&mut self, index: &CandidateIndex) {
        if self.state.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.state.pending);
        for obs in pending {
            match index.features(&obs.item) {
                Some(z) => self.model.observe(z, obs.exposure, obs.reward),
                None if index.contains(&obs.item) => self.state.pending.push(obs),
                None => {}
            }
        }
    }
}

/// The users' entries (see the module docs).
#[derive(Default)]
pub struct Users {
    inner: Mutex<UsersInner>,
}

#[derive(Default)]
struct UsersInner {
    map: HashMap<Arc<str>, Arc<Mutex<UserEntry>>>,
    recency: RecencySet,
}

/// Locks one user's entry (poisoning is ignored: the state is only changed by
/// `UserState::apply`, which leaves it whole at every step).
pub fn lock(entry: &Mutex<UserEntry>) -> MutexGuard<'_, UserEntry> {
    entry.lock().unwrap_or_else(|p| p.into_inner())
}

impl Users {
    fn lock(&self) -> MutexGuard<'_, UsersInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds every user's state from one scan of the store's history, and hands every
    /// impression to `on_impression` (the paging contexts are rebuilt from them). A store
    /// that serves no history leaves the users to be built on first use.
    pub fn rebuild(
        &self,
        store: &dyn TidalAccess,
        on_impression: &mut dyn FnMut(&UserEvent<'_>),
    ) -> Result<(), AppError> {
        let started = std::time::Instant::now();
        let mut built: HashMap<Arc<str>, UserEntry> = HashMap::new();
        let mut events = 0u64;
        let scanned = store.scan_user_events(None, &mut |e| {
            events += 1;
            if e.kind == SignalKind::Impression {
                on_impression(&e);
            }
            if !built.contains_key(e.user) && built.len() >= USERS_MAX {
                return;
            }
            let entry = built
                .entry(Arc::from(e.user))
                .or_insert_with(|| UserEntry { complete: true, ..UserEntry::default() });
            entry.apply(e.item, &e.kind, e.at_ms);
        });
        match scanned {
            Ok(()) => {}
            Err(StoreError::Unsupported(why)) => {
                tracing::info!(%why, "users' state is built from Tidal's recent rings on first use");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let mut inner = self.lock();
        let users = built.len();
        for (user, entry) in built {
            inner.recency.touch(&user, USERS_MAX);
            inner.map.insert(user, Arc::new(Mutex::new(entry)));
        }
        tracing::info!(
            users,
            events,
            ms = started.elapsed().as_millis() as u64,
            "users' state rebuilt from Tidal's history"
        );
        Ok(())
    }

    /// The entry of `user`, built from Tidal when it is not held.
    pub fn get(&self, user: &str, store: &dyn TidalAccess) -> Result<Arc<Mutex<UserEntry>>, AppError> {
        if let Some(entry) = self.touch(user) {
            return Ok(entry);
        }
        let entry = Arc::new(Mutex::new(load_user(user, store)?));
        let mut inner = self.lock();
        // Another request may have loaded it meanwhile: keep the first.
        let user: Arc<str> = Arc::from(user);
        let entry = inner.map.entry(user.clone()).or_insert(entry).clone();
        inner.recency.touch(&user, usize::MAX);
        while inner.recency.len() > USERS_MAX {
            let Some(oldest) = inner.recency.newest_first().last().cloned() else { break };
            inner.recency.remove(&oldest);
            inner.map.remove(&oldest);
        }
        Ok(entry)
    }

    fn touch(&self, user: &str) -> Option<Arc<Mutex<UserEntry>>> {
        let mut inner = self.lock();
        let (key, entry) = inner.map.get_key_value(user).map(|(k, v)| (k.clone(), v.clone()))?;
        inner.recency.touch(&key, usize::MAX);
        Some(entry)
    }

    /// Users held in memory.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds one user's entry: from the complete history of their shard, or (a store without
/// history) from the recent ring and the hard negatives.
fn load_user(user: &str, store: &dyn TidalAccess) -> Result<UserEntry, AppError> {
    let mut entry = UserEntry { complete: true, ..UserEntry::default() };
    match store.scan_user_events(Some(user), &mut |e| entry.apply(e.item, &e.kind, e.at_ms)) {
        Ok(()) => return Ok(entry),
        Err(StoreError::Unsupported(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut entry = UserEntry::default();
    if let Some(summary) = store.user(user)? {
        for h in &summary.history {
            entry.apply(&h.item, &h.kind, 0);
        }
        for item in &summary.hard_negatives {
            if !entry.state.rejected.contains(item) {
                entry.apply(item, &SignalKind::Dislike, 0);
            }
        }
    }
    Ok(entry)
}
