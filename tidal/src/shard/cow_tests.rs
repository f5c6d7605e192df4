//! The copy a snapshot encodes equals the state at the copy's seq, whatever was applied
//! while it was swept: random workloads over few items and users (so entries are changed
//! before and after the sweep reaches them), custom kinds, sessions and hard negatives under
//! small bounds, and idempotency keys evicted by count during the copy.

use proptest::prelude::*;

use crate::hlc::Hlc;
use crate::shard::state::{ShardParams, ShardState, StateLimits};
use crate::signal::{Signal, SignalKind};

fn params() -> ShardParams {
    let limits = StateLimits {
        user_history_max: 3,
        user_sessions_max: 2,
        idempotency_window_ms: 1_000_000,
        idempotency_keys_max: 6,
    };
    ShardParams {
        shards: 1,
        limits,
        decay: crate::score::Decay { t_ref_ms: 0, half_life_ms: crate::score::HALF_LIFE_MS_DEFAULT },
    }
}

fn signal(r: u64) -> Signal {
    let kinds = [SignalKind::Click, SignalKind::Like, SignalKind::Dislike, SignalKind::Skip];
    let kind = match r % 7 {
        6 => SignalKind::from_name(if r.is_multiple_of(2) { "boost" } else { "pin" }),
        k => kinds[(k % 4) as usize].clone(),
    };
    let mut s = Signal::new(format!("u{}", (r >> 8) % 6), format!("item-{}", (r >> 16) % 12), kind);
    s.session = Some(format!("s{}", (r >> 24) % 3));
    if (r >> 32).is_multiple_of(3) {
        s.idempotency_key = Some(format!("k{}", r >> 40));
    }
    s
}

fn apply(state: &mut ShardState, seq: u64, r: u64) {
    let hlc = Hlc::new(1_000 + seq, 0);
    state.apply(seq, 1 + (r % 2) as u32, hlc, &signal(r).as_ref());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_copy_equals_the_state_at_its_seq(
        before in prop::collection::vec(any::<u64>(), 0..40),
        during in prop::collection::vec((any::<u64>(), 0usize..4), 0..60),
    ) {
        let params = params();
        let mut live = ShardState::with_params(0, &params);
        let mut seq = 0;
        for r in &before {
            seq += 1;
            apply(&mut live, seq, *r);
        }
        let at_copy = live.digest();
        live.begin_copy();
        let mut copy = None;
        for (r, budget) in &during {
            seq += 1;
            apply(&mut live, seq, *r);
            if copy.is_none() {
                copy = live.copy_step(*budget);
            }
        }
        let (copy, idempotency) = match copy {
            Some(done) => done,
            None => live.copy_step(usize::MAX).expect("a whole step finishes the copy"),
        };
        prop_assert_eq!(copy.seq(), before.len() as u64);
        let copied = copy.into_state(idempotency, &params);
        prop_assert_eq!(copied.digest(), at_copy);
        // The live state goes on unaffected, and without a copy.
        prop_assert!(live.copy.0.is_none());
        prop_assert_eq!(live.applied_seq, seq);
    }
}

#[test]
fn a_cloned_state_does_not_carry_the_copy() {
    let mut state = ShardState::with_params(0, &params());
    apply(&mut state, 1, 7);
    state.begin_copy();
    assert!(state.clone().copy.0.is_none());
    assert!(state.copy_step(0).is_none(), "a step of nothing does not finish a copy of one item");
    assert!(state.copy_step(usize::MAX).is_some());
}
