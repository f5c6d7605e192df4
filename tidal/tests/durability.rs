//! Durability modes and fail-stop, on `SimVfs` (which counts syncs and can fail one):
//! `fsync` makes each acknowledged batch durable before the ack, `interval` within the
//! interval, `none` never; after an I/O error a shard refuses writes until reopened, and the
//! reopened store holds exactly what was acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidal::wal::sim_vfs::{SimOp, SimVfs, TornWrite};
use tidal::{Db, Durability, Error, Options, Signal, SignalKind};

fn options(vfs: &SimVfs, durability: Durability) -> Options {
    Options { shards: Some(1), durability, vfs: Arc::new(vfs.clone()), ..Options::default() }
}

fn like(n: u64) -> Signal {
    Signal::new("u", format!("i{n}"), SignalKind::Like)
}

fn count_after_power_cut(vfs: &SimVfs, dir: &Path, n: u64) -> Option<i64> {
    let image = vfs.crash_image(TornWrite::None, 1);
    let db = Db::open(dir, options(&image, Durability::None)).expect("open the crash image");
    db.item(&format!("i{n}")).map(|v| v.state.count(&SignalKind::Like))
}

#[test]
fn fsync_mode_makes_every_ack_durable_with_one_sync_per_batch() {
    let (vfs, dir) = (SimVfs::new(), Path::new("/d/fsync"));
    let db = Db::open(dir, options(&vfs, Durability::Fsync)).unwrap();
    let before = vfs.sync_counts().sync_data;
    db.write_batch((0..100).map(like).collect()).unwrap();
    assert_eq!(vfs.sync_counts().sync_data - before, 1, "one fsync for the whole batch");
    assert_eq!(count_after_power_cut(&vfs, dir, 99), Some(1));
}

#[test]
fn interval_mode_syncs_within_the_interval() {
    let (vfs, dir) = (SimVfs::new(), Path::new("/d/interval"));
    // Wide margins: a loaded CI machine must not make this flaky.
    let db = Db::open(dir, options(&vfs, Durability::Interval(Duration::from_millis(1_500)))).unwrap();
    // After a whole interval the next write syncs on the spot; the one after it does not.
    std::thread::sleep(Duration::from_millis(1_600));
    db.write(like(0)).unwrap();
    db.write(like(1)).unwrap();
    assert_eq!(count_after_power_cut(&vfs, dir, 0), Some(1), "synced on the spot");
    assert_eq!(count_after_power_cut(&vfs, dir, 1), None, "acked but not yet synced: may be lost");
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(count_after_power_cut(&vfs, dir, 1), Some(1), "synced within the interval");
}

#[test]
fn none_mode_never_syncs_the_wal() {
    let (vfs, dir) = (SimVfs::new(), Path::new("/d/none"));
    let db = Db::open(dir, options(&vfs, Durability::None)).unwrap();
    let before = vfs.sync_counts().sync_data;
    for n in 0..20 {
        db.write(like(n)).unwrap();
    }
    assert_eq!(vfs.sync_counts().sync_data, before);
    assert_eq!(count_after_power_cut(&vfs, dir, 0), None);
}

#[test]
fn a_failed_fsync_stops_the_shard_and_reopening_recovers_what_was_acked() {
    let (vfs, dir) = (SimVfs::new(), Path::new("/d/failstop"));
    let db = Db::open(dir, options(&vfs, Durability::Fsync)).unwrap();
    db.write_batch((0..10).map(like).collect()).unwrap();
    vfs.fail_next(SimOp::SyncData);
    assert!(
        matches!(db.write(like(10)), Err(Error::ShardFailed { shard: 0, .. })),
        "the failed batch is not acked"
    );
    // Fail-stop: no retry of the fsync, no further writes (the kernel may have dropped pages).
    assert!(matches!(db.write(like(11)), Err(Error::ShardFailed { .. })));
    assert!(db.item("i10").is_none() && db.item("i11").is_none(), "nothing unacknowledged is visible");
    assert!(matches!(db.snapshot(), Err(Error::ShardFailed { .. })));
    drop(db);
    let image = vfs.crash_image(TornWrite::None, 7);
    let db = Db::open(dir, options(&image, Durability::Fsync)).unwrap();
    for n in 0..10 {
        assert_eq!(db.item(&format!("i{n}")).map(|v| v.state.count(&SignalKind::Like)), Some(1));
    }
    db.write(like(12)).expect("a reopened store takes writes again");
}

#[test]
fn a_failed_write_also_fails_stop() {
    let (vfs, dir) = (SimVfs::new(), Path::new("/d/failwrite"));
    let db = Db::open(dir, options(&vfs, Durability::Fsync)).unwrap();
    db.write(like(0)).unwrap();
    vfs.fail_next(SimOp::Write);
    assert!(matches!(db.write(like(1)), Err(Error::ShardFailed { .. })));
    drop(db);
    let db = Db::open(dir, options(&vfs, Durability::Fsync)).unwrap();
    assert_eq!(db.item("i0").map(|v| v.state.count(&SignalKind::Like)), Some(1));
    assert!(db.item("i1").is_none());
}
