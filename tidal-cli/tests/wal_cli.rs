//! `tidal wal verify` and `tidal wal inspect` on a sound store and on one with a flipped bit
//! in an earlier segment (the library side of damage is tested in `tidal/tests/corruption.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use tidal::{Db, Options, Signal, SignalKind};

fn tidal(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidal")).args(args).arg(dir).output().expect("run tidal");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().expect("exit code"), stdout)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs
}

#[test]
fn cli_verify_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        Options { shards: Some(1), segment_bytes_max: 4096, snapshot_every_signals: 0, ..Options::default() };
    let db = Db::open(dir.path(), options).unwrap();
    for n in 0..100u64 {
        let batch = (0..3).map(|i| Signal::new(format!("u{n}"), format!("i{n}-{i}"), SignalKind::Like));
        db.write_batch(batch.collect()).unwrap();
    }
    db.close().unwrap();
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");

    let (code, out) = tidal(&["wal", "verify"], dir.path());
    assert_eq!(code, 0, "verify on a sound store: {out}");
    let (code, out) = tidal(&["wal", "inspect"], dir.path());
    assert_eq!(code, 0, "inspect: {out}");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    for seg in &segs {
        assert!(out.contains(&name(seg)), "inspect lists {}: {out}", seg.display());
    }

    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&segs[1], &bytes).unwrap();
    let (code, out) = tidal(&["wal", "verify"], dir.path());
    assert_eq!(code, 1, "verify on a flipped bit: {out}");
    assert!(out.contains(&name(&segs[1])), "names the segment: {out}");
    assert!(out.contains("at offset"), "names the offset: {out}");
}
