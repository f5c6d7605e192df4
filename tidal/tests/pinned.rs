//! What apply depends on is pinned at creation (manifest) and refused when options
//! contradict it: shard count, decay half-life, state limits, node id; and a store written
//! before limits were pinned gets them pinned on its next open.

use tidal::manifest::{MANIFEST_FILE, ManifestError};
use tidal::shard::state::StateLimits;
use tidal::{Db, Error, Options, Signal, SignalKind};

fn limits() -> StateLimits {
    StateLimits {
        user_history_max: 5,
        user_sessions_max: 3,
        idempotency_window_ms: 60_000,
        idempotency_keys_max: 77,
    }
}

fn pinned_error(result: tidal::Result<Db>) -> String {
    match result.err().expect("refused") {
        Error::Manifest { reason: ManifestError::Pinned { what, .. }, .. } => what.to_owned(),
        other => panic!("not a pinned-value error: {other}"),
    }
}

#[test]
fn limits_are_pinned_and_contradicting_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let custom = Options { shards: Some(2), state_limits: Some(limits()), ..Options::default() };
    let db = Db::open(dir.path(), custom.clone()).unwrap();
    db.write(Signal::new("u", "i", SignalKind::Like)).unwrap();
    db.close().unwrap();
    // Leaving them out keeps the pinned ones.
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.params().limits, limits());
    assert_eq!(db.params().shards, 2);
    db.close().unwrap();
    let other = StateLimits { user_history_max: 6, ..limits() };
    let refused = Db::open(dir.path(), Options { state_limits: Some(other), ..Options::default() });
    assert_eq!(pinned_error(refused), "state limits");
    assert_eq!(
        pinned_error(Db::open(dir.path(), Options { shards: Some(4), ..Options::default() })),
        "shard count"
    );
    let half_life = Options { score_half_life_ms: Some(1), ..Options::default() };
    assert_eq!(pinned_error(Db::open(dir.path(), half_life)), "score half-life (ms)");
    assert_eq!(pinned_error(Db::open(dir.path(), Options { node_id: 9, ..Options::default() })), "node id");
    let created = Options { created_ms: Some(7), ..Options::default() };
    assert_eq!(pinned_error(Db::open(dir.path(), created)), "decay reference time created_ms");
    // The same options as at creation are fine.
    Db::open(dir.path(), custom).unwrap().close().unwrap();
}

#[test]
fn a_manifest_from_before_pinning_gets_the_limits_pinned() {
    let dir = tempfile::tempdir().unwrap();
    Db::open(dir.path(), Options::default()).unwrap().close().unwrap();
    let path = dir.path().join(MANIFEST_FILE);
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("limits");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let db = Db::open(dir.path(), Options { state_limits: Some(limits()), ..Options::default() }).unwrap();
    assert_eq!(db.params().limits, limits(), "the options' limits become the pinned ones");
    db.close().unwrap();
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["limits"]["user_history_max"], 5, "and the manifest says so");
    let refused =
        Db::open(dir.path(), Options { state_limits: Some(StateLimits::default()), ..Options::default() });
    assert_eq!(pinned_error(refused), "state limits");
}

#[test]
fn a_damaged_manifest_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    Db::open(dir.path(), Options::default()).unwrap().close().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), b"{ not json").unwrap();
    let err = Db::open(dir.path(), Options::default()).err().expect("refused");
    assert!(matches!(err, Error::Manifest { reason: ManifestError::Damaged(_), .. }), "{err}");
    assert_eq!(err.kind(), tidal::ErrorKind::Corruption);
}
