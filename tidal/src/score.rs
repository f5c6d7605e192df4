//! Ranking items by a weighted, time-decayed score, answered from an ordered index.
//!
//! Each shard keeps, per item and built-in kind, a decayed value sum
//! `S_k = Σ value · 2^((t_i − t_ref) / half_life)` ([`DecayedSums`]), where `t_ref` is fixed
//! when the store is created. An item's score is `Σ_k w_k · S_k` summed over shards. Decaying
//! to any query time `t` multiplies every score by the same `2^((t_ref − t) / half_life)`, so
//! the order never changes with time and no re-sorting is needed: [`ScoreIndex`] keeps the
//! best items ordered by the undecayed score (`index.rs`: a head above a floor) and is
//! updated by each batch before it is acknowledged.
//! Weights may change from one open to the next (the index is rebuilt from the sums);
//! the half-life is fixed at creation. Custom kinds do not contribute to scores.

use serde::{Deserialize, Serialize};

use crate::signal::SignalKind;

mod index;
pub use index::ScoreIndex;

/// Built-in kinds that carry a decayed sum (impression .. label).
pub const SCORED_KINDS: usize = 8;
/// Default half-life of a signal's weight: one week.
pub const HALF_LIFE_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Exponents are clamped here so sums stay finite (about 700 half-lives after creation).
const EXPONENT_MAX: f64 = 700.0;

/// Per-kind weights of the score. A signal contributes `weight(kind) · value`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights(pub [f64; SCORED_KINDS]);

impl Default for Weights {
    /// impression 0, click 1, like 3, dislike −3, skip −1, dwell 0.01 per second,
    /// rating 0.3 per point, label 0.
    fn default() -> Self {
        Weights([0.0, 1.0, 3.0, -3.0, -1.0, 0.01, 0.3, 0.0])
    }
}

impl Weights {
    /// Weight of a kind; custom kinds weigh nothing.
    pub fn of(&self, kind: &SignalKind) -> f64 {
        slot(kind).map_or(0.0, |i| self.0[i])
    }

    /// Sets a built-in kind's weight; false for a custom kind.
    pub fn set(&mut self, kind: &SignalKind, weight: f64) -> bool {
        slot(kind).map(|i| self.0[i] = weight).is_some()
    }
}

fn slot(kind: &SignalKind) -> Option<usize> {
    usize::from(kind.code()).checked_sub(1).filter(|i| *i < SCORED_KINDS)
}

/// The decay clock of a store: reference time and half-life, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decay {
    pub t_ref_ms: u64,
    pub half_life_ms: u64,
}

impl Decay {
    /// `2^((t − t_ref) / half_life)`, clamped to stay finite.
    pub fn growth(&self, t_ms: u64) -> f64 {
        let exponent = (t_ms as f64 - self.t_ref_ms as f64) / self.half_life_ms.max(1) as f64;
        exponent.clamp(-EXPONENT_MAX, EXPONENT_MAX).exp2()
    }

    /// Converts an undecayed score to its value at time `now_ms`.
    pub fn at(&self, raw: f64, now_ms: u64) -> f64 {
        raw / self.growth(now_ms)
    }
}

/// An item's decayed value sums per built-in kind, in one shard: logically `[f64; 8]`
/// ([`DecayedSums::to_array`], and that is how it encodes), stored compactly because most
/// items of a large store see one or two kinds. Up to two sums sit inline (`tags` holds
/// slot + 1 of each, 0 when unused); a third kind moves all of them to a boxed array. A sum is
/// "present" once its kind was added, even if it is +0.0, and absent sums read as +0.0, so
/// the array is exactly what adding into a zeroed `[f64; 8]` would give.
#[derive(Clone, Default)]
pub struct DecayedSums {
    tags: [u8; 2],
    inline: [f64; 2],
    spilled: Option<Box<[f64; SCORED_KINDS]>>,
}

/// The encoded form: the eight sums (the type's original shape).
#[derive(Serialize, Deserialize)]
#[serde(rename = "DecayedSums")]
struct SumsRepr([f64; SCORED_KINDS]);

impl Serialize for DecayedSums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SumsRepr(self.to_array()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DecayedSums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(DecayedSums::from_array(SumsRepr::deserialize(d)?.0))
    }
}

impl std::fmt::Debug for DecayedSums {
    /// As the array (the logical value), whatever the layout.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DecayedSums").field(&self.to_array()).finish()
    }
}

impl PartialEq for DecayedSums {
    fn eq(&self, other: &Self) -> bool {
        self.to_array() == other.to_array()
    }
}

impl DecayedSums {
    /// The sums from their array form (bit-exact: a -0.0 sum stays -0.0).
    pub fn from_array(sums: [f64; SCORED_KINDS]) -> DecayedSums {
        let mut out = DecayedSums::default();
        let present = sums.iter().filter(|s| s.to_bits() != 0).count();
        if present > out.tags.len() {
            out.spilled = Some(Box::new(sums));
            return out;
        }
        let present = sums.iter().enumerate().filter(|(_, s)| s.to_bits() != 0);
        for (i, (slot, sum)) in present.enumerate() {
            // slot < 8, so slot + 1 fits a u8.
            out.tags[i] = slot as u8 + 1;
            out.inline[i] = *sum;
        }
        out
    }

    /// The eight sums, in slot order.
    pub fn to_array(&self) -> [f64; SCORED_KINDS] {
        if let Some(all) = &self.spilled {
            return **all;
        }
        let mut sums = [0.0; SCORED_KINDS];
        for (tag, sum) in self.tags.iter().zip(self.inline) {
            if let Some(slot) = sums.get_mut(usize::from(*tag).wrapping_sub(1)) {
                *slot = sum;
            }
        }
        sums
    }

    /// The sum of `slot`, made present (zero) if it was not.
    fn sum_mut(&mut self, slot: usize) -> &mut f64 {
        if self.spilled.is_none() {
            let tag = slot as u8 + 1;
            if let Some(i) = self.tags.iter().position(|t| *t == tag) {
                return &mut self.inline[i];
            }
            if let Some(i) = self.tags.iter().position(|t| *t == 0) {
                self.tags[i] = tag;
                self.inline[i] = 0.0;
                return &mut self.inline[i];
            }
            let mut all = Box::new(self.to_array());
            all[slot] = 0.0;
            (self.tags, self.inline) = ([0; 2], [0.0; 2]);
            self.spilled = Some(all);
        }
        match &mut self.spilled {
            Some(all) => &mut all[slot],
            None => unreachable!("spilled just above"),
        }
    }

    /// Adds a signal; returns its contribution to the undecayed score under `weights`.
    pub fn add(&mut self, kind: &SignalKind, value: f64, growth: f64, weights: &Weights) -> f64 {
        match slot(kind) {
            Some(i) => {
                *self.sum_mut(i) += value * growth;
                weights.0[i] * value * growth
            }
            None => 0.0,
        }
    }

    /// The undecayed score under `weights`.
    pub fn score(&self, weights: &Weights) -> f64 {
        self.to_array().iter().zip(weights.0).map(|(s, w)| s * w).sum()
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.spilled.as_ref().map_or(0, |_| std::mem::size_of::<[f64; SCORED_KINDS]>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_halves_per_half_life_and_keeps_order() {
        let decay = Decay { t_ref_ms: 1_000, half_life_ms: 100 };
        assert_eq!(decay.growth(1_100), 2.0);
        assert_eq!(decay.growth(900), 0.5);
        // A signal now is worth twice one a half-life ago, whenever we look.
        let (old, new) = (decay.growth(1_000), decay.growth(1_100));
        for now in [1_100, 5_000, 90_000] {
            assert!((decay.at(new, now) / decay.at(old, now) - 2.0).abs() < 1e-9);
        }
        assert!(decay.growth(u64::MAX).is_finite());
    }

    #[test]
    fn weights_apply_per_kind_and_ignore_custom() {
        let w = Weights::default();
        let mut sums = DecayedSums::default();
        assert_eq!(sums.add(&SignalKind::Like, 1.0, 1.0, &w), 3.0);
        assert_eq!(sums.add(&SignalKind::Dwell, 100.0, 1.0, &w), 1.0);
        assert_eq!(sums.add(&SignalKind::Custom("x".into()), 5.0, 1.0, &w), 0.0);
        assert_eq!(sums.score(&w), 4.0);
        let mut other = Weights::default();
        other.set(&SignalKind::Like, 0.0);
        assert_eq!(sums.score(&other), 1.0, "re-weighting needs no replay");
    }

    #[test]
    fn sums_spill_past_two_kinds_and_keep_their_array_form() {
        let w = Weights::default();
        let mut sums = DecayedSums::default();
        let mut plain = [0.0f64; SCORED_KINDS];
        let adds = [(SignalKind::Click, 1.0), (SignalKind::Label, -0.0), (SignalKind::Click, 2.0)];
        let more = [(SignalKind::Like, 1.5), (SignalKind::Dwell, 30.0), (SignalKind::Impression, 1.0)];
        for (n, (kind, value)) in adds.iter().chain(&more).enumerate() {
            sums.add(kind, *value, 2.0, &w);
            plain[slot(kind).unwrap()] += value * 2.0;
            assert_eq!(sums.to_array().map(f64::to_bits), plain.map(f64::to_bits), "after {n} adds");
            assert_eq!(sums.spilled.is_some(), n >= 3, "after {n} adds");
            let back = DecayedSums::from_array(sums.to_array());
            assert_eq!(back.to_array().map(f64::to_bits), plain.map(f64::to_bits));
            let json = serde_json::to_string(&sums).unwrap();
            assert_eq!(json, serde_json::to_string(&plain).unwrap(), "encodes as the array");
        }
        assert!(std::mem::size_of::<DecayedSums>() <= 32);
    }
}
