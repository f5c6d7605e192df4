//! The embedded API's contract on real files: validation rejects a batch whole, session
//! SeqNo and idempotency keys make retries exactly-once before and after a restart, and an
//! acknowledged write is visible to the next read.

use tidal::{Db, Error, Options, Signal, SignalKind};

fn open(dir: &std::path::Path) -> Db {
    Db::open(dir, Options { shards: Some(4), ..Options::default() }).expect("open")
}

fn like(user: &str, item: &str) -> Signal {
    Signal::new(user, item, SignalKind::Like)
}

fn sequenced(user: &str, session: &str, seq: u64, item: &str) -> Signal {
    let mut s = Signal::new(user, item, SignalKind::Click);
    s.session = Some(session.into());
    s.session_seq = Some(seq);
    s
}

#[test]
fn acknowledged_write_is_visible_to_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for n in 1..=50 {
        let ack = db.write(like(&format!("u{n}"), "hot")).unwrap();
        assert!(!ack.duplicate);
        let view = db.item("hot").expect("visible");
        assert_eq!(view.state.count(&SignalKind::Like), n);
        assert!(view.seqs[ack.shard as usize] >= ack.seq, "read reflects the acked seq");
    }
}

#[test]
fn one_bad_signal_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut bad = like("u2", "b");
    bad.value = f64::INFINITY;
    let err = db.write_batch(vec![like("u1", "a"), bad, like("u3", "c")]).unwrap_err();
    match err {
        Error::InvalidSignal { index, field, .. } => {
            assert_eq!((index, field.as_str()), (1, "value"))
        }
        other => panic!("unexpected {other}"),
    }
    assert!(db.item("a").is_none() && db.item("c").is_none(), "nothing of the batch was written");
    assert_eq!(db.applied_seqs().iter().sum::<u64>(), 0);
}

#[test]
fn session_rules_duplicate_and_gap() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let first = db.write(sequenced("u", "s", 1, "x")).unwrap();
    db.write(sequenced("u", "s", 2, "y")).unwrap();
    let again = db.write(sequenced("u", "s", 1, "x")).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.shard, again.seq, again.hlc), (first.shard, first.seq, first.hlc), "the original ack");
    match db.write(sequenced("u", "s", 4, "z")).unwrap_err() {
        Error::SessionGap { expected, got, .. } => assert_eq!((expected, got), (3, 4)),
        other => panic!("unexpected {other}"),
    }
    assert!(db.item("z").is_none());
    assert_eq!(db.item("x").unwrap().state.count(&SignalKind::Click), 1);
    assert_eq!(db.session_hwm("u", "s"), Some(2));
}

#[test]
fn a_gap_anywhere_rejects_the_batch_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let batch = vec![like("other", "a"), sequenced("u", "s", 1, "b"), sequenced("u", "s", 3, "c")];
    assert!(matches!(db.write_batch(batch).unwrap_err(), Error::SessionGap { expected: 2, got: 3, .. }));
    assert!(db.item("a").is_none() && db.item("b").is_none());
}

#[test]
fn duplicates_inside_one_batch_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut a = like("u", "item");
    a.idempotency_key = Some("k1".into());
    let acks = db
        .write_batch(vec![a.clone(), a.clone(), sequenced("u", "s", 1, "q"), sequenced("u", "s", 1, "q")])
        .unwrap();
    assert!(!acks[0].duplicate && acks[1].duplicate && !acks[2].duplicate && acks[3].duplicate);
    assert_eq!(acks[0].seq, acks[1].seq);
    assert_eq!(db.item("item").unwrap().state.count(&SignalKind::Like), 1);
    assert_eq!(db.item("q").unwrap().state.count(&SignalKind::Click), 1);
}

#[test]
fn retries_change_nothing_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keyed = like("u", "item");
    keyed.idempotency_key = Some("order-42".into());
    let (a1, a2) = {
        let db = open(dir.path());
        let a1 = db.write(keyed.clone()).unwrap();
        let a2 = db.write(sequenced("u", "s", 1, "seq-item")).unwrap();
        db.close().unwrap();
        (a1, a2)
    };
    let db = open(dir.path());
    let r1 = db.write(keyed).unwrap();
    let r2 = db.write(sequenced("u", "s", 1, "seq-item")).unwrap();
    assert!(r1.duplicate && r2.duplicate);
    assert_eq!((r1.seq, r1.hlc), (a1.seq, a1.hlc));
    assert_eq!((r2.seq, r2.hlc), (a2.seq, a2.hlc));
    assert_eq!(db.item("item").unwrap().state.count(&SignalKind::Like), 1);
    assert_eq!(db.item("seq-item").unwrap().state.count(&SignalKind::Click), 1);
    db.write(sequenced("u", "s", 2, "next")).expect("the session continues after restart");
}

#[test]
fn retries_change_nothing_after_a_snapshot_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keyed = like("u", "item");
    keyed.idempotency_key = Some("k".into());
    {
        let db = open(dir.path());
        db.write(keyed.clone()).unwrap();
        db.write(sequenced("u", "s", 1, "x")).unwrap();
        db.snapshot().unwrap();
        db.close().unwrap();
    }
    let db = open(dir.path());
    assert!(db.recovery_report().shards.iter().any(|s| s.snapshot_seq.is_some()));
    assert!(db.write(keyed).unwrap().duplicate);
    assert!(db.write(sequenced("u", "s", 1, "x")).unwrap().duplicate);
    assert_eq!(db.item("item").unwrap().state.count(&SignalKind::Like), 1);
}

#[test]
fn concurrent_writers_and_readers_never_see_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options { shards: Some(1), ..Options::default() }).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every batch writes one like to both items: a reader must see them equal.
                let a = db.item("left").map_or(0, |v| v.state.count(&SignalKind::Like));
                let b = db.item("right").map_or(0, |v| v.state.count(&SignalKind::Like));
                let user = db.user("pair").map_or(0, |u| u.history.len());
                assert!(user % 2 == 0, "history shows half a batch");
                assert!(a <= b, "left {a} ran ahead of right {b}");
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..200 {
        db.write_batch(vec![like("pair", "right"), like("pair", "left")]).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(db.item("left").unwrap().state.count(&SignalKind::Like), 200);
}

#[test]
fn shard_count_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().unwrap();
    let err = Db::open(dir.path(), Options { shards: Some(8), ..Options::default() }).err().expect("refused");
    assert!(matches!(err, Error::Manifest { .. }), "{err}");
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.manifest().shards, 4);
}

/// Set in the child of [`a_second_process_cannot_open_the_same_directory`].
const PROBE_DIR: &str = "TIDAL_OPEN_PROBE_DIR";

/// In a child, tries to open the directory the env names and exits 0 (opened) or 3
/// (refused). As an ordinary test, checks that a second open in this process is refused.
#[test]
fn open_probe() {
    if let Ok(dir) = std::env::var(PROBE_DIR) {
        let code = match Db::open(&dir, Options::default()) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("probe: {e}");
                3
            }
        };
        std::process::exit(code);
    }
    let dir = tempfile::tempdir().unwrap();
    let _db = open(dir.path());
    assert!(Db::open(dir.path(), Options::default()).is_err());
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let probe = |dir: &std::path::Path| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "open_probe", "--nocapture"])
            .env(PROBE_DIR, dir)
            .status()
            .unwrap()
            .code()
    };
    let db = open(dir.path());
    assert_eq!(probe(dir.path()), Some(3), "a second process is refused while the store is open");
    db.close().unwrap();
    assert_eq!(probe(dir.path()), Some(0), "and may open it once the first closed it");
}

#[test]
fn pipelined_batches_of_one_session_are_not_mistaken_for_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    // Submit batch 2 while batch 1 (seqs 1..=300) may still be committing.
    let first = db.submit((1..=300).map(|n| sequenced("u", "s", n, &format!("a{n}"))).collect()).unwrap();
    let second = db.submit((301..=600).map(|n| sequenced("u", "s", n, &format!("a{n}"))).collect()).unwrap();
    assert!(first.wait().unwrap().iter().all(|a| !a.duplicate));
    assert!(second.wait().unwrap().iter().all(|a| !a.duplicate));
    assert_eq!(db.session_hwm("u", "s"), Some(600));
    // A real gap behind in-flight writes is still refused by the shard, and writes nothing.
    let pending = db.submit(vec![sequenced("u", "s", 601, "ok")]).unwrap();
    let gap = db.submit(vec![sequenced("u", "s", 700, "gap")]);
    assert!(pending.wait().is_ok());
    let refused = gap.and_then(|p| p.wait());
    assert!(matches!(refused, Err(Error::SessionGap { expected: 602, got: 700, .. })), "{refused:?}");
    assert!(db.item("gap").is_none());
}

#[test]
fn an_oversized_batch_is_refused_whole_and_the_shard_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let big: Vec<Signal> = (0..4_000)
        .map(|n| {
            let mut s = like("u", &format!("big{n}"));
            for a in 0..tidal::signal::ATTRS_MAX {
                s.attrs.insert(format!("a{a}"), "x".repeat(tidal::signal::ATTR_VALUE_BYTES_MAX));
            }
            s
        })
        .collect();
    assert!(matches!(db.write_batch(big), Err(Error::BatchBytesTooLarge { .. })));
    assert!(db.item("big0").is_none());
    db.write(like("u", "small")).expect("the shard still takes writes");
}

#[test]
fn a_stale_retry_rejects_the_whole_cross_shard_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for n in 1..=20 {
        db.write(sequenced("u", "s", n, &format!("x{n}"))).unwrap();
    }
    // Seq 1 is older than the acks kept: the shard would refuse it; nothing else may land.
    let others: Vec<Signal> = (0..8).map(|n| like(&format!("other{n}"), "bystander")).collect();
    let mut batch = others.clone();
    batch.push(sequenced("u", "s", 1, "x1"));
    let result = db.write_batch(batch);
    assert!(matches!(result, Err(Error::StaleDuplicate { got: 1, hwm: 20, .. })), "{result:?}");
    assert!(db.item("bystander").is_none(), "no part of the batch was written");
    assert_eq!(db.item("x1").unwrap().state.count(&SignalKind::Click), 1);
}

#[test]
fn a_retry_into_an_evicted_session_is_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let limits = tidal::shard::state::StateLimits { user_sessions_max: 2, ..Default::default() };
    let options = Options { shards: Some(1), state_limits: Some(limits), ..Options::default() };
    let db = Db::open(dir.path(), options.clone()).unwrap();
    db.write(sequenced("u", "old", 1, "first")).unwrap();
    db.write(sequenced("u", "s2", 1, "a")).unwrap();
    db.write(sequenced("u", "s3", 1, "b")).unwrap();
    assert_eq!(db.session_hwm("u", "old"), None, "evicted by the bound");
    assert!(matches!(db.write(sequenced("u", "old", 1, "first")), Err(Error::StaleDuplicate { .. })));
    db.close().unwrap();
    let db = Db::open(dir.path(), options).unwrap();
    assert!(matches!(db.write(sequenced("u", "old", 1, "first")), Err(Error::StaleDuplicate { .. })));
    assert_eq!(db.item("first").unwrap().state.count(&SignalKind::Click), 1);
    db.write(sequenced("u", "old", 2, "second")).expect("the session continues");
}

#[test]
fn a_store_used_and_dropped_inside_an_async_runtime_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = open(dir.path());
        let pending = db.submit(vec![like("u", "async")]).unwrap();
        assert!(!pending.wait_async().await.unwrap()[0].duplicate);
        db.snapshot().unwrap();
        drop(db);
    });
    assert_eq!(open(dir.path()).item("async").unwrap().state.count(&SignalKind::Like), 1);
}

#[test]
fn a_retry_with_a_known_key_is_a_duplicate_even_when_its_seqno_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let keyed = |n: u64| {
        let mut s = sequenced("u", "s", n, &format!("k{n}"));
        s.idempotency_key = Some(format!("key-{n}"));
        s
    };
    db.write_batch((1..=20).map(keyed).collect()).unwrap();
    let again = db.write_batch((1..=20).map(keyed).collect()).expect("retries by key are duplicates");
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(db.item("k1").unwrap().state.count(&SignalKind::Click), 1);
}
