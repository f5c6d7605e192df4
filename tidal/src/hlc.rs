//! Hybrid logical clock: physical milliseconds in the high 48 bits, a logical counter in the
//! low 16. Stamps from one [`HybridClock`] strictly increase even when the wall clock goes
//! backwards; a remote stamp too far ahead of the local wall clock is rejected so one bad
//! peer cannot drag every clock into the future.
//!
//! The wall clock reaches this module through the [`Clock`] trait so tests control time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
/// Default for how far ahead of local wall time a remote stamp may be.
pub const MAX_SKEW_MS_DEFAULT: u64 = 60_000;

/// A hybrid logical timestamp. Ordered; `Hlc::ZERO` is "never".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    pub const ZERO: Hlc = Hlc(0);

    pub fn new(physical_ms: u64, logical: u16) -> Hlc {
        Hlc((physical_ms << LOGICAL_BITS) | u64::from(logical))
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// Source of wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock(AtomicU64::new(now_ms))
    }

    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a remote stamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    #[error("remote clock stamp {remote} is {ahead_ms} ms ahead of local time (max {max_skew_ms} ms)")]
    TooFarAhead { remote: Hlc, ahead_ms: u64, max_skew_ms: u64 },
}

/// A hybrid logical clock shared by every shard of a node. Lock-free.
#[derive(Debug)]
pub struct HybridClock {
    clock: Arc<dyn Clock>,
    last: AtomicU64,
    max_skew_ms: u64,
}

impl HybridClock {
    pub fn new(clock: Arc<dyn Clock>, max_skew_ms: u64) -> Self {
        HybridClock { clock, last: AtomicU64::new(0), max_skew_ms }
    }

    /// A new stamp, strictly greater than every stamp this clock issued or observed.
    pub fn now(&self) -> Hlc {
        let wall = Hlc::new(self.clock.now_ms(), 0).0;
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            // When the wall clock is behind (or equal), count logically; a full logical
            // counter carries into the physical part, which is still monotonic.
            let next = if wall > last { wall } else { last + 1 };
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Hlc(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// The first of `n` consecutive new stamps (`n >= 1`), all strictly greater than every
    /// stamp issued or observed so far: one wall-clock read for a whole group of records.
    /// A run longer than the logical counter carries into the physical part, ahead of the
    /// wall clock by at most `n / 65536` ms.
    pub fn now_run(&self, n: u64) -> Hlc {
        let wall = Hlc::new(self.clock.now_ms(), 0).0;
        let n = n.max(1);
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let first = if wall > last { wall } else { last + 1 };
            match self.last.compare_exchange_weak(last, first + (n - 1), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Hlc(first),
                Err(seen) => last = seen,
            }
        }
    }

    /// Merges a stamp from elsewhere (a replica, a recovered WAL); later local stamps are
    /// greater than it. Refuses a remote stamp too far ahead of local wall time.
    pub fn observe(&self, remote: Hlc) -> Result<(), HlcError> {
        let local_ms = self.clock.now_ms();
        let ahead_ms = remote.physical_ms().saturating_sub(local_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(HlcError::TooFarAhead { remote, ahead_ms, max_skew_ms: self.max_skew_ms });
        }
        self.observe_trusted(remote);
        Ok(())
    }

    /// Merges a stamp this node itself issued earlier (WAL replay): no skew check, since
    /// refusing our own durable history would make the store unopenable after a clock step.
    pub fn observe_trusted(&self, stamp: Hlc) {
        self.last.fetch_max(stamp.0, Ordering::AcqRel);
    }

    /// The greatest stamp issued or observed so far.
    pub fn last(&self) -> Hlc {
        Hlc(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_at(ms: u64) -> (Arc<ManualClock>, HybridClock) {
        let manual = Arc::new(ManualClock::new(ms));
        let hlc = HybridClock::new(manual.clone(), 1_000);
        (manual, hlc)
    }

    #[test]
    fn follows_wall_clock_when_it_advances() {
        let (manual, hlc) = clock_at(5_000);
        assert_eq!(hlc.now(), Hlc::new(5_000, 0));
        manual.set(6_000);
        assert_eq!(hlc.now(), Hlc::new(6_000, 0));
    }

    #[test]
    fn a_run_is_consecutive_and_later_stamps_follow_it() {
        let (manual, hlc) = clock_at(5_000);
        let before = hlc.now();
        let first = hlc.now_run(3);
        assert_eq!(first, Hlc::new(5_000, 1), "after the stamp issued at the same ms");
        assert_eq!(hlc.now(), Hlc(first.0 + 3), "the run's three stamps are taken");
        manual.set(6_000);
        assert_eq!(hlc.now_run(70_000), Hlc::new(6_000, 0));
        assert_eq!(hlc.now().physical_ms(), 6_001, "a run past the logical counter carries");
        assert!(before < first);
    }

    #[test]
    fn monotonic_when_wall_clock_goes_backwards() {
        let (manual, hlc) = clock_at(10_000);
        let a = hlc.now();
        manual.set(2_000);
        let b = hlc.now();
        let c = hlc.now();
        assert!(a < b && b < c);
        assert_eq!(b, Hlc::new(10_000, 1));
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let (_manual, hlc) = clock_at(7);
        hlc.observe_trusted(Hlc::new(7, u16::MAX));
        let next = hlc.now();
        assert_eq!(next, Hlc::new(8, 0));
    }

    #[test]
    fn observe_moves_clock_past_remote() {
        let (_manual, hlc) = clock_at(1_000);
        hlc.observe(Hlc::new(1_500, 3)).unwrap();
        assert!(hlc.now() > Hlc::new(1_500, 3));
    }

    #[test]
    fn remote_too_far_ahead_is_rejected_and_ignored() {
        let (_manual, hlc) = clock_at(1_000);
        let err = hlc.observe(Hlc::new(5_000, 0)).unwrap_err();
        assert_eq!(
            err,
            HlcError::TooFarAhead { remote: Hlc::new(5_000, 0), ahead_ms: 4_000, max_skew_ms: 1_000 }
        );
        assert!(hlc.now() < Hlc::new(2_000, 0));
    }

    #[test]
    fn concurrent_stamps_are_unique() {
        let (_manual, hlc) = clock_at(42);
        let hlc = Arc::new(hlc);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let hlc = hlc.clone();
                std::thread::spawn(move || (0..1000).map(|_| hlc.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<Hlc> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
