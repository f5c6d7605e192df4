//! The README's main job, end to end with the real binary: `tidal demo` ingests the bundled
//! sample signals; running it again changes nothing (every line is acknowledged as a
//! duplicate); the store then verifies clean and answers reads.

use std::process::Command;

fn tidal(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidal")).args(args).output().expect("run tidal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn demo_ingests_once_and_reruns_are_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let lines = include_str!("../samples/signals.ndjson").lines().count();
    let (ok, first) = tidal(&["demo", "--no-serve", "--data-dir", data]);
    assert!(ok, "{first}");
    assert!(first.contains(&format!("{lines} new, 0 already there")), "{first}");
    let (ok, again) = tidal(&["demo", "--no-serve", "--data-dir", data]);
    assert!(ok, "{again}");
    assert!(again.contains(&format!("0 new, {lines} already there")), "{again}");
    let (ok, verify) = tidal(&["wal", "verify", data]);
    assert!(ok && verify.starts_with("ok:"), "{verify}");
    let (ok, item) = tidal(&["item", "article-1", "--data-dir", data]);
    assert!(ok && item.contains("\"impression\""), "{item}");
}
