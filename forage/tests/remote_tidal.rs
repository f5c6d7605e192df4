//! One contract for both implementations of [`TidalAccess`]: the embedded [`tidal::Db`] and
//! [`RemoteTidal`] talking to a real `tidal serve` process. The same function runs against
//! both: writes with idempotency keys (a retry counts once), read-your-writes on item counts,
//! a user's hard negatives and history, the bandit's impression logging and posteriors, the
//! user state the feed ranks and filters with (complete from the embedded store's history;
//! from the recent ring over HTTP, which serves no raw history), a JSONL export with item texts, and refused writes that store nothing.
//! Both exports must name the same (user, session, chosen, rejected, source) rows.
//!
//! Then what only the remote client has: a wrong or missing token is `Refused`, a dead port
//! is `Unavailable`, and reading the impression logs is `Unsupported`.

mod support_tidal;

use std::collections::BTreeSet;

use forage::app::users::{Users, lock};
use forage::bandit::{
    POLICY_THOMPSON, Posterior, Shown, feedback_signals, log_impressions, read_counts, read_posteriors,
};
use forage::store::remote::RemoteTidal;
use forage::store::{StoreError, TidalAccess};
use serde_json::Value;
use tidal::{Db, Durability, Options, Signal, SignalKind};
use tidal_export::{ExportOptions, Hooks, ItemTextProvider};

use support_tidal::{TidalServer, dead_base};

const USER: &str = "ann";
const SESSION: &str = "s1";

/// Texts for the export: every item of the contract has one.
struct Texts;

impl ItemTextProvider for Texts {
    fn text(&self, item: &str) -> Option<String> {
        Some(text_of(item))
    }
}

fn text_of(item: &str) -> String {
    format!("Title of {item}: a summary")
}

fn signal(item: &str, kind: SignalKind, key: &str) -> Signal {
    let mut s = Signal::new(USER, item, kind);
    s.session = Some(SESSION.to_owned());
    s.context = Some("c1".to_owned());
    s.idempotency_key = Some(key.to_owned());
    s
}

/// Impressions of it-1..it-4, a like of it-1 and a skip of it-2, all with keys.
fn first_batch() -> Vec<Signal> {
    let mut batch: Vec<Signal> =
        (1..=4).map(|i| signal(&format!("it-{i}"), SignalKind::Impression, &format!("imp-{i}"))).collect();
    batch.push(signal("it-1", SignalKind::Like, "like-1"));
    batch.push(signal("it-2", SignalKind::Skip, "skip-2"));
    batch
}

fn count(store: &dyn TidalAccess, item: &str, kind: SignalKind) -> u64 {
    store.item_counts(item).expect("item counts").get(&kind)
}

/// Rows of an export, as (user, session, chosen_id, rejected_id, negative_source).
type RowKeys = BTreeSet<(String, String, String, String, String)>;

/// The contract every [`TidalAccess`] keeps; returns the export's row keys for comparison.
fn contract(store: &dyn TidalAccess) -> RowKeys {
    writes_are_idempotent_and_readable(store);
    user_summary(store);
    bandit_round_trip(store);
    profile(store);
    refused_writes_store_nothing(store);
    export_with_texts(store)
}

fn writes_are_idempotent_and_readable(store: &dyn TidalAccess) {
    let acks = store.write(first_batch()).expect("first write");
    assert_eq!(acks.len(), 6, "one ack per signal");
    assert!(acks.iter().all(|a| !a.duplicate), "fresh keys are not duplicates: {acks:?}");
    // Read-your-writes: the counts right after the call include the write.
    assert_eq!(count(store, "it-1", SignalKind::Impression), 1);
    assert_eq!(count(store, "it-1", SignalKind::Like), 1);
    assert_eq!(count(store, "it-2", SignalKind::Skip), 1);

    let retry = store.write(first_batch()).expect("retried write");
    assert!(retry.iter().all(|a| a.duplicate), "a retry with the same keys is a duplicate: {retry:?}");
    let same = |a: &tidal::Ack, b: &tidal::Ack| (a.shard, a.seq) == (b.shard, b.seq);
    assert!(acks.iter().zip(&retry).all(|(a, b)| same(a, b)), "a retry gets the original acks");
    assert_eq!(count(store, "it-1", SignalKind::Impression), 1, "the retry counted once");
    assert_eq!(count(store, "it-1", SignalKind::Like), 1, "the retry counted once");

    let unseen = store.item_counts("never-seen").expect("counts of an unseen item");
    assert!(unseen.0.is_empty(), "an unseen item has no counts: {unseen:?}");
}

fn user_summary(store: &dyn TidalAccess) {
    let summary = store.user(USER).expect("user").expect("ann was written");
    assert_eq!(summary.hard_negatives, ["it-2"], "the skip is a hard negative, the like is not");
    let history: Vec<(&str, &SignalKind)> =
        summary.history.iter().map(|h| (h.item.as_str(), &h.kind)).collect();
    let imp = &SignalKind::Impression;
    let expected: Vec<(&str, &SignalKind)> = vec![
        ("it-1", imp),
        ("it-2", imp),
        ("it-3", imp),
        ("it-4", imp),
        ("it-1", &SignalKind::Like),
        ("it-2", &SignalKind::Skip),
    ];
    assert_eq!(history, expected, "history is oldest first and the retry added nothing");
    assert!(store.user("nobody").expect("unknown user").is_none());
}

fn bandit_round_trip(store: &dyn TidalAccess) {
    let shown = vec![
        Shown {
            item: "it-5".into(),
            source: "src-a".into(),
            propensity: 0.5,
            position: 0,
            ..Shown::default()
        },
        Shown {
            item: "it-6".into(),
            source: "src-b".into(),
            propensity: 0.25,
            position: 1,
            ..Shown::default()
        },
    ];
    let acks = log_impressions(store, USER, "feed-1", POLICY_THOMPSON, &shown).expect("log impressions");
    assert_eq!(acks.len(), 4, "each shown item logs an impression and a counter impression");
    let arms = ["src-a", "src-b", "src-c"];
    let prior = Posterior::default();
    let one_miss = Posterior { alpha: prior.alpha, beta: prior.beta + 1.0 };
    assert_eq!(read_posteriors(store, USER, &arms).expect("posteriors"), [one_miss, one_miss, prior]);

    let like = feedback_signals(USER, "it-5", "src-a", Some("feed-1"), SignalKind::Like, Some("fb-1"))
        .expect("feedback signals");
    store.write(like.clone()).expect("feedback write");
    let liked = Posterior { alpha: prior.alpha + 1.0, beta: prior.beta };
    assert_eq!(read_posteriors(store, USER, &arms).expect("posteriors"), [liked, one_miss, prior]);

    // The same request logged again (a client retry) and the same feedback: counted once.
    let again = log_impressions(store, USER, "feed-1", POLICY_THOMPSON, &shown).expect("retried log");
    assert!(again.iter().all(|a| a.duplicate), "{again:?}");
    store.write(like).expect("retried feedback");
    let counts = read_counts(store, USER, "src-a").expect("counts");
    assert_eq!((counts.impressions, counts.rewards, counts.negatives), (1, 1, 0));
}

fn profile(store: &dyn TidalAccess) {
    let users = Users::default();
    let entry = users.get(USER, store).expect("user state");
    let entry = lock(&entry);
    // Liked: it-5 (most recent first), then it-1; rejected: it-2; seen: the impressions.
    let liked: Vec<&str> = entry.state.liked.newest_first().map(|i| &**i).collect();
    assert_eq!(liked, ["it-5", "it-1"]);
    let rejected: Vec<&str> = entry.state.rejected.newest_first().map(|i| &**i).collect();
    assert_eq!(rejected, ["it-2"]);
    for seen in ["it-1", "it-2", "it-3", "it-4", "it-5", "it-6"] {
        assert!(entry.state.is_seen(seen), "{seen} was shown");
    }
    assert!(!entry.state.is_seen("it-9"));
    let mut events = 0;
    match store.scan_user_events(Some(USER), &mut |_| events += 1) {
        Ok(()) => assert!(entry.complete && events >= 9, "the whole history: {events} events"),
        Err(StoreError::Unsupported(_)) => assert!(!entry.complete, "built from the ring, and says so"),
        Err(e) => panic!("scan: {e}"),
    }
}

fn refused_writes_store_nothing(store: &dyn TidalAccess) {
    let good = signal("it-refused", SignalKind::Like, "refused-1");
    let mut bad = signal("it-refused", SignalKind::Like, "refused-2");
    bad.user = String::new();
    match store.write(vec![good, bad]) {
        Err(StoreError::Refused(message)) => assert!(message.contains("user"), "{message}"),
        other => panic!("a batch with an empty user must be refused, got {other:?}"),
    }
    assert!(store.item_counts("it-refused").expect("counts").0.is_empty(), "nothing of the batch was stored");
    let history_len = store.user(USER).expect("user").expect("ann").history.len();
    assert_eq!(history_len, 6 + 2 + 1, "the first batch, the impressions of it-5 and it-6, the like of it-5");
}

fn export_with_texts(store: &dyn TidalAccess) -> RowKeys {
    let options = ExportOptions { test_fraction: 0.0, ..ExportOptions::default() };
    let hooks = Hooks { item_text: Some(&Texts), ..Hooks::default() };
    let mut out = Vec::new();
    let summary = store.export_jsonl(&mut out, &options, &hooks).expect("export");
    let text = String::from_utf8(out).expect("utf-8 export");
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect();
    assert!(!rows.is_empty(), "the export wrote no rows");
    assert_eq!(summary.rows, rows.len() as u64, "the summary counts the rows written");
    let sources: BTreeSet<&str> = summary.rows_by_source.keys().map(String::as_str).collect();
    assert_eq!(sources, BTreeSet::from(["explicit", "history", "implicit", "mined"]), "{summary:?}");
    assert_eq!(summary.rows_by_source.values().sum::<u64>(), summary.rows, "DPO rows all have a source");
    let str_of =
        |row: &Value, col: &str| row[col].as_str().unwrap_or_else(|| panic!("{col} in {row}")).to_owned();
    let mut keys = RowKeys::new();
    for row in &rows {
        let (chosen, rejected) = (str_of(row, "chosen_id"), str_of(row, "rejected_id"));
        assert_eq!(str_of(row, "chosen"), text_of(&chosen), "chosen carries the item's text: {row}");
        assert_eq!(str_of(row, "rejected"), text_of(&rejected), "rejected carries the item's text: {row}");
        keys.insert((
            str_of(row, "user"),
            str_of(row, "session"),
            chosen,
            rejected,
            str_of(row, "negative_source"),
        ));
    }
    let explicit = (USER.into(), SESSION.into(), "it-1".into(), "it-2".into(), "explicit".into());
    assert!(keys.contains(&explicit), "the like of it-1 against the skip of it-2 is a row: {keys:?}");
    keys
}

fn embedded() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Options { durability: Durability::None, ..Options::default() })
        .expect("open embedded tidal");
    (dir, db)
}

#[test]
fn both_implementations_keep_the_contract_and_export_the_same_rows() {
    let (_dir, db) = embedded();
    let embedded_rows = contract(&db);
    let logs = db.read_logs().expect("embedded logs");
    assert_eq!(logs.impressions.len(), 2, "the two logged impressions, once each: {logs:?}");
    assert!(logs.impressions.iter().any(|i| i.item == "it-5" && i.reward == 1.0), "{logs:?}");

    let server = TidalServer::start(&[]);
    let remote = RemoteTidal::new(&server.base, None).expect("client");
    remote.check().expect("the server is ready");
    let remote_rows = contract(&remote);
    // A base URL with a wrong path answers 404 for every read: an error, not "never seen".
    let misdirected = RemoteTidal::new(&format!("{}/tidal", server.base), None).expect("client");
    let counts = misdirected.item_counts("it-1");
    assert!(matches!(counts, Err(StoreError::Refused(ref m)) if m.contains("404")), "{counts:?}");
    assert_eq!(embedded_rows, remote_rows, "both stores export the same rows");
    match remote.read_logs() {
        Err(StoreError::Unsupported(_)) => {}
        other => panic!("remote read_logs must be unsupported, got {other:?}"),
    }
}

#[test]
fn remote_with_a_wrong_token_is_refused() {
    let server = TidalServer::start(&["--token", "s3cret"]);
    let batch = || vec![signal("it-1", SignalKind::Like, "tok-1")];
    for token in [Some("wrong".to_owned()), None] {
        let remote = RemoteTidal::new(&server.base, token.clone()).expect("client");
        match remote.write(batch()) {
            Err(StoreError::Refused(message)) => assert!(message.contains("401"), "{message}"),
            other => panic!("token {token:?}: the write must be refused, got {other:?}"),
        }
        assert!(matches!(remote.item_counts("it-1"), Err(StoreError::Refused(_))), "token {token:?}");
        assert!(matches!(remote.user(USER), Err(StoreError::Refused(_))), "token {token:?}");
        let mut out = Vec::new();
        let export = remote.export_jsonl(&mut out, &ExportOptions::default(), &Hooks::default());
        assert!(matches!(export, Err(StoreError::Refused(_))), "token {token:?}: {export:?}");
    }
    // The right token works, and the refused writes stored nothing.
    let remote = RemoteTidal::new(&server.base, Some("s3cret".to_owned())).expect("client");
    assert_eq!(count(&remote, "it-1", SignalKind::Like), 0, "a refused write stored nothing");
    remote.write(batch()).expect("write with the right token");
    assert_eq!(count(&remote, "it-1", SignalKind::Like), 1);
}

#[test]
fn remote_to_a_dead_port_is_unavailable() {
    let remote = RemoteTidal::new(&dead_base(), None).expect("client");
    let unavailable = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what} on a dead port must be unavailable, got {other:?}"),
    };
    unavailable(remote.check(), "check");
    unavailable(remote.write(vec![signal("it-1", SignalKind::Like, "k")]).map(drop), "write");
    unavailable(remote.item_counts("it-1").map(drop), "item_counts");
    unavailable(remote.user(USER).map(drop), "user");
    let mut out = Vec::new();
    unavailable(
        remote.export_jsonl(&mut out, &ExportOptions::default(), &Hooks::default()).map(drop),
        "export",
    );
    // Options the server cannot take are refused before anything is sent.
    let ignored = ExportOptions { implicit_window_ms: 1, ..ExportOptions::default() };
    let export = remote.export_jsonl(&mut out, &ignored, &Hooks::default());
    assert!(matches!(export, Err(StoreError::Unsupported(_))), "{export:?}");
}
