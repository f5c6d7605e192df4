//! Preference export on a hand-built history, end to end through `Db`.
//!
//! The history (times in the store's HLC, via a manual clock; implicit window 60 s, session
//! gap 30 min, the defaults) holds, for alice: an old dislike (`old-neg`, session s0) that
//! must come back as a `history` negative elsewhere, a dislike later liked (`flip`: never
//! rejected), chosen items, an implicit negative (`n2`: shown, ignored), explicit ones (`d1`
//! dislike, `d2` low rating) and an impression answered by dwell (`n4`: not a negative);
//! bob has a skip, a rejected label and a session-less context; carol only ignored
//! impressions. The tests check the exact rows in Rust, then read every JSONL and Parquet
//! file back with Python's pyarrow (`tests/export_check.py`), which checks columns, row
//! counts and the hard-negative rules independently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tidal::hlc::ManualClock;
use tidal::{Db, Durability, Options, Signal, SignalKind};
use tidal_export::{
    ExportFormat, ExportOptions, ExportReport, Hooks, ItemTextProvider, MinedNegatives, export, export_dir,
};

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
const T0: u64 = 100 * DAY_MS;
const T1: u64 = T0 + DAY_MS;
const T2: u64 = T0 + 2 * DAY_MS;
const EXPORTED_AT_MS: u64 = 1_700_000_000_000;
/// Rows the hand-built history must give per format (see `expected_dpo_rows`).
const DPO_ROWS: usize = 20;
const KTO_ROWS: usize = 24;

fn sig(user: &str, session: Option<&str>, item: &str, kind: SignalKind, value: f64) -> Signal {
    let mut s = Signal::new(user, item, kind);
    s.session = session.map(str::to_owned);
    s.value = value;
    if s.kind == SignalKind::Label {
        s.attrs.insert("label".into(), "relevant".into());
    }
    // Padding: segments of 4 KiB roll every few signals, so snapshots archive some.
    s.attrs.insert("note".into(), "x".repeat(1_000));
    s
}

/// Writes the hand-built history; returns the open store.
fn build_store(dir: &Path) -> Db {
    use SignalKind::*;
    let clock = Arc::new(ManualClock::new(T0));
    let options = Options {
        shards: Some(4),
        durability: Durability::None,
        segment_bytes_max: 4096,
        clock: clock.clone(),
        ..Options::default()
    };
    let db = Db::open(dir, options).unwrap();
    let history: Vec<(u64, Signal)> = vec![
        (T0, sig("alice", Some("s0"), "old-neg", Dislike, 1.0)),
        (T0 + 1_000, sig("alice", Some("s0"), "flip", Dislike, 1.0)),
        (T0 + 2_000, sig("alice", Some("s0"), "a-liked-s0", Like, 1.0)),
        (T1, sig("alice", Some("s1"), "n1", Impression, 1.0)),
        (T1 + 5_000, sig("alice", Some("s1"), "n1", Click, 1.0)),
        (T1 + 10_000, sig("alice", Some("s1"), "n2", Impression, 1.0)),
        (T1 + 20_000, sig("alice", Some("s1"), "n3", Like, 1.0)),
        (T1 + 30_000, sig("alice", Some("s1"), "d1", Dislike, 1.0)),
        (T1 + 40_000, sig("alice", Some("s1"), "d2", Rating, 2.0)),
        (T1 + HOUR_MS, sig("bob", Some("s1"), "b1", Like, 1.0)),
        (T1 + HOUR_MS + 1_000, sig("bob", Some("s1"), "b2", Skip, 1.0)),
        (T1 + HOUR_MS + 2_000, sig("bob", Some("s1"), "b3", Label, 0.0)),
        (T1 + 2 * HOUR_MS, sig("bob", None, "b4", Click, 1.0)),
        (T1 + 3 * HOUR_MS, sig("carol", Some("s1"), "c1", Impression, 1.0)),
        (T1 + 3 * HOUR_MS + 1_000, sig("carol", Some("s1"), "c2", Impression, 1.0)),
        (T2, sig("alice", Some("s2"), "flip", Like, 1.0)),
        (T2 + 1_000, sig("alice", Some("s2"), "n4", Impression, 1.0)),
        (T2 + 5_000, sig("alice", Some("s2"), "n4", Dwell, 30.0)),
    ];
    for (n, (at_ms, signal)) in history.into_iter().enumerate() {
        clock.set(at_ms);
        db.write(signal).unwrap();
        if n % 4 == 3 {
            // Part of the history moves to archive/: the export must read both.
            db.snapshot().unwrap();
        }
    }
    let archived = std::fs::read_dir(dir.join("archive")).unwrap().count();
    assert!(archived > 0, "part of the history must be in archive/");
    db
}

fn options(format: ExportFormat) -> ExportOptions {
    ExportOptions {
        format,
        exported_at_ms: EXPORTED_AT_MS,
        test_fraction: 0.5,
        seed: 7,
        ..ExportOptions::default()
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("null").to_owned()
}

/// (user, session, chosen_id, rejected_id, negative_source) of every DPO row, sorted.
fn expected_dpo_rows() -> BTreeSet<(String, String, String, String, String)> {
    let rows: &[(&str, &str, &str, &str, &str)] = &[
        ("alice", "s0", "a-liked-s0", "old-neg", "explicit"),
        ("alice", "s0", "a-liked-s0", "d2", "history"),
        ("alice", "s0", "a-liked-s0", "d1", "history"),
        ("alice", "s0", "a-liked-s0", "n2", "history"),
        ("alice", "s1", "n1", "d1", "explicit"),
        ("alice", "s1", "n1", "d2", "explicit"),
        ("alice", "s1", "n1", "n2", "implicit"),
        ("alice", "s1", "n1", "old-neg", "history"),
        ("alice", "s1", "n3", "d1", "explicit"),
        ("alice", "s1", "n3", "d2", "explicit"),
        ("alice", "s1", "n3", "n2", "implicit"),
        ("alice", "s1", "n3", "old-neg", "history"),
        ("alice", "s2", "flip", "d2", "history"),
        ("alice", "s2", "flip", "d1", "history"),
        ("alice", "s2", "flip", "n2", "history"),
        ("alice", "s2", "flip", "old-neg", "history"),
        ("bob", "s1", "b1", "b2", "explicit"),
        ("bob", "s1", "b1", "b3", "explicit"),
        ("bob", "-", "b4", "b3", "history"),
        ("bob", "-", "b4", "b2", "history"),
    ];
    let owned = rows.iter().map(|r| (r.0.into(), r.1.into(), r.2.into(), r.3.into(), r.4.into()));
    owned.collect()
}

#[test]
fn dpo_rows_follow_the_hard_negative_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    let out = dir.path().join("dpo.jsonl");
    let report = export(&db, &out, &options(ExportFormat::Dpo), &Hooks::default()).unwrap();
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), DPO_ROWS);
    assert_eq!(report.rows as usize, DPO_ROWS);
    assert_eq!(report.rows_train + report.rows_test, report.rows);
    let got: BTreeSet<_> = rows
        .iter()
        .map(|r| {
            (s(r, "user"), s(r, "session"), s(r, "chosen_id"), s(r, "rejected_id"), s(r, "negative_source"))
        })
        .collect();
    assert_eq!(got, expected_dpo_rows());
    // Within a context, pairs run along diagonals; prompts name earlier chosen items.
    let s1: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| s(r, "user") == "alice" && s(r, "session") == "s1")
        .map(|r| (s(r, "chosen_id"), s(r, "rejected_id"), s(r, "prompt")))
        .collect();
    let first = "User alice. No history.";
    let second = "User alice. Chosen earlier in this session: n1.";
    assert_eq!(s1[0], ("n1".into(), "d1".into(), first.into()));
    assert_eq!(s1[1], ("n1".into(), "d2".into(), first.into()));
    assert_eq!(s1[2], ("n3".into(), "d1".into(), second.into()));
    let r = &rows[0];
    assert_eq!(r["exported_at_ms"], EXPORTED_AT_MS);
    assert_eq!(r["format"], "dpo");
    assert!(r["context"].is_null(), "contexts are keyed by session");
    assert_eq!(report.shards.iter().map(|s| s.signals_read).sum::<u64>(), 18);
    assert!(report.shards.iter().all(|s| s.first_seq <= 1 && s.hole.is_none()), "{report:?}");
}

#[test]
fn kto_and_reward_rows_carry_labels_and_margins() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    let kto = dir.path().join("kto.jsonl");
    export(&db, &kto, &options(ExportFormat::Kto), &Hooks::default()).unwrap();
    let rows = read_jsonl(&kto);
    assert_eq!(rows.len(), KTO_ROWS);
    let labelled = |user: &str, label: bool| -> BTreeSet<(String, String, String)> {
        let of_user = rows.iter().filter(|r| s(r, "user") == user && r["label"] == label);
        of_user.map(|r| (s(r, "session"), s(r, "item_id"), s(r, "negative_source"))).collect()
    };
    let set = |items: &[(&str, &str, &str)]| -> BTreeSet<(String, String, String)> {
        items.iter().map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into())).collect()
    };
    assert_eq!(labelled("carol", true), set(&[]));
    assert_eq!(labelled("carol", false), set(&[("s1", "c1", "implicit"), ("s1", "c2", "implicit")]));
    assert_eq!(labelled("bob", true), set(&[("s1", "b1", "null"), ("-", "b4", "null")]));
    assert_eq!(rows.iter().filter(|r| r["label"] == false).count(), 18);

    let reward = dir.path().join("reward.jsonl");
    export(&db, &reward, &options(ExportFormat::Reward), &Hooks::default()).unwrap();
    let rows = read_jsonl(&reward);
    assert_eq!(rows.len(), DPO_ROWS);
    let margin = |chosen: &str, rejected: &str| {
        let row = rows.iter().find(|r| s(r, "chosen_id") == chosen && s(r, "rejected_id") == rejected);
        row.and_then(|r| r["margin"].as_f64()).unwrap()
    };
    // Weights: click 1, like 3, dislike -3, rating 0.3 per point, impression 0.
    assert_eq!(margin("n1", "d1"), 4.0, "click 1 minus dislike -3");
    assert!((margin("n1", "d2") - 0.4).abs() < 1e-9, "click 1 minus rating 2 x 0.3");
    assert_eq!(margin("n3", "n2"), 3.0, "like 3 minus an implicit negative's 0");
    assert_eq!(margin("flip", "old-neg"), 6.0, "like 3 minus a history dislike -3");
    assert!(rows.iter().all(|r| r["margin"].as_f64().unwrap() > 0.0));
}

struct Titles;

impl ItemTextProvider for Titles {
    fn text(&self, item: &str) -> Option<String> {
        (item != "n2").then(|| format!("Title of {item}"))
    }
}

struct Similar;

impl MinedNegatives for Similar {
    fn mine(&self, _user: &str, chosen: &[&str], engaged: &dyn Fn(&str) -> bool) -> Vec<String> {
        let near = chosen.iter().map(|c| format!("near-{c}")).chain(["d1".to_owned(), "flip".to_owned()]);
        near.filter(|item| !engaged(item)).collect()
    }
}

#[test]
fn item_texts_and_mined_negatives_come_from_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    let out = dir.path().join("dpo.jsonl");
    let hooks = Hooks { item_text: Some(&Titles), mined: Some(&Similar), ..Hooks::default() };
    let report = export(&db, &out, &options(ExportFormat::Dpo), &hooks).unwrap();
    let rows = read_jsonl(&out);
    let mined_of = |user: &str| -> BTreeSet<(String, String)> {
        let of_user = rows.iter().filter(|r| s(r, "negative_source") == "mined" && s(r, "user") == user);
        of_user.map(|r| (s(r, "chosen_id"), s(r, "rejected_id"))).collect()
    };
    let mined = mined_of("alice");
    assert!(mined.contains(&("n1".into(), "near-n1".into())));
    assert!(mined.contains(&("n1".into(), "near-n3".into())));
    assert!(
        mined.iter().all(|(_, item)| item.starts_with("near-")),
        "alice's own items are never mined: {mined:?}"
    );
    assert!(mined_of("bob").contains(&("b1".into(), "d1".into())), "alice's items are fresh to bob");
    assert!(mined.contains(&("n3".into(), "near-n1".into())));
    assert!(mined.contains(&("flip".into(), "near-flip".into())));
    let all_mined = mined.len() + mined_of("bob").len();
    assert_eq!(report.rows_by_source.mined as usize, all_mined, "every mined pair once");
    let row = rows.iter().find(|r| s(r, "rejected_id") == "n2").unwrap();
    assert_eq!(s(row, "rejected"), "n2", "no text: the id");
    assert_eq!(s(row, "chosen"), format!("Title of {}", s(row, "chosen_id")));
    let later = rows.iter().find(|r| s(r, "chosen_id") == "n3").unwrap();
    assert_eq!(s(later, "prompt"), "User alice. Chosen earlier in this session: Title of n1.");
}

#[test]
fn split_keeps_each_session_whole_and_follows_the_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    for (fraction, want_test) in [(0.0, Some(false)), (1.0, Some(true)), (0.5, None)] {
        let out = dir.path().join(format!("kto-{fraction}.jsonl"));
        let options = ExportOptions { test_fraction: fraction, ..options(ExportFormat::Kto) };
        let report = export(&db, &out, &options, &Hooks::default()).unwrap();
        let rows = read_jsonl(&out);
        let mut split_of = std::collections::BTreeMap::new();
        for r in &rows {
            let split = s(r, "split");
            let previous = split_of.insert((s(r, "user"), s(r, "session")), split.clone());
            assert!(previous.is_none_or(|p| p == split), "one session, one split");
            if let Some(test) = want_test {
                assert_eq!(split == "test", test);
            }
        }
        let tests = rows.iter().filter(|r| s(r, "split") == "test").count() as u64;
        assert_eq!((report.rows_test, report.rows_train), (tests, rows.len() as u64 - tests));
    }
}

#[test]
fn context_ids_key_contexts_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let options = Options { durability: Durability::None, clock: clock.clone(), ..Options::default() };
    let db = Db::open(dir.path().join("store"), options).unwrap();
    for (n, (ctx, item, kind)) in
        [("q1", "x", SignalKind::Click), ("q1", "y", SignalKind::Skip), ("q2", "z", SignalKind::Like)]
            .into_iter()
            .enumerate()
    {
        clock.set(T0 + n as u64 * 1_000);
        let mut signal = sig("dan", Some("s"), item, kind, 1.0);
        signal.context = Some(ctx.into());
        db.write(signal).unwrap();
    }
    let out = dir.path().join("dpo.jsonl");
    let options = ExportOptions { by_context_id: true, ..options_dpo() };
    export(&db, &out, &options, &Hooks::default()).unwrap();
    let rows: Vec<(String, String, String, String)> = read_jsonl(&out)
        .iter()
        .map(|r| (s(r, "context"), s(r, "chosen_id"), s(r, "rejected_id"), s(r, "negative_source")))
        .collect();
    let want = [("q1", "x", "y", "explicit"), ("q2", "z", "y", "history")];
    let want: Vec<(String, String, String, String)> =
        want.iter().map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into())).collect();
    assert_eq!(rows, want);
}

fn options_dpo() -> ExportOptions {
    options(ExportFormat::Dpo)
}

/// Writes all six outputs into `dir`; returns their paths and the reports.
fn export_all(db: &Db, dir: &Path) -> Vec<(PathBuf, ExportReport)> {
    let mut out = Vec::new();
    for format in [ExportFormat::Dpo, ExportFormat::Kto, ExportFormat::Reward] {
        for ext in ["jsonl", "parquet"] {
            let path = dir.join(format!("{}.{ext}", format.as_str()));
            let report = export(db, &path, &options(format), &Hooks::default()).unwrap();
            out.push((path, report));
        }
    }
    out
}

#[test]
fn same_input_gives_byte_identical_files_from_db_and_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let db = build_store(&store);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let first = export_all(&db, &a);
    let second = export_all(&db, &b);
    // Beside the open store (no lock taken), the directory export reads the same history.
    let beside = dir.path().join("beside.jsonl");
    export_dir(&store, &beside, &options(ExportFormat::Dpo), &Hooks::default()).unwrap();
    assert_eq!(std::fs::read(&beside).unwrap(), std::fs::read(a.join("dpo.jsonl")).unwrap());
    db.close().unwrap();
    for ((path_a, report_a), (path_b, _)) in first.iter().zip(&second) {
        assert!(report_a.rows > 0);
        assert_eq!(std::fs::read(path_a).unwrap(), std::fs::read(path_b).unwrap(), "{}", path_a.display());
        // The closed store, exported without opening it, gives the same bytes.
        let from_dir = dir.path().join(path_a.file_name().unwrap());
        let format = report_a.format;
        export_dir(&store, &from_dir, &options(format), &Hooks::default()).unwrap();
        assert_eq!(
            std::fs::read(path_a).unwrap(),
            std::fs::read(&from_dir).unwrap(),
            "{}",
            from_dir.display()
        );
    }
}

#[test]
fn a_bad_output_name_or_option_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    let csv = dir.path().join("out.csv");
    let err = export(&db, &csv, &options_dpo(), &Hooks::default()).unwrap_err();
    assert_eq!(err.kind(), tidal::ErrorKind::InvalidInput, "{err}");
    let bad = ExportOptions { test_fraction: 2.0, ..options_dpo() };
    let jsonl = dir.path().join("out.jsonl");
    assert!(export(&db, &jsonl, &bad, &Hooks::default()).is_err());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["store"], "nothing written");
    let missing = export_dir(&dir.path().join("nowhere"), &jsonl, &options_dpo(), &Hooks::default());
    assert_eq!(missing.unwrap_err().kind(), tidal::ErrorKind::Corruption);
}

#[test]
fn pyarrow_reads_the_parquet_and_jsonl_outputs_and_checks_the_rules() {
    let python = Command::new("python3").args(["-c", "import pyarrow"]).output();
    match python {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import pyarrow ({}): run scripts/test-all.sh, which installs it \
             (or `python3 -m pip install pyarrow`)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("python3 is not available ({e}): run scripts/test-all.sh on a machine with python3"),
    }
    let dir = tempfile::tempdir().unwrap();
    let db = build_store(&dir.path().join("store"));
    let outputs = export_all(&db, dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export_check.py");
    let expect = format!("dpo={DPO_ROWS},kto={KTO_ROWS},reward={DPO_ROWS}");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--expect", &expect, "--exported-at-ms", &EXPORTED_AT_MS.to_string()])
        .args(outputs.iter().map(|(path, _)| path))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "export_check.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checked 6 files"), "{stdout}");
}
