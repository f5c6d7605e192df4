//! Reads: top-k by weighted, time-decayed score (checked against a brute-force ranking, across
//! restarts and re-weighting), read-your-writes tokens, session history and hard negatives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal::hlc::{Clock, ManualClock};
use tidal::query::visibility::SeqToken;
use tidal::score::Weights;
use tidal::{Db, Error, Options, Signal, SignalKind};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn options(clock: &Arc<ManualClock>, weights: Weights) -> Options {
    Options {
        shards: Some(3),
        clock: clock.clone(),
        score_half_life_ms: Some(DAY_MS),
        score_weights: weights,
        ..Options::default()
    }
}

fn signal(user: &str, item: &str, kind: SignalKind) -> Signal {
    Signal::new(user, item, kind)
}

fn names(db: &Db, k: usize) -> Vec<String> {
    db.top_k(k, 0).unwrap().items.into_iter().map(|r| r.item).collect()
}

#[test]
fn top_k_follows_weights_and_decay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000 * DAY_MS));
    let db = Db::open(dir.path(), options(&clock, Weights::default())).unwrap();
    // "old" gets 4 likes, then three half-lives pass, then "new" gets 1 like.
    for u in 0..4 {
        db.write(signal(&format!("u{u}"), "old", SignalKind::Like)).unwrap();
    }
    db.write(signal("u9", "meh", SignalKind::Click)).unwrap();
    db.write(signal("u8", "bad", SignalKind::Dislike)).unwrap();
    clock.advance(3 * DAY_MS);
    db.write(signal("u0", "new", SignalKind::Like)).unwrap();
    // 4 likes decayed by 2^-3 = 0.5 < 1 fresh like = 1 (in units of a like's weight 3).
    assert_eq!(names(&db, 4), ["new", "old", "meh", "bad"]);
    let top = db.top_k(2, 0).unwrap();
    assert!((top.items[0].score - 3.0).abs() < 1e-6, "fresh like scores its weight: {top:?}");
    assert!((top.items[1].score - 1.5).abs() < 1e-6, "4 likes, 3 half-lives old: {top:?}");
    assert_eq!(db.top_k(10, 3).unwrap().items.len(), 1, "paging skips");
    assert!(matches!(db.top_k(1_000_000, 0), Err(Error::InvalidRequest(_))));
}

#[test]
fn top_k_survives_restart_and_reweighting_without_replay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(500 * DAY_MS));
    {
        let db = Db::open(dir.path(), options(&clock, Weights::default())).unwrap();
        for n in 0..30u64 {
            db.write(signal(&format!("u{n}"), &format!("i{}", n % 7), SignalKind::Click)).unwrap();
            if n % 3 == 0 {
                db.write(signal(&format!("u{n}"), "liked", SignalKind::Like)).unwrap();
            }
        }
        db.snapshot().unwrap();
        db.write(signal("late", "i6", SignalKind::Click)).unwrap();
        assert_eq!(names(&db, 2)[0], "liked");
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options(&clock, Weights::default())).unwrap();
    assert_eq!(names(&db, 2)[0], "liked", "the ranking came back from snapshot + WAL");
    drop(db);
    let mut no_likes = Weights::default();
    no_likes.set(&SignalKind::Like, 0.0);
    let db = Db::open(dir.path(), options(&clock, no_likes)).unwrap();
    assert_ne!(names(&db, 1)[0], "liked", "new weights apply at open");
    assert_eq!(db.score("liked"), Some(0.0));
}

#[test]
fn top_k_equals_a_brute_force_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10 * DAY_MS));
    let db = Db::open(dir.path(), options(&clock, Weights::default())).unwrap();
    let kinds =
        [SignalKind::Click, SignalKind::Like, SignalKind::Dislike, SignalKind::Skip, SignalKind::Dwell];
    let mut expected = std::collections::HashMap::<String, f64>::new();
    let weights = Weights::default();
    let mut x: u64 = 42;
    for _ in 0..2_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kind = kinds[(x >> 33) as usize % kinds.len()].clone();
        let item = format!("i{}", (x >> 40) % 97);
        let mut s = signal(&format!("u{}", (x >> 20) % 31), &item, kind.clone());
        s.value = if kind == SignalKind::Dwell { ((x >> 50) % 300) as f64 } else { 1.0 };
        clock.advance((x >> 45) % 600_000);
        let at = clock.now_ms();
        db.write(s.clone()).unwrap();
        *expected.entry(item).or_default() +=
            weights.of(&kind) * s.value * 2f64.powf(at as f64 / DAY_MS as f64);
    }
    let mut brute: Vec<(String, f64)> = expected.into_iter().collect();
    brute.sort_by(|a, b| b.1.total_cmp(&a.1));
    let got = names(&db, 20);
    let want: Vec<String> = brute.iter().take(20).map(|(i, _)| i.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn an_ack_token_never_waits_and_a_future_token_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options { shards: Some(2), ..Options::default() }).unwrap();
    let acks =
        db.write_batch((0..20).map(|n| signal(&format!("u{n}"), "x", SignalKind::Click)).collect()).unwrap();
    let token = SeqToken::from_acks(&acks);
    db.wait_for(&token, Duration::from_secs(1)).expect("own acks are applied");
    assert_eq!(db.item("x").unwrap().state.count(&SignalKind::Click), 20);
    let mut future = token.clone();
    future.require(0, 1_000_000);
    let started = Instant::now();
    match db.wait_for(&future, Duration::from_millis(150)) {
        Err(Error::NotYet { shard: 0, wanted: 1_000_000, .. }) => {}
        other => panic!("expected NotYet, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(150), "waited the bound");
    assert!(matches!(db.wait_for(&"9:1".parse().unwrap(), Duration::ZERO), Err(Error::InvalidRequest(_))));
}

#[test]
fn a_waiting_read_wakes_when_the_write_lands() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options { shards: Some(1), ..Options::default() }).unwrap();
    let next: SeqToken = "0:1".parse().unwrap();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.wait_for(&next, Duration::from_secs(10))
                .map(|()| db.item("late").map(|v| v.state.count(&SignalKind::Like)))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    db.write(signal("u", "late", SignalKind::Like)).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), Some(1));
}

#[test]
fn session_history_and_hard_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    for (n, (item, kind)) in [
        ("a", SignalKind::Impression),
        ("a", SignalKind::Skip),
        ("b", SignalKind::Dislike),
        ("b", SignalKind::Like),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = signal("alice", item, kind);
        s.session = Some("s1".into());
        s.session_seq = Some(n as u64 + 1);
        db.write(s).unwrap();
    }
    db.write(signal("alice", "c", SignalKind::Dislike)).unwrap();
    let history = db.session_history("alice", "s1").unwrap();
    assert_eq!(history.hwm, 4);
    assert_eq!(history.entries.iter().map(|e| &*e.item).collect::<Vec<_>>(), ["a", "a", "b", "b"]);
    assert_eq!(db.hard_negatives("alice"), ["a", "c"], "b was disliked, then liked");
    assert!(db.session_history("alice", "nope").is_none());
    assert!(db.hard_negatives("nobody").is_empty());
}

#[test]
fn a_ranking_read_right_after_an_ack_sees_the_write() {
    // Score deltas of known items are queued and moved into the ranking by a background
    // thread; a read must absorb the queue, not race that thread.
    let clock = Arc::new(ManualClock::new(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options(&clock, Weights::default())).unwrap();
    db.write_batch((0..300).map(|n| signal(&format!("u{n}"), "a", SignalKind::Like)).collect()).unwrap();
    db.write(signal("u0", "b", SignalKind::Like)).unwrap();
    let one = db.score("b").unwrap();
    assert!(one > 0.0);
    for n in 2..=400u32 {
        db.write(signal(&format!("u{n}"), "b", SignalKind::Like)).unwrap();
        let score = db.score("b").unwrap();
        assert!(
            (score - f64::from(n) * one).abs() < 1e-6 * score,
            "after {n} likes: {score}, not {n} x {one}"
        );
        // (At 300 each, the tie breaks by a hash of the names.)
        if n != 300 {
            let leader = if n > 300 { "b" } else { "a" };
            assert_eq!(names(&db, 1), [leader], "after {n} likes of b");
        }
    }
}
