//! Positions in a shard's replicated log and the epoch history that lets two replicas find
//! where their logs stop agreeing.
//!
//! Every batch carries the epoch of the leader that wrote it (header v3). A replica keeps,
//! per shard, the seq at which each epoch began ([`EpochHistory`]); that history is derived
//! from its own WAL headers, so it survives every crash the WAL survives. Two replicas'
//! logs agree up to [`match_point`]: the last seq at which both hold a record of the same
//! epoch (the log-matching property: one epoch has one leader, which only appends, so two
//! records with the same epoch and seq are the same record). Kafka's KIP-101 and Raft's
//! AppendEntries check rest on the same fact.

use serde::{Deserialize, Serialize};

/// A point in a shard's log: the last seq held and the epoch of the record at that seq
/// (`seq == 0`: empty log, epoch 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPos {
    pub epoch: u64,
    pub seq: u64,
}

/// Why an epoch start cannot be recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("epoch {got} at seq {seq} is older than epoch {last} already in the log")]
    EpochRegressed { last: u64, got: u64, seq: u64 },
    #[error("epoch {epoch} would start at seq {seq}, before epoch {last_epoch}'s start at seq {last_start}")]
    SeqRegressed { epoch: u64, seq: u64, last_epoch: u64, last_start: u64 },
}

/// `(epoch, first_seq)` for every epoch that has records in a log, both strictly
/// increasing. Seqs before the first entry have epoch 0 (batches written before the shard
/// had epochs: v1 and v2 headers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochHistory {
    starts: Vec<(u64, u64)>,
}

impl EpochHistory {
    pub fn new() -> EpochHistory {
        EpochHistory::default()
    }

    /// A history from `(epoch, first_seq)` pairs as a peer sent them; `None` unless both
    /// columns strictly increase and no epoch is 0 (a peer's claim is checked, not trusted).
    pub fn from_starts(starts: Vec<(u64, u64)>) -> Option<EpochHistory> {
        let ordered = starts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        (ordered && starts.iter().all(|&(e, s)| e >= 1 && s >= 1)).then_some(EpochHistory { starts })
    }

    pub fn starts(&self) -> &[(u64, u64)] {
        &self.starts
    }

    /// Notes a batch of epoch `epoch` starting at `first_seq`, appended after everything
    /// observed so far. Epoch 0 (a v2 batch) is only allowed before any epoch began.
    pub fn observe(&mut self, epoch: u64, first_seq: u64) -> Result<(), HistoryError> {
        let last = self.last_epoch();
        if epoch < last {
            return Err(HistoryError::EpochRegressed { last, got: epoch, seq: first_seq });
        }
        if epoch == last {
            return Ok(());
        }
        if let Some(&(last_epoch, last_start)) = self.starts.last()
            && first_seq <= last_start
        {
            return Err(HistoryError::SeqRegressed { epoch, seq: first_seq, last_epoch, last_start });
        }
        self.starts.push((epoch, first_seq));
        Ok(())
    }

    /// Epoch of the latest entry (0 if none).
    pub fn last_epoch(&self) -> u64 {
        self.starts.last().map_or(0, |&(e, _)| e)
    }

    /// Epoch of the record at `seq` (for a seq the log holds).
    pub fn epoch_at(&self, seq: u64) -> u64 {
        let i = self.starts.partition_point(|&(_, start)| start <= seq);
        if i == 0 { 0 } else { self.starts[i - 1].0 }
    }

    /// First seq of the interval of constant epoch that holds `seq` (1 for epoch 0).
    fn interval_start(&self, seq: u64) -> u64 {
        let i = self.starts.partition_point(|&(_, start)| start <= seq);
        if i == 0 { 1 } else { self.starts[i - 1].1 }
    }

    /// Forgets epochs that start after `seq` (the log was cut back to end at `seq`).
    pub fn truncate_after(&mut self, seq: u64) {
        self.starts.retain(|&(_, start)| start <= seq);
    }

    /// The position of a log that ends at `end`.
    pub fn pos(&self, end: u64) -> LogPos {
        LogPos { epoch: if end == 0 { 0 } else { self.epoch_at(end) }, seq: end }
    }
}

/// The last seq up to which the log `a` (ending at `a_end`) and the log `b` agree: the
/// greatest `s <= min(a_end, b_end)` where both hold a record of the same epoch (0 if none).
/// Within the higher side's interval of constant epoch, the lower side has only lower
/// epochs (epochs never decrease along a log), so the search jumps interval by interval.
pub fn match_point(a: &EpochHistory, a_end: u64, b: &EpochHistory, b_end: u64) -> u64 {
    let mut s = a_end.min(b_end);
    while s > 0 {
        let (ea, eb) = (a.epoch_at(s), b.epoch_at(s));
        if ea == eb {
            return s;
        }
        let higher = if ea > eb { a } else { b };
        s = higher.interval_start(s) - 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(starts: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_starts(starts.to_vec()).unwrap()
    }

    #[test]
    fn epoch_at_follows_the_starts() {
        let h = hist(&[(1, 5), (3, 9)]);
        let got: Vec<u64> = (1..12).map(|s| h.epoch_at(s)).collect();
        assert_eq!(got, vec![0, 0, 0, 0, 1, 1, 1, 1, 3, 3, 3]);
        assert_eq!(h.pos(0), LogPos::default());
        assert_eq!(h.pos(9), LogPos { epoch: 3, seq: 9 });
    }

    #[test]
    fn observe_refuses_regressions_and_truncate_forgets() {
        let mut h = EpochHistory::new();
        h.observe(0, 1).unwrap();
        h.observe(2, 4).unwrap();
        h.observe(2, 8).unwrap();
        assert!(matches!(h.observe(1, 10), Err(HistoryError::EpochRegressed { .. })));
        assert!(matches!(h.observe(3, 4), Err(HistoryError::SeqRegressed { .. })));
        h.observe(3, 10).unwrap();
        assert_eq!(h.starts(), &[(2, 4), (3, 10)]);
        h.truncate_after(9);
        assert_eq!(h.starts(), &[(2, 4)]);
        assert!(EpochHistory::from_starts(vec![(2, 4), (2, 9)]).is_none());
        assert!(EpochHistory::from_starts(vec![(0, 4)]).is_none());
    }

    #[test]
    fn match_point_finds_the_common_prefix() {
        // Same history, different lengths.
        assert_eq!(match_point(&hist(&[(1, 1)]), 10, &hist(&[(1, 1)]), 7), 7);
        // b wrote epoch-1 records 6..=9 that a (the new leader of epoch 2, from seq 6) lacks.
        assert_eq!(match_point(&hist(&[(1, 1), (2, 6)]), 12, &hist(&[(1, 1)]), 9), 5);
        // Three leaders: a saw epochs 1, 3; b saw 1, 2.
        assert_eq!(match_point(&hist(&[(1, 1), (3, 8)]), 20, &hist(&[(1, 1), (2, 5)]), 30), 4);
        // Nothing in common.
        assert_eq!(match_point(&hist(&[(2, 1)]), 5, &hist(&[(1, 1)]), 5), 0);
        // Empty logs and pre-epoch (v2) prefixes.
        assert_eq!(match_point(&EpochHistory::new(), 0, &hist(&[(1, 1)]), 5), 0);
        assert_eq!(match_point(&hist(&[(1, 4)]), 9, &EpochHistory::new(), 6), 3);
    }

    /// Against a brute force over explicit per-seq epochs.
    #[test]
    fn match_point_agrees_with_brute_force() {
        let mut rng = crate::transport::rng::SimRng::new(7);
        for _ in 0..2000 {
            let common = rng.below(6);
            let make = |rng: &mut crate::transport::rng::SimRng| {
                let mut epochs: Vec<u64> = Vec::new();
                let mut e = 1;
                for _ in 0..rng.below(12) {
                    if rng.below(3) == 0 {
                        e += 1 + rng.below(2);
                    }
                    epochs.push(e);
                }
                epochs
            };
            let prefix: Vec<u64> = (0..common).map(|_| 1).collect();
            let (mut ea, mut eb) = (prefix.clone(), prefix);
            ea.extend(make(&mut rng).into_iter().map(|e| e * 2));
            eb.extend(make(&mut rng).into_iter().map(|e| e * 2 + 1));
            let to_hist = |epochs: &[u64]| {
                let mut h = EpochHistory::new();
                for (i, &e) in epochs.iter().enumerate() {
                    h.observe(e, i as u64 + 1).unwrap();
                }
                h
            };
            let brute = (1..=ea.len().min(eb.len())).rev().find(|&s| ea[s - 1] == eb[s - 1]).unwrap_or(0);
            let got = match_point(&to_hist(&ea), ea.len() as u64, &to_hist(&eb), eb.len() as u64);
            assert_eq!(got, brute as u64, "a {ea:?} b {eb:?}");
        }
    }
}
