//! The store-wide ranking as the shards share it: the [`ScoreIndex`], and the score deltas
//! the shards' writers queued that it has not absorbed yet.
//!
//! Owns [`Ranking`]. Moving an item in the index's order (a remove and an insert in a tree of
//! every item) cost a writer about 0.3 µs per signal, under one lock that every shard's
//! writer took in turn, before it could reply: up to a fifth of a batch's commit. Now a
//! writer only appends [`Delta`]s to a queue (by index id, or by key for an item it has no
//! id of yet), and an absorber thread moves the items, mostly while the writers wait for
//! their fsyncs. A writer never takes the index's lock to write.
//!
//! Invariants:
//! - a delta queued before a read starts is in what the read sees: [`Ranking::read`] and
//!   [`Ranking::write`] absorb the queue first. A writer queues a group's deltas before it
//!   publishes the group's seq and replies, so a read after an ack sees the acked writes.
//! - deltas are absorbed in the order they were queued (one queue, taken whole, under the
//!   index's write lock), so an item's score is summed in its writers' order, as before.
//! - lock order: a shard's state, then the index, then the queue. Writers queue holding only
//!   the queue's lock.
//! - the queue is bounded: a writer that finds it over [`QUEUE_MAX`] deltas (the absorber
//!   starved of CPU) absorbs it itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use crate::intern::IdKey;
use crate::score::ScoreIndex;

/// Queued deltas beyond which a writer absorbs them itself (16 MB of queue).
pub const QUEUE_MAX: usize = 1 << 20;

/// See the module docs.
#[derive(Debug)]
pub struct Ranking {
    index: RwLock<ScoreIndex>,
    queue: Mutex<Queue>,
    /// Deltas queued and not absorbed (read without the queue's lock by readers' fast path).
    queued: AtomicUsize,
    wake: Condvar,
}

/// One queued change of an item's score.
#[derive(Clone, Debug)]
pub enum Delta {
    /// By the id the index gave the item ([`ScoreIndex::add_id`]).
    Id(u32, f64),
    /// By key, for an item whose id the writer does not know ([`ScoreIndex::add_key`]).
    Key(IdKey, f64),
}

#[derive(Debug, Default)]
struct Queue {
    deltas: Vec<Delta>,
    stop: bool,
}

impl Ranking {
    pub fn new(index: ScoreIndex) -> Ranking {
        Ranking {
            index: RwLock::new(index),
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
            wake: Condvar::new(),
        }
    }

    /// The index with every delta queued so far absorbed, for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, ScoreIndex> {
        if self.queued.load(Ordering::Acquire) > 0 {
            drop(self.write());
        }
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The index with every delta queued so far absorbed, for changing (new items, a shard's
    /// state replaced).
    pub fn write(&self) -> RwLockWriteGuard<'_, ScoreIndex> {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        self.absorb(&mut index);
        index
    }

    /// Queues deltas and wakes the absorber; `deltas` is left empty.
    pub fn queue(&self, deltas: &mut Vec<Delta>) {
        if deltas.is_empty() {
            return;
        }
        let backlog = {
            let mut queue = self.lock_queue();
            let was_empty = queue.deltas.is_empty();
            queue.deltas.append(deltas);
            self.queued.store(queue.deltas.len(), Ordering::Release);
            if was_empty {
                self.wake.notify_one();
            }
            queue.deltas.len()
        };
        if backlog > QUEUE_MAX {
            drop(self.write());
        }
    }

    /// Whether index id `id` names `key` (ids never move: no need to absorb first).
    pub fn id_names(&self, id: u32, key: Option<&IdKey>) -> bool {
        self.index.read().unwrap_or_else(|e| e.into_inner()).id_key(id) == key
    }

    /// The index's id of `key`, if it has one and its lock is free now (a writer asks, to
    /// queue by id next time; it never waits for the absorber).
    pub fn try_id(&self, key: &IdKey) -> Option<u32> {
        self.index.try_read().ok()?.id(key.as_str())
    }

    /// Deltas queued and not yet absorbed.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the whole queue (holding the index's write lock, so no other absorber can
    /// apply a later take first) and applies it.
    fn absorb(&self, index: &mut ScoreIndex) {
        let deltas = {
            let mut queue = self.lock_queue();
            if queue.deltas.is_empty() {
                return;
            }
            std::mem::take(&mut queue.deltas)
        };
        for delta in &deltas {
            match delta {
                Delta::Id(id, delta) => index.add_id(*id, *delta),
                Delta::Key(key, delta) => drop(index.add_key(key, *delta)),
            }
        }
        let mut queue = self.lock_queue();
        self.queued.store(queue.deltas.len(), Ordering::Release);
        if queue.deltas.capacity() < deltas.capacity() && queue.deltas.is_empty() {
            // Keep the larger buffer for the next round of queueing.
            let mut deltas = deltas;
            deltas.clear();
            queue.deltas = deltas;
        }
    }

    /// Starts the absorber thread; it runs until the returned handle is dropped.
    pub fn start_absorber(self: &Arc<Self>) -> std::io::Result<Absorber> {
        let ranking = self.clone();
        let thread = std::thread::Builder::new().name("tidal-ranking".into()).spawn(move || {
            loop {
                {
                    let mut queue = ranking.lock_queue();
                    while queue.deltas.is_empty() && !queue.stop {
                        queue = ranking.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                    }
                    if queue.stop {
                        return;
                    }
                }
                drop(ranking.write());
            }
        })?;
        Ok(Absorber { ranking: self.clone(), thread: Some(thread) })
    }
}

/// The absorber thread; dropping this stops it (after its current round) and waits for it.
#[derive(Debug)]
pub struct Absorber {
    ranking: Arc<Ranking>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Absorber {
    fn drop(&mut self) {
        self.ranking.lock_queue().stop = true;
        self.ranking.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking_of(items: &[(&str, f64)]) -> (Arc<Ranking>, Vec<u32>) {
        let mut index = ScoreIndex::default();
        let ids = items.iter().map(|(item, score)| index.add_key(&IdKey::new(item), *score)).collect();
        (Arc::new(Ranking::new(index)), ids)
    }

    #[test]
    fn a_read_sees_every_delta_queued_before_it_without_an_absorber() {
        let (ranking, ids) = ranking_of(&[("a", 1.0), ("b", 2.0)]);
        let c = IdKey::new("c");
        ranking.queue(&mut vec![
            Delta::Id(ids[0], 5.0),
            Delta::Id(ids[1], 0.5),
            Delta::Key(c.clone(), 9.0),
            Delta::Id(ids[0], -1.0),
        ]);
        assert_eq!((ranking.queued(), ranking.try_id(&c)), (4, None));
        let index = ranking.read();
        assert_eq!(index.top(3, 0), [("c".to_owned(), 9.0), ("a".to_owned(), 5.0), ("b".to_owned(), 2.5)]);
        drop(index);
        assert_eq!(ranking.try_id(&c), Some(2), "interned by the absorbing read");
        let index = ranking.read();
        drop(index);
        assert_eq!(ranking.queued(), 0);
    }

    #[test]
    fn the_absorber_drains_the_queue_and_stops_when_dropped() {
        let (ranking, ids) = ranking_of(&[("a", 0.0)]);
        let absorber = ranking.start_absorber().unwrap();
        for _ in 0..1000 {
            ranking.queue(&mut vec![Delta::Id(ids[0], 1.0)]);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ranking.queued() > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(ranking.queued(), 0, "the absorber drained the queue on its own");
        assert_eq!(ranking.index.read().unwrap().score("a"), Some(1000.0));
        drop(absorber);
        ranking.queue(&mut vec![Delta::Id(ids[0], 1.0)]);
        assert_eq!(ranking.queued(), 1, "no absorber after the drop");
        assert_eq!(ranking.read().score("a"), Some(1001.0));
    }

    #[test]
    fn concurrent_writers_and_readers_lose_no_delta() {
        let (ranking, ids) = ranking_of(&[("a", 0.0), ("b", 0.0)]);
        let _absorber = ranking.start_absorber().unwrap();
        std::thread::scope(|scope| {
            for w in 0..4 {
                let (ranking, ids) = (&ranking, &ids);
                scope.spawn(move || {
                    for n in 0..2000 {
                        ranking.queue(&mut vec![Delta::Id(ids[(w + n) % 2], 1.0)]);
                        if n % 100 == 0 {
                            // Monotone: a read never sees less than what this writer queued.
                            let seen = ranking.read().top(2, 0).iter().map(|(_, s)| s).sum::<f64>();
                            assert!(seen >= (n + 1) as f64, "{seen} after {n}");
                        }
                    }
                });
            }
        });
        let index = ranking.read();
        assert_eq!(index.score("a").unwrap() + index.score("b").unwrap(), 8000.0);
    }
}
