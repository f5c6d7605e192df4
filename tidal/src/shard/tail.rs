//! The newest batches of a shard's log, kept in memory for shipping.
//!
//! Owns [`TailCache`]. A leader ships each batch right after writing it, to every follower;
//! reading it back from the segment cost a directory listing, a `stat`, two `open`/`pread`/
//! `close` per batch and a header walk, on the replication thread, per read. The writer
//! thread now pushes a copy of every batch it appends (its own or a shipped one) here, and
//! [`crate::Db::read_batches`] answers from it when the read starts at a batch it holds.
//!
//! Invariants:
//! - the batches are contiguous and end at the log's end: a push that does not continue the
//!   last one clears the cache first, and every operation that cuts or replaces the log
//!   (set-aside, snapshot install) clears it;
//! - the bytes are exactly those appended to the segment (the WAL's `last_batch`, or the
//!   shipped bytes `append_encoded` wrote), so a reader cannot tell the two sources apart;
//! - at most [`TAIL_CACHE_BYTES_MAX`] bytes (the oldest leave first; one batch always stays);
//! - nothing below what retention keeps: retiring segments forgets the batches below the
//!   retirement point first ([`TailCache::forget_before`]), so a read the segments answer
//!   with `Behind` is never answered from here;
//! - empty until the first read: a store nobody ships from (embedded, single node) keeps no
//!   copies (up to [`TAIL_CACHE_BYTES_MAX`] per shard, 32 MB with four shards). The first
//!   read enables the cache and goes to the segments; pushes from then on are kept.

use std::collections::VecDeque;

/// Bytes of recent batches kept per shard: about 1.4 s of batches of 1000 signals at
/// 100,000 signals/s, enough for a follower that keeps up.
pub const TAIL_CACHE_BYTES_MAX: usize = 8 << 20;

/// The newest batches of one shard's log (see the module docs).
#[derive(Debug, Default)]
pub struct TailCache {
    /// (first seq, bytes), oldest first.
    batches: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    /// Seq after the last batch held.
    end: u64,
    /// Whether anyone reads: pushes are dropped until the first [`TailCache::read`].
    enabled: bool,
}

impl TailCache {
    /// Adds the batch just appended: `records` records from `first_seq`.
    pub fn push(&mut self, first_seq: u64, records: u32, bytes: &[u8]) {
        if records == 0 || !self.enabled {
            return;
        }
        if !self.batches.is_empty() && first_seq != self.end {
            self.clear();
        }
        self.batches.push_back((first_seq, bytes.to_vec()));
        self.bytes += bytes.len();
        self.end = first_seq + u64::from(records);
        while self.bytes > TAIL_CACHE_BYTES_MAX && self.batches.len() > 1 {
            let (_, old) = self.batches.pop_front().expect("more than one batch");
            self.bytes -= old.len();
        }
    }

    /// The batches from `from_seq` (a batch start), about `max_bytes` in all and at least
    /// one; empty when `from_seq` is the log's end. `None` when the cache cannot tell (the
    /// read must go to the segments). The first read enables the cache.
    pub fn read(&mut self, from_seq: u64, max_bytes: u64) -> Option<Vec<Vec<u8>>> {
        self.enabled = true;
        if self.batches.is_empty() {
            return None;
        }
        if from_seq == self.end {
            return Some(Vec::new());
        }
        let start = self.batches.binary_search_by_key(&from_seq, |(first, _)| *first).ok()?;
        let mut out = Vec::new();
        let mut total = 0u64;
        for (_, bytes) in self.batches.range(start..) {
            if !out.is_empty() && total + bytes.len() as u64 > max_bytes {
                break;
            }
            total += bytes.len() as u64;
            out.push(bytes.clone());
        }
        Some(out)
    }

    /// Forgets the batches that start below `seq` (retention removes the segments below it:
    /// the cache never answers for seqs the segments no longer hold).
    pub fn forget_before(&mut self, seq: u64) {
        while self.batches.front().is_some_and(|(first, _)| *first < seq) {
            let (_, old) = self.batches.pop_front().expect("front");
            self.bytes -= old.len();
        }
    }

    /// Forgets everything (the log was cut or replaced); an enabled cache stays enabled.
    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
        self.end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_kept_until_someone_reads() {
        let mut tail = TailCache::default();
        tail.push(1, 2, &[1; 10]);
        assert_eq!((tail.batches.len(), tail.bytes), (0, 0), "no reader yet: no copy");
        assert_eq!(tail.read(1, 100), None, "the first read goes to the segments");
        tail.push(3, 1, &[3; 10]);
        assert_eq!(tail.read(3, 100), Some(vec![vec![3; 10]]), "kept once read");
        tail.clear();
        tail.push(4, 1, &[4; 10]);
        assert_eq!(tail.read(4, 100), Some(vec![vec![4; 10]]), "a clear keeps it enabled");
    }

    #[test]
    fn reads_start_at_held_batch_starts_and_respect_the_budget() {
        let mut tail = TailCache::default();
        assert_eq!(tail.read(1, 100), None, "an empty cache cannot tell");
        tail.push(1, 2, &[1; 10]);
        tail.push(3, 1, &[3; 10]);
        tail.push(4, 4, &[4; 10]);
        assert_eq!(tail.read(8, 100), Some(Vec::new()), "the end: nothing beyond");
        assert_eq!(tail.read(3, 15), Some(vec![vec![3; 10]]));
        assert_eq!(tail.read(1, 1), Some(vec![vec![1; 10]]), "at least one batch");
        assert_eq!(tail.read(1, 100).unwrap().len(), 3);
        assert_eq!(tail.read(2, 100), None, "not a batch start");
        assert_eq!(tail.read(9, 100), None, "beyond the end");
    }

    #[test]
    fn a_discontinuity_or_a_clear_forgets_and_the_oldest_leave_first() {
        let mut tail = TailCache::default();
        assert_eq!(tail.read(1, 100), None, "enables the cache");
        tail.push(1, 1, &[1; 4]);
        tail.push(5, 1, &[5; 4]);
        assert_eq!(tail.read(1, 100), None, "the batch before the gap was dropped");
        assert_eq!(tail.read(5, 100), Some(vec![vec![5; 4]]));
        tail.clear();
        assert_eq!(tail.read(6, 100), None);
        let big = vec![0u8; TAIL_CACHE_BYTES_MAX / 2 + 1];
        for seq in 1..=3 {
            tail.push(seq, 1, &big);
        }
        assert_eq!(tail.read(1, u64::MAX), None, "evicted");
        assert_eq!(tail.read(3, u64::MAX).map(|b| b.len()), Some(1));
        assert!(tail.bytes <= TAIL_CACHE_BYTES_MAX);
        tail.push(4, 2, &[4; 4]);
        tail.forget_before(4);
        assert_eq!(tail.read(3, u64::MAX), None, "retired");
        assert_eq!(tail.read(4, u64::MAX), Some(vec![vec![4; 4]]));
    }
}
