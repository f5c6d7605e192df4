//! `ShardRouter`: which shard owns a user. Jump consistent hash (Lamping & Veach) over a
//! stable 64-bit hash of the user id.
//!
//! The mapping is part of the on-disk format: a data directory's shard count is fixed at
//! creation, and the hash below must never change, or a restart would look for a user's
//! session HWMs and idempotency keys in the wrong shard.

/// Routes user ids to shards; cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardRouter {
    shards: u32,
}

impl ShardRouter {
    /// A router over `shards` shards (at least 1).
    pub fn new(shards: u32) -> Self {
        ShardRouter { shards: shards.max(1) }
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The shard that owns `user`'s signals, sessions and idempotency keys.
    pub fn shard_for(&self, user: &str) -> u32 {
        jump_consistent_hash(stable_hash(user.as_bytes()), self.shards)
    }
}

/// FNV-1a, then the SplitMix64 finaliser to spread the bits. Stable forever (see module docs).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Maps `key` to a bucket in `0..buckets`; growing `buckets` by one moves only 1/n of keys.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_pinned() {
        // These values are part of the on-disk format; a change here breaks existing stores.
        let router = ShardRouter::new(8);
        let got: Vec<u32> =
            ["alice", "bob", "carol", "u-123456"].iter().map(|u| router.shard_for(u)).collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [u32; 4] = [5, 2, 5, 3];

    #[test]
    fn spreads_users_evenly() {
        let router = ShardRouter::new(4);
        let mut counts = [0u32; 4];
        for n in 0..40_000 {
            counts[router.shard_for(&format!("user-{n}")) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven: {counts:?}");
        }
    }

    #[test]
    fn growing_moves_few_keys() {
        let (a, b) = (ShardRouter::new(8), ShardRouter::new(9));
        let moved =
            (0..10_000).filter(|n| a.shard_for(&n.to_string()) != b.shard_for(&n.to_string())).count();
        assert!(moved < 1_500, "moved {moved}");
    }

    #[test]
    fn single_shard_takes_everything() {
        assert_eq!(ShardRouter::new(1).shard_for("anyone"), 0);
        assert_eq!(ShardRouter::new(0).shard_for("anyone"), 0);
    }
}
