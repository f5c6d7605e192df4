//! Pins the encoded forms of the state to what they were before the in-memory layout
//! interned ids: the digest of a fixed state, and a v3 snapshot of it written by that older
//! build (`testdata/snapshot-v3-golden.bin`), which must still decode to the same state.

use super::*;
use crate::hlc::Hlc;
use crate::shard::digest::StateDigest;
use crate::shard::state::StateLimits;

use crate::score::Decay;
use crate::signal::{Signal, SignalKind};

fn golden_params() -> ShardParams {
    let limits = StateLimits {
        user_history_max: 8,
        user_sessions_max: 4,
        idempotency_window_ms: 1 << 40,
        idempotency_keys_max: 100,
    };
    ShardParams { shards: 4, limits, decay: Decay { t_ref_ms: 7, half_life_ms: 1000 } }
}

/// A state touching every part of the layout: long and short ids, custom kinds, labels,
/// ratings, hard negatives added and removed, evicted sessions, idempotency keys.
fn golden_state() -> ShardState {
    let kinds = [
        SignalKind::Like,
        SignalKind::Dislike,
        SignalKind::Skip,
        SignalKind::Click,
        SignalKind::Rating,
        SignalKind::Label,
        SignalKind::from_name("boost"),
        SignalKind::Impression,
        SignalKind::Dwell,
    ];
    let mut st = ShardState::with_params(2, &golden_params());
    for n in 0..90u64 {
        let kind = kinds[(n % 9) as usize].clone();
        let item = if n % 5 == 0 {
            format!("a-rather-long-item-identifier-{}", n % 4)
        } else {
            format!("i{}", n % 7)
        };
        let mut s = Signal::new(format!("u{}", n % 4), item, kind.clone());
        s.value = match kind {
            SignalKind::Rating => (n % 11) as f64,
            SignalKind::Dwell => 2.5,
            SignalKind::Label => {
                s.attrs.insert("label".into(), "spam".into());
                if n % 2 == 0 { 1.0 } else { -1.0 }
            }
            _ => 1.0,
        };
        s.session = (n % 6 != 0).then(|| format!("session-{}", n % 5));
        s.session_seq = (n % 2 == 0).then_some(n + 1);
        s.idempotency_key = (n % 3 == 0).then(|| format!("k{n}"));
        st.apply(n + 1, 1 + (n % 2) as u32, Hlc::new(100 + n, (n % 3) as u16), &s.as_ref());
    }
    st
}

/// `golden_state().digest()` as the build before interned ids computed it.
const GOLDEN_DIGEST: StateDigest =
    StateDigest { applied_seq: 90, elements: 46, lanes: [3453516842371991199, 1558366715797955211] };

#[test]
fn digest_is_what_it_was_before_interning() {
    assert_eq!(golden_state().digest(), GOLDEN_DIGEST);
}

#[test]
fn snapshot_written_before_interning_decodes_to_the_same_state() {
    let bytes = include_bytes!("testdata/snapshot-v3-golden.bin");
    let back = decode(bytes, 2, &golden_params()).unwrap();
    assert_eq!(back.digest(), GOLDEN_DIGEST);
    let again = decode(&encode(&back, &golden_params()).unwrap(), 2, &golden_params()).unwrap();
    assert_eq!(again.digest(), GOLDEN_DIGEST);
    let user = back.users.values().find(|u| u.history.iter().any(|h| back.kind_name(h.kind) == "boost"));
    assert!(user.is_some(), "custom kinds survive");
    assert!(back.users.values().any(|u| u.hard_negative_ids().count() > 0));
    assert!(back.users.values().any(|u| u.evicted_sessions.as_ref().is_some_and(|kept| !kept.is_empty())));
    assert!(back.items.iter().any(|(_, k, _)| k.len() > crate::intern::INLINE_KEY_BYTES_MAX));
}

#[test]
fn a_user_naming_an_unknown_item_is_refused() {
    let st = golden_state();
    let missing = st.users.values().flat_map(|u| &u.history).map(|h| h.item).next().unwrap();
    let body = BodyRef {
        params: golden_params(),
        applied_seq: st.applied_seq,
        last_hlc: st.last_hlc,
        items: st.items.iter().filter(|(id, _, _)| *id != missing).map(|(_, k, v)| (k, v)).collect(),
        users: st.users.iter().map(|(_, k, v)| (k, st.user_ref(v))).collect(),
        idempotency: st.idempotency.entries().collect(),
    };
    let bytes = frame(VERSION, &st, &postcard::to_allocvec(&body).unwrap());
    let err = decode(&bytes, 2, &golden_params()).err();
    assert!(matches!(err, Some(SnapshotError::Inconsistent { .. })), "{err:?}");
}
