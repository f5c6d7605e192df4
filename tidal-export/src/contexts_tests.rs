//! Unit tests of [`ContextTracker`]: grouping, closing and implicit negatives.

use super::*;
use tidal::signal::Signal;

/// Signal times are offsets from here: `Hlc::ZERO` means "never".
const BASE_MS: u64 = 1_000_000;
const GAP_MS: u64 = 10_000;
const WINDOW_MS: u64 = 1_000;

fn config() -> TrackerConfig {
    TrackerConfig {
        by_context_id: false,
        session_gap_ms: GAP_MS,
        implicit_window_ms: WINDOW_MS,
        weights: Weights::default(),
        open_contexts_max: 1_000,
        context_items_max: 1_000,
    }
}

fn signal(user: &str, session: Option<&str>, item: &str, kind: SignalKind, value: f64) -> Signal {
    let mut s = Signal::new(user, item, kind);
    s.session = session.map(str::to_owned);
    s.value = value;
    s
}

/// Feeds `(ms, signal)` in order; returns every closed context in closing order.
fn run(config: TrackerConfig, signals: &[(u64, Signal)]) -> (Vec<ClosedContext>, ContextTracker) {
    let mut tracker = ContextTracker::new(config);
    let mut closed = Vec::new();
    let mut collect = |ctx: ClosedContext| -> Result<(), ()> {
        closed.push(ctx);
        Ok(())
    };
    for (seq, (ms, s)) in signals.iter().enumerate() {
        tracker.push(seq as u64 + 1, Hlc::new(BASE_MS + *ms, 0), &s.as_ref(), &mut collect).unwrap();
    }
    tracker.finish(&mut collect).unwrap();
    (closed, tracker)
}

#[test]
fn contexts_close_after_an_idle_gap_and_at_the_end() {
    use SignalKind::*;
    let signals = [
        (0, signal("u", Some("s"), "a", Click, 1.0)),
        (1_000, signal("u", Some("s"), "b", Like, 1.0)),
        (1_500, signal("v", None, "a", Click, 1.0)),
        // More than the gap after u's last signal: u/s closes before this one is applied.
        (1_000 + GAP_MS + 1, signal("w", Some("x"), "a", Click, 1.0)),
        // u/s again, after its close: a new context with the same key.
        (1_000 + GAP_MS + 2, signal("u", Some("s"), "c", Click, 1.0)),
    ];
    let (closed, _) = run(config(), &signals);
    let keys: Vec<(&str, &str, u64, u64)> =
        closed.iter().map(|c| (&*c.user, &*c.session, c.first_seq, c.last_seq)).collect();
    assert_eq!(keys, vec![("u", "s", 1, 2), ("v", NO_ID, 3, 3), ("w", "x", 4, 4), ("u", "s", 5, 5)]);
    assert_eq!(closed[0].hlc_min, Hlc::new(BASE_MS, 0));
    assert_eq!(closed[0].hlc_max, Hlc::new(BASE_MS + 1_000, 0));
    let items: Vec<&str> = closed[0].items.iter().map(|(name, _)| &**name).collect();
    assert_eq!(items, ["a", "b"], "items in order of appearance");
}

#[test]
fn implicit_negatives_need_an_unanswered_impression_past_the_window() {
    use SignalKind::*;
    let signals = [
        (0, signal("u", Some("s"), "late-click", Impression, 1.0)),
        (10, signal("u", Some("s"), "clicked", Impression, 1.0)),
        (20, signal("u", Some("s"), "ignored", Impression, 1.0)),
        (30, signal("u", Some("s"), "dwelled", Impression, 1.0)),
        (40, signal("u", Some("s"), "skipped", Impression, 1.0)),
        (50, signal("u", Some("s"), "clicked", Click, 1.0)),
        (60, signal("u", Some("s"), "dwelled", Dwell, 12.0)),
        (70, signal("u", Some("s"), "skipped", Skip, 1.0)),
        (WINDOW_MS + 1, signal("u", Some("s"), "late-click", Click, 1.0)),
    ];
    let (closed, _) = run(config(), &signals);
    let ctx = &closed[0];
    let implicit = |item: &str| ctx.item(item).unwrap().implicit != Hlc::ZERO;
    assert!(implicit("late-click"), "clicked only after the window");
    assert!(ctx.item("late-click").unwrap().is_chosen());
    assert!(implicit("ignored"), "never answered: expires when the context closes");
    assert!(!implicit("clicked"));
    assert!(!implicit("dwelled"), "a positive dwell is engagement");
    assert!(!implicit("skipped"), "an explicit negative stands for the impression");
    assert_eq!(ctx.item("skipped").unwrap().own_negative(), Some((Hlc::new(BASE_MS + 70, 0), true)));
    assert_eq!(ctx.item("ignored").unwrap().own_negative(), Some((Hlc::new(BASE_MS + 20, 0), false)));
    assert_eq!(ctx.item("dwelled").unwrap().own_negative(), None);
}

#[test]
fn positive_strength_sums_weighted_values() {
    use SignalKind::*;
    let signals = [(0, signal("u", None, "a", Click, 1.0)), (5, signal("u", None, "a", Like, 1.0))];
    let (closed, _) = run(config(), &signals);
    let a = closed[0].item("a").unwrap();
    assert_eq!(a.pos_strength, 4.0, "click 1 + like 3");
    assert_eq!((a.first_pos, a.last_pos), (Hlc::new(BASE_MS, 0), Hlc::new(BASE_MS + 5, 0)));
}

#[test]
fn context_ids_split_a_session_when_asked() {
    let mut a = signal("u", Some("s"), "a", SignalKind::Click, 1.0);
    a.context = Some("q1".into());
    let mut b = signal("u", Some("s"), "b", SignalKind::Click, 1.0);
    b.context = Some("q2".into());
    let signals = [(0, a), (1, b)];
    assert_eq!(run(config(), &signals).0.len(), 1);
    let (closed, _) = run(TrackerConfig { by_context_id: true, ..config() }, &signals);
    let ids: Vec<Option<&str>> = closed.iter().map(|c| c.context.as_deref()).collect();
    assert_eq!(ids, [Some("q1"), Some("q2")]);
}

#[test]
fn limits_close_the_least_recent_context_and_drop_extra_items() {
    use SignalKind::*;
    let signals = [
        (0, signal("a", None, "x", Click, 1.0)),
        (1, signal("b", None, "x", Click, 1.0)),
        (2, signal("a", None, "y", Click, 1.0)),
        (3, signal("c", None, "x", Click, 1.0)),
    ];
    let limited = TrackerConfig { open_contexts_max: 2, context_items_max: 1, ..config() };
    let (closed, tracker) = run(limited, &signals);
    assert_eq!(tracker.forced_closes, 1);
    assert_eq!(tracker.open_peak, 3, "the limit is enforced right after the context opens");
    let users: Vec<&str> = closed.iter().map(|c| &*c.user).collect();
    assert_eq!(users, ["b", "a", "c"], "b was the least recently active when c opened");
    let a = &closed[1];
    assert_eq!((a.items.len(), a.items_dropped, a.signals), (1, 1, 2));
}
