//! Unit tests of the selection rules (pass 1 folding, add-wins, history, mined), run on
//! contexts built in memory by the same tracker the export uses.

use super::contexts::{ClosedContext, ContextTracker, TrackerConfig};
use super::negatives::{NegativeIndex, SelectLimits, select};
use super::*;
use tidal::hlc::Hlc;
use tidal::signal::{Signal, SignalKind};

/// Signal times are offsets from here: `Hlc::ZERO` means "never".
const BASE_MS: u64 = 1_000_000;
const HOUR_MS: u64 = 3_600_000;

/// (user, session, chosen ids, [(rejected id, source)]) of one context.
type Picked = (String, String, Vec<String>, Vec<(String, &'static str)>);

fn s(user: &str, session: &str, item: &str, kind: SignalKind) -> Signal {
    let mut signal = Signal::new(user, item, kind);
    signal.session = Some(session.into());
    signal
}

fn contexts(signals: &[(u64, Signal)]) -> Vec<ClosedContext> {
    let options = ExportOptions::default();
    let mut tracker = ContextTracker::new(TrackerConfig {
        by_context_id: false,
        session_gap_ms: options.session_gap_ms,
        implicit_window_ms: options.implicit_window_ms,
        weights: Weights::default(),
        open_contexts_max: 100,
        context_items_max: 100,
    });
    let mut out = Vec::new();
    let mut collect = |ctx| -> Result<(), ()> {
        out.push(ctx);
        Ok(())
    };
    for (seq, (ms, signal)) in signals.iter().enumerate() {
        tracker.push(seq as u64 + 1, Hlc::new(BASE_MS + *ms, 0), &signal.as_ref(), &mut collect).unwrap();
    }
    tracker.finish(&mut collect).unwrap();
    out
}

fn pick(signals: &[(u64, Signal)], limits: SelectLimits, mined: Option<&dyn MinedNegatives>) -> Vec<Picked> {
    let closed = contexts(signals);
    let mut index = NegativeIndex::default();
    for ctx in &closed {
        index.fold(ctx, &Weights::default());
    }
    index.finalize();
    closed
        .iter()
        .map(|ctx| {
            let sel = select(ctx, index.user(&ctx.user), limits, mined, &Weights::default());
            let chosen = sel.chosen.iter().map(|c| c.item.to_owned()).collect();
            let rejected = sel.rejected.iter().map(|r| (r.item.to_string(), r.source.as_str())).collect();
            (ctx.user.to_string(), ctx.session.to_string(), chosen, rejected)
        })
        .collect()
}

const LIMITS: SelectLimits = SelectLimits { items_max: 64, history_max: 16, mined_max: 8 };

fn rejected_of<'p>(picked: &'p [Picked], session: &str) -> Vec<(&'p str, &'static str)> {
    let found = picked.iter().find(|p| p.1 == session).expect("session exported");
    found.3.iter().map(|(item, source)| (item.as_str(), *source)).collect()
}

#[test]
fn a_later_positive_removes_a_negative_and_a_later_negative_restores_it() {
    use SignalKind::*;
    let signals = [
        (0, s("u", "s1", "flip", Dislike)),
        (1, s("u", "s1", "again", Dislike)),
        (2, s("u", "s1", "liked", Like)),
        (HOUR_MS, s("u", "s2", "flip", Like)),
        (HOUR_MS + 1, s("u", "s2", "again", Like)),
        (2 * HOUR_MS, s("u", "s3", "again", Dislike)),
        (2 * HOUR_MS + 1, s("u", "s3", "other", Click)),
    ];
    let picked = pick(&signals, LIMITS, None);
    assert_eq!(rejected_of(&picked, "s1"), [("again", "explicit")], "flip was liked later");
    assert_eq!(rejected_of(&picked, "s2"), [], "chosen items are never rejected");
    assert_eq!(rejected_of(&picked, "s3"), [("again", "explicit")]);
}

#[test]
fn history_negatives_come_after_own_ones_most_recent_first_and_capped() {
    use SignalKind::*;
    let signals = [
        (0, s("u", "old", "n1", Dislike)),
        (1, s("u", "old", "n2", Skip)),
        (2, s("u", "old", "n3", Impression)),
        (HOUR_MS, s("u", "new", "n4", Dislike)),
        (HOUR_MS + 1, s("u", "new", "c", Click)),
        (HOUR_MS + 2, s("u", "new", "n5", Impression)),
    ];
    let picked = pick(&signals, LIMITS, None);
    let expected =
        [("n4", "explicit"), ("n5", "implicit"), ("n3", "history"), ("n2", "history"), ("n1", "history")];
    assert_eq!(rejected_of(&picked, "new"), expected);
    assert_eq!(rejected_of(&picked, "old"), [("n1", "explicit"), ("n2", "explicit"), ("n3", "implicit")]);
    let capped = pick(&signals, SelectLimits { history_max: 1, ..LIMITS }, None);
    assert_eq!(rejected_of(&capped, "new"), [("n4", "explicit"), ("n5", "implicit"), ("n3", "history")]);
    let tiny = pick(&signals, SelectLimits { items_max: 2, ..LIMITS }, None);
    assert_eq!(rejected_of(&tiny, "new"), [("n4", "explicit"), ("n5", "implicit")]);
}

struct Miner;

impl MinedNegatives for Miner {
    fn mine(&self, user: &str, chosen: &[&str], engaged: &dyn Fn(&str) -> bool) -> Vec<String> {
        assert_eq!(user, "u");
        assert_eq!(chosen, ["c"]);
        assert!(engaged("n1") && engaged("c") && !engaged("fresh"));
        ["fresh", "n1", "c", "fresh", "fresh-2", "fresh-3"].map(String::from).to_vec()
    }
}

#[test]
fn mined_negatives_skip_engaged_chosen_and_duplicate_items() {
    use SignalKind::*;
    let signals = [(0, s("u", "s", "n1", Dislike)), (1, s("u", "s", "c", Like))];
    let picked = pick(&signals, SelectLimits { mined_max: 2, ..LIMITS }, Some(&Miner));
    assert_eq!(rejected_of(&picked, "s"), [("n1", "explicit"), ("fresh", "mined"), ("fresh-2", "mined")]);
}

#[test]
fn options_are_validated() {
    assert!(ExportOptions::default().validate().is_ok());
    let bad = [
        ExportOptions { test_fraction: 1.5, ..ExportOptions::default() },
        ExportOptions { test_fraction: f64::NAN, ..ExportOptions::default() },
        ExportOptions { session_gap_ms: 10, implicit_window_ms: 20, ..ExportOptions::default() },
        ExportOptions { pairs_per_context_max: 0, ..ExportOptions::default() },
        ExportOptions { open_contexts_max: 0, ..ExportOptions::default() },
    ];
    for options in bad {
        assert!(matches!(options.validate(), Err(ExportError::InvalidOptions(_))), "{options:?}");
    }
    assert_eq!(FileFormat::from_path(Path::new("a.JSONL")).unwrap(), FileFormat::Jsonl);
    assert_eq!(FileFormat::from_path(Path::new("a.parquet")).unwrap(), FileFormat::Parquet);
    assert!(FileFormat::from_path(Path::new("a.csv")).is_err());
}
