//! Tests of [`ScoreIndex`]: the order, the bulk build, forgetting, and the head and floor
//! against a model that orders every item.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

#[test]
fn index_orders_and_updates() {
    let mut idx = ScoreIndex::default();
    let (a, b, c) = ("a", "b", "c");
    idx.add(a, 1.0);
    idx.add(b, 5.0);
    idx.add(c, 3.0);
    idx.add(a, 10.0);
    let top: Vec<String> = idx.top(2, 0).into_iter().map(|(i, _)| i.to_string()).collect();
    assert_eq!(top, ["a", "b"]);
    assert_eq!(idx.top(5, 2).len(), 1);
    idx.add(a, -20.0);
    assert_eq!(&*idx.top(1, 0)[0].0, "b");
    assert_eq!(idx.top(3, 0).last().map(|(i, s)| (i.to_string(), *s)), Some(("a".into(), -9.0)));
    assert_eq!(idx.len(), 3);
}

#[test]
fn a_bulk_build_equals_adding_one_by_one() {
    // Parts of 300 items from three "shards", overlapping, more than one chunk each.
    let keys: Vec<IdKey> = (0..300).map(|n| IdKey::new(&format!("item-{n}"))).collect();
    let mut parts = Vec::new();
    for shard in 0..3u32 {
        for (n, key) in keys.iter().enumerate().filter(|(n, _)| (*n as u32 + shard).is_multiple_of(2)) {
            parts.push((key, f64::from(shard) + n as f64 / 7.0));
        }
    }
    let bulk = ScoreIndex::from_parts(parts.iter().map(|(k, s)| (*k, *s)), parts.len());
    let mut one_by_one = ScoreIndex::default();
    for (key, score) in &parts {
        one_by_one.add_key(key, *score);
    }
    assert_eq!(bulk.len(), 300);
    assert_eq!(bulk.top(300, 0), one_by_one.top(300, 0));
    for key in &keys {
        assert_eq!(bulk.score(key.as_str()), one_by_one.score(key.as_str()), "{key:?}");
    }
}

#[test]
fn forgotten_items_leave_until_added_again() {
    let mut idx = ScoreIndex::default();
    idx.add("a", 2.0);
    idx.add("b", 1.0);
    assert!(!idx.forget_if_zero("a"), "a non-zero score stays");
    idx.add("a", -2.0);
    assert!(idx.forget_if_zero("a"));
    assert!(!idx.forget_if_zero("a"), "already gone");
    assert!(!idx.forget_if_zero("nobody"));
    assert_eq!((idx.score("a"), idx.len()), (None, 1));
    assert_eq!(idx.top(5, 0), [("b".to_owned(), 1.0)]);
    idx.add("a", 0.5);
    assert_eq!((idx.score("a"), idx.len()), (Some(0.5), 2));
    assert_eq!(idx.top(5, 0), [("b".to_owned(), 1.0), ("a".to_owned(), 0.5)]);
}

#[test]
fn integer_order_is_total_cmp_order() {
    let xs = [f64::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-300, 2.0, f64::INFINITY, f64::NAN, -f64::NAN];
    for a in xs {
        for b in xs {
            assert_eq!(total_order_bits(a).cmp(&total_order_bits(b)), a.total_cmp(&b), "{a} vs {b}");
        }
    }
}

/// The index as it was before the head: every live item, ordered in full.
#[derive(Default)]
struct Model {
    ids: HashMap<String, u32>,
    scores: HashMap<u32, f64>,
    names: Vec<String>,
}

impl Model {
    fn add(&mut self, item: &str, delta: f64) {
        let next = self.ids.len() as u32;
        let id = *self.ids.entry(item.to_owned()).or_insert(next);
        if id == next {
            self.names.push(item.to_owned());
        }
        *self.scores.entry(id).or_insert(0.0) += delta;
    }

    fn forget_if_zero(&mut self, item: &str) -> bool {
        let Some(id) = self.ids.get(item) else { return false };
        self.scores.get(id) == Some(&0.0) && self.scores.remove(id).is_some()
    }

    fn top(&self, k: usize, offset: usize) -> Vec<(String, f64)> {
        let mut all: Vec<(f64, u32, u32)> = (self.scores.iter())
            .map(|(&id, &score)| (score, tie_hash(self.names[id as usize].as_bytes()), id))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        all.iter().skip(offset).take(k).map(|&(s, _, id)| (self.names[id as usize].clone(), s)).collect()
    }
}

impl ScoreIndex {
    /// The head is exactly the live items at or above the floor.
    fn check_head(&self) {
        let expected: BTreeSet<OrderKey> = (self.all_keys().into_iter())
            .filter(|&(score, _, id)| self.at_or_above_floor(score.0, id))
            .collect();
        assert_eq!(self.head, expected, "floor {:?}", self.floor);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u8, i8),
    Forget(u8),
    Top(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, -6i8..10).prop_map(|(item, delta)| Op::Add(item, delta)),
        1 => (0u8..40).prop_map(Op::Forget),
        2 => (0u8..30, 0u8..30).prop_map(|(k, offset)| Op::Top(k, offset)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Small heads (trims, floors, rebuilds and deep pages on every few ops) answer what
    /// ordering every item answers. Deltas are halves, so sums are exact and equal scores
    /// (ties) are common.
    #[test]
    fn a_headed_index_answers_as_the_full_order(target in 1usize..6, ops in proptest::collection::vec(op(), 1..300)) {
        let (mut index, mut model) = (ScoreIndex::with_head_target(target), Model::default());
        for op in ops {
            match op {
                Op::Add(item, delta) => {
                    let name = format!("i{item}");
                    index.add(&name, f64::from(delta) / 2.0);
                    model.add(&name, f64::from(delta) / 2.0);
                }
                Op::Forget(item) => {
                    let name = format!("i{item}");
                    prop_assert_eq!(index.forget_if_zero(&name), model.forget_if_zero(&name));
                }
                Op::Top(k, offset) => {
                    prop_assert_eq!(index.top(k.into(), offset.into()), model.top(k.into(), offset.into()));
                }
            }
            index.check_head();
            prop_assert_eq!(index.len(), model.scores.len());
            prop_assert!(index.head_len() <= 2 * index.head_target.max(40), "head {}", index.head_len());
        }
        prop_assert_eq!(index.top(100, 0), model.top(100, 0));
    }
}

#[test]
fn the_head_trims_falls_back_and_grows_for_deep_pages() {
    let mut index = ScoreIndex::with_head_target(8);
    for n in 0..100 {
        index.add(&format!("i{n}"), f64::from(n));
    }
    index.check_head();
    assert!(index.floor.is_some() && index.head_len() <= 16, "trimmed: {}", index.head_len());
    // Below the floor, a change moves nothing.
    let head = index.head.clone();
    index.add("i3", 0.5);
    assert_eq!(index.head, head);
    // A page past the head ranks everything, then the next change grows the head.
    let deep: Vec<String> = index.top(5, 40).into_iter().map(|(item, _)| item).collect();
    assert_eq!(deep, ["i59", "i58", "i57", "i56", "i55"]);
    index.add("i0", 0.5);
    assert!(index.head_len() >= 45, "grown for the page: {}", index.head_len());
    index.check_head();
    // Scores falling below the floor shrink the head; under a quarter it is rebuilt.
    let mut index = ScoreIndex::with_head_target(8);
    for n in 0..100 {
        index.add(&format!("i{n}"), f64::from(n));
    }
    for n in (80..100).rev() {
        index.add(&format!("i{n}"), -1000.0);
        index.check_head();
    }
    assert!(index.head_len() >= 2, "rebuilt: {}", index.head_len());
    let best: Vec<String> = index.top(3, 0).into_iter().map(|(item, _)| item).collect();
    assert_eq!(best, ["i79", "i78", "i77"]);
    // A head shrunk below a page, and below half its size (not a quarter): the page is
    // answered in full, and the next change makes the head hold it.
    let mut index = ScoreIndex::with_head_target(8);
    for n in 0..17 {
        index.add(&format!("i{n}"), f64::from(n));
    }
    assert_eq!(index.head_len(), 8, "trimmed to its target");
    for n in [16, 15, 14, 13, 12] {
        index.add(&format!("i{n}"), -1000.0);
    }
    assert_eq!(index.head_len(), 3);
    let page = index.top(1, 4);
    assert_eq!(page, [("i7".to_owned(), 7.0)]);
    index.add("i0", 0.5);
    assert!(index.head_len() >= 5, "grown back for the page: {}", index.head_len());
    assert_eq!(index.top(1, 4), page);
    // A page just past a head that lost one entry is answered by the read alone: no
    // rebuild per change while fewer than half the head have fallen (a reader of deep
    // pages cannot make every write O(items)).
    let mut index = ScoreIndex::with_head_target(8);
    for n in 0..17 {
        index.add(&format!("i{n}"), f64::from(n));
    }
    index.add("i16", -1000.0);
    for _ in 0..3 {
        assert_eq!(index.top(1, 7), [("i8".to_owned(), 8.0)]);
        index.add("i0", 0.5);
        assert_eq!(index.head_len(), 7, "not rebuilt");
    }
    index.check_head();
}

#[test]
fn a_bulk_build_has_a_head_and_a_floor() {
    let keys: Vec<IdKey> = (0..10_000).map(|n| IdKey::new(&format!("item-{n}"))).collect();
    let index =
        ScoreIndex::from_parts(keys.iter().enumerate().map(|(n, k)| (k, (n % 977) as f64)), keys.len());
    index.check_head();
    assert_eq!(index.head_len(), HEAD_TARGET);
    assert_eq!(index.top(1, 0)[0].1, 976.0);
}
