use super::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// A candidate that owns its id and vector (the index owns them in the app).
#[derive(Clone)]
struct Owned {
    id: Arc<str>,
    published_ms: u64,
    embedding: Option<Vec<f32>>,
}

fn cand(id: &str, _source: &str, published_ms: u64, embedding: Option<Vec<f32>>) -> Owned {
    Owned { id: id.into(), published_ms, embedding }
}

/// Ranks `items` as one source's candidates for embeddings of 2 dimensions.
fn run(items: &[Owned], profile: &Profile, now_ms: u64, keep: usize) -> Vec<Ranked> {
    let candidates: Vec<Candidate<'_>> = items
        .iter()
        .map(|o| Candidate {
            id: &o.id,
            published_ms: o.published_ms,
            embedding: o.embedding.as_deref(),
            features: None,
        })
        .collect();
    rank(&candidates, &Arc::from("s"), &Scorer::new(profile, 2, None), now_ms, keep)
}

fn ids(items: &[Ranked]) -> Vec<&str> {
    items.iter().map(|r| &*r.id).collect()
}

fn sources(items: &[Ranked]) -> String {
    items.iter().map(|r| &*r.source).collect()
}

#[test]
fn similar_to_likes_beats_similar_to_negatives() {
    let profile =
        Profile { liked: vec![vec![1.0, 0.0]], negatives: vec![vec![0.0, 1.0]], ..Default::default() };
    let now = 10 * DAY_MS;
    let out = run(
        &[cand("bad", "s", now, Some(vec![0.0, 1.0])), cand("good", "t", now, Some(vec![1.0, 0.0]))],
        &profile,
        now,
        10,
    );
    assert_eq!(&*out[0].id, "good");
    assert!((out[0].score - 2.0).abs() < 1e-9 && (out[1].score - 0.0).abs() < 1e-9, "{out:?}");
}

#[test]
fn fresher_wins_without_embeddings_and_half_life_halves() {
    let now = 10 * DAY_MS;
    let out = run(
        &[cand("old", "a", now - DAY_MS, None), cand("new", "b", now, None)],
        &Profile::default(),
        now,
        10,
    );
    assert_eq!(&*out[0].id, "new");
    assert!((out[1].freshness - FRESHNESS_WEIGHT / 2.0).abs() < 1e-9);
    assert_eq!(out[1].similarity, 0.0);
    assert_eq!(freshness(now + DAY_MS, now), FRESHNESS_WEIGHT);
}

#[test]
fn keep_selects_the_best_in_order_with_stable_ties() {
    let now = 10 * DAY_MS;
    let ages = [3u64, 0, 5, 1, 0, 2];
    let candidates: Vec<Owned> = ages
        .iter()
        .enumerate()
        .map(|(i, a)| cand(&i.to_string(), &i.to_string(), now - a * DAY_MS, None))
        .collect();
    let out = run(&candidates, &Profile::default(), now, 3);
    assert_eq!(ids(&out), ["1", "4", "3"]);
    assert!(run(&[cand("a", "s", 0, None)], &Profile::default(), 0, 0).is_empty());
}

#[test]
fn lane_dot_matches_plain_dot() {
    for n in [0usize, 1, 7, 8, 9, 384, 390] {
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - plain).abs() < 1e-4, "n={n}");
    }
}

#[test]
fn dismissed_items_are_never_returned() {
    let profile = Profile { dismissed: ["x".to_string()].into_iter().collect(), ..Default::default() };
    let out = run(&[cand("x", "a", 5, None), cand("y", "a", 1, None)], &profile, 10, 10);
    assert_eq!(out.iter().map(|r| &*r.id).collect::<Vec<_>>(), ["y"]);
}

#[test]
fn mismatched_dimensions_and_nan_do_not_break_ranking() {
    let profile = Profile { liked: vec![vec![1.0, 0.0, 0.0], vec![f32::NAN, 0.0]], ..Default::default() };
    let out = run(&[cand("a", "s", 0, Some(vec![1.0, 0.0]))], &profile, 0, 10);
    assert_eq!(out[0].similarity, 0.0);
    assert!(out[0].score.is_finite());
}

fn r(id: &str, source: &str) -> Ranked {
    Ranked { id: id.into(), source: source.into(), score: 0.0, similarity: 0.0, content: 0.0, freshness: 0.0 }
}

#[test]
fn no_more_than_two_in_a_row_and_stable() {
    let items =
        vec![r("1", "a"), r("2", "a"), r("3", "a"), r("4", "a"), r("5", "b"), r("6", "b"), r("7", "c")];
    let out = diversify_by(items, |x| &*x.source);
    assert_eq!(sources(&out), "aabaabc");
    assert_eq!(out.iter().map(|x| &*x.id).collect::<String>(), "1253467");
}

#[test]
fn separators_are_saved_for_the_dominant_source() {
    // Plain greedy placement spends the others early: "aabcadeaaa".
    let order = [("1", "a"), ("2", "a"), ("3", "b"), ("4", "c"), ("5", "a"), ("6", "d"), ("7", "e")];
    let mut items: Vec<Ranked> = order.iter().map(|(id, s)| r(id, s)).collect();
    items.extend([r("8", "a"), r("9", "a"), r("10", "a")]);
    let out = diversify_by(items, |x| &*x.source);
    let s = sources(&out);
    assert_eq!(s.len(), 10);
    assert!(!s.contains("aaa"), "{s}");
}

#[test]
fn already_diverse_order_is_kept() {
    let items = vec![r("1", "a"), r("2", "b"), r("3", "a"), r("4", "a"), r("5", "b")];
    let out = diversify_by(items.clone(), |x| &*x.source);
    assert_eq!(out, items);
}

#[test]
fn impossible_rest_goes_to_the_end() {
    let items = vec![r("1", "a"), r("2", "a"), r("3", "a"), r("4", "b"), r("5", "a"), r("6", "a")];
    let out = diversify_by(items, |x| &*x.source);
    assert_eq!(sources(&out), "aabaaa");
    assert_eq!(out.len(), 6);
    assert!(diversify_by(Vec::<Ranked>::new(), |x| &*x.source).is_empty());
}

#[test]
fn profile_from_state_takes_the_newest_feedback_and_the_content_term_counts() {
    use tidal::SignalKind;
    let mut state = crate::taste::UserState::default();
    state.apply("liked", &SignalKind::Like, 1);
    state.apply("skipped", &SignalKind::Skip, 2);
    state.apply("unembedded", &SignalKind::Like, 3);
    let vectors: HashMap<&str, Arc<[f32]>> =
        [("liked", Arc::from(vec![1.0f32, 0.0])), ("skipped", Arc::from(vec![0.0f32, 1.0]))]
            .into_iter()
            .collect();
    let mut profile = profile_from_state(&state, |id| vectors.get(id).map(|v| &v[..]));
    assert_eq!(profile.liked, vec![vec![1.0, 0.0]]);
    assert_eq!(profile.negatives, vec![vec![0.0, 1.0]]);
    let near = cand("near", "s", 0, Some(vec![1.0, 0.0]));
    let far = cand("far", "s", 0, Some(vec![0.0, 1.0]));
    let out = run(&[far.clone(), near.clone()], &profile, 0, 10);
    assert_eq!(ids(&out), ["near", "far"]);
    // A content draw that favours `far` strongly enough turns the order round.
    profile.content = Some(ContentDraw { theta: Vec::new(), direction: vec![0.0, 3.0], bias: 0.5 });
    let out = run(&[near, far], &profile, 0, 10);
    assert_eq!(ids(&out), ["far", "near"]);
    assert_eq!((out[0].content, out[1].content), (3.5, 0.5));
}

/// The one-dot-product score the ranking orders by equals the sum of the parts it reports,
/// and ranking by it keeps the same items as ranking by the sum of the parts.
#[test]
fn the_folded_query_scores_as_the_sum_of_the_parts() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let dims = 24;
    let mut unit = || {
        let v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let profile = Profile {
        liked: (0..5).map(|_| unit()).collect(),
        negatives: (0..3).map(|_| unit()).collect(),
        content: Some(ContentDraw { theta: Vec::new(), direction: unit(), bias: 0.25 }),
        ..Profile::default()
    };
    let items: Vec<Owned> =
        (0..300).map(|i| cand(&i.to_string(), "s", i * 1000, (i % 7 != 0).then(&mut unit))).collect();
    let candidates: Vec<Candidate<'_>> = items
        .iter()
        .map(|o| Candidate {
            id: &o.id,
            published_ms: o.published_ms,
            embedding: o.embedding.as_deref(),
            features: None,
        })
        .collect();
    let scorer = Scorer::new(&profile, dims, None);
    let now = 400_000;
    let all = rank(&candidates, &Arc::from("s"), &scorer, now, 1000);
    assert_eq!(all.len(), 300);
    for r in &all {
        let c = candidates.iter().find(|c| c.id == &r.id).expect("candidate");
        assert!((scorer.score(c, now) - r.score).abs() < 1e-5, "{r:?}");
        let e = c.embedding.map(|e| e.to_vec());
        let mean = |side: &[Vec<f32>], e: &[f32]| {
            side.iter().map(|v| f64::from(dot_f32(v, e))).sum::<f64>() / side.len() as f64
        };
        let similarity = e.as_ref().map_or(0.0, |e| mean(&profile.liked, e) - mean(&profile.negatives, e));
        assert!((similarity - r.similarity).abs() < 1e-5, "{r:?}");
    }
    let mut by_parts = all.clone();
    by_parts.sort_by(|a, b| b.score.total_cmp(&a.score));
    let best = rank(&candidates, &Arc::from("s"), &scorer, now, 10);
    assert_eq!(ids(&best), ids(&by_parts[..10]));
}

/// The two-pass ranking (features first, then the embeddings of a shortlist) keeps the
/// items the exact one-pass ranking keeps, in the same order, on topic-clustered vectors
/// like sentence embeddings.
#[test]
fn the_feature_pass_shortlists_the_exact_best_items() {
    use rand::{Rng, SeedableRng};
    let dims = 384;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut normal = |scale: f32| -> Vec<f32> {
        (0..dims).map(|_| scale * crate::bandit::beta::standard_normal(&mut rng) as f32).collect()
    };
    let topics: Vec<Vec<f32>> = (0..8).map(|_| normal(1.0)).collect();
    let mut near = |topic: usize| {
        let v: Vec<f32> = topics[topic].iter().zip(normal(1.2)).map(|(t, n)| t + n).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let projection = Projection::new(dims);
    let mut model = crate::bandit::linear::LinearThompson::default();
    let mut profile = Profile::default();
    for i in 0..40 {
        let (topic, liked) = (i % 4, i % 4 == 0);
        let e = near(topic);
        model.observe(&projection.project(&e).expect("features"), true, if liked { 1.0 } else { 0.0 });
        if liked {
            profile.liked.push(e)
        } else if topic == 1 {
            profile.negatives.push(e)
        }
    }
    let mut draw_rng = rand::rngs::StdRng::seed_from_u64(12);
    profile.content = projection.pull_back(&model.sample(&mut draw_rng, 0.3));
    let now = 10 * DAY_MS;
    let mut time_rng = rand::rngs::StdRng::seed_from_u64(13);
    let items: Vec<(Owned, Vec<f32>)> = (0..3000)
        .map(|i| {
            let e = near(i % 8);
            let z = projection.project(&e).expect("features");
            let at = now - time_rng.random_range(0..3 * DAY_MS);
            (cand(&i.to_string(), "s", at, Some(e)), z)
        })
        .collect();
    let candidates: Vec<Candidate<'_>> = items
        .iter()
        .map(|(o, z)| Candidate {
            id: &o.id,
            published_ms: o.published_ms,
            embedding: o.embedding.as_deref(),
            features: Some(z),
        })
        .collect();
    let source: Arc<str> = Arc::from("s");
    let exact = rank(&candidates, &source, &Scorer::new(&profile, dims, None), now, 20);
    let two_pass = rank(&candidates, &source, &Scorer::new(&profile, dims, Some(&projection)), now, 20);
    assert_eq!(ids(&two_pass), ids(&exact));
    assert!(exact.iter().any(|r| r.similarity > 0.1), "the taste term matters here: {exact:?}");
    // The pool of the item-level propensities: best first by the exact score, starting with
    // the kept items in their order.
    let scorer = Scorer::new(&profile, dims, Some(&projection));
    let (kept, pool) = rank_with_pool(&candidates, &source, &scorer, now, 20, 64);
    assert_eq!((ids(&kept), pool.len()), (ids(&two_pass), 64));
    assert!(pool.windows(2).all(|w| w[0].0 >= w[1].0), "not best first");
    for (r, (score, i)) in kept.iter().zip(&pool) {
        assert_eq!(r.id, *candidates[*i as usize].id);
        assert!((r.score - score).abs() < 1e-4, "{} vs {score}", r.score);
    }
}
