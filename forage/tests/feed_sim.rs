//! The whole feed against a simulated reader, seeded: the real app (catalog in SQLite, an
//! embedded Tidal, the candidate index, the taste profile, Thompson sampling over sources,
//! linear Thompson sampling over content, impression logging, feedback), with synthetic
//! item embeddings whose topics the reader likes to different degrees.
//!
//! Two catalogs: sources that each hold one topic, and sources that each mix all topics
//! evenly (where choosing sources cannot help: only the content bandit and the taste
//! profile can). For each the test reports the like rate against uniform choice and
//! against the best rate reachable (the oracle: the best unseen items in the catalog, under
//! the diversity rule), distinct items shown, and the re-show rate, and asserts floors.
//!
//! `cargo test -p forage --test feed_sim -- --nocapture` prints the figures.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use forage::app::{Config, FeedRequest, FeedbackRequest, Forage, catalog_path, tidal_dir};
use forage::catalog::{Catalog, NewItem};
use forage::embed::{Embedder, LexicalEmbedder};
use forage::rank::Diversity;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The reader's like-probability per topic.
const LIKE: [f64; 6] = [0.8, 0.5, 0.2, 0.05, 0.05, 0.02];
const DIMS: usize = 384;
/// Noise around a topic's centre: within-topic cosine about 1/(1+σ²) = 0.4, as short news
/// texts under all-MiniLM-L6-v2.
const NOISE_SIGMA: f64 = 1.22;
const ITEMS_PER_TOPIC: usize = 3000;
const PAGES: usize = 150;
const PAGE: usize = 10;
/// Pages compared at the start and the end for the regret trend (regret of a page: the mean
/// like-probability of the best page still available under the diversity rule, minus that of
/// the page shown).
const WINDOW: usize = 30;
/// The reader skips (an explicit negative) this share of the items they do not like.
const SKIP_SHARE: f64 = 0.5;

struct Sim {
    app: Arc<Forage>,
    topic_of: HashMap<String, usize>,
    /// The source (index) of every item.
    source_of: HashMap<String, usize>,
    /// Per source, the like-probabilities of its items, best first.
    source_ps: Vec<Vec<f64>>,
}

fn normal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn unit(v: Vec<f64>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| (x / n) as f32).collect()
}

/// A catalog of `sources` sources; `topics_of(source)` lists the topics a source carries
/// (evenly). Every item gets a synthetic embedding near its topic's centre.
fn build(dir: &std::path::Path, sources: usize, topics_of: impl Fn(usize) -> Vec<usize>, seed: u64) -> Sim {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f64>> =
        (0..LIKE.len()).map(|_| (0..DIMS).map(|_| normal(&mut rng)).collect()).collect();
    let centres: Vec<Vec<f64>> =
        centres.into_iter().map(|c| unit(c).into_iter().map(f64::from).collect()).collect();
    let model = LexicalEmbedder::new().name().to_owned();
    let mut catalog = Catalog::open(&catalog_path(dir)).expect("catalog");
    let now = forage::app::now_ms();
    let per_source_topic = ITEMS_PER_TOPIC * LIKE.len() / (sources * topics_of(0).len());
    let mut topic_of = HashMap::new();
    let mut source_ps = Vec::new();
    let mut source_of = HashMap::new();
    for s in 0..sources {
        let source = catalog.add_source(&format!("file:///sim/{s}.xml"), "file", 3600, now).expect("source");
        let mut items = Vec::new();
        for t in topics_of(s) {
            for i in 0..per_source_topic {
                items.push((
                    t,
                    NewItem {
                        guid: Some(format!("{s}-{t}-{i}")),
                        title: format!("item {s}-{t}-{i}"),
                        published_ms: Some(now - rng.random_range(0..3_600_000)),
                        ..NewItem::default()
                    },
                ));
            }
        }
        let batch: Vec<NewItem> = items.iter().map(|(_, n)| n.clone()).collect();
        for chunk in batch.chunks(forage::catalog::UPSERT_ITEMS_MAX) {
            catalog.upsert_items(source, chunk, now).expect("upsert");
        }
        let mut ps = Vec::new();
        let mut offset = 0;
        loop {
            let page =
                catalog.list_items(Some(source), offset, forage::catalog::PAGE_ITEMS_MAX).expect("list");
            if page.is_empty() {
                break;
            }
            offset += page.len();
            for item in page {
                // Titles are `item {source}-{topic}-{n}`.
                let t: usize = item.title.split('-').nth(1).and_then(|t| t.parse().ok()).expect("topic");
                let v: Vec<f64> = centres[t]
                    .iter()
                    .map(|c| c + NOISE_SIGMA * normal(&mut rng) / (DIMS as f64).sqrt())
                    .collect();
                catalog.put_embedding(&item.id, &model, &unit(v)).expect("embedding");
                source_of.insert(item.id.clone(), s);
                topic_of.insert(item.id, t);
                ps.push(LIKE[t]);
            }
        }
        ps.sort_by(|a, b| b.total_cmp(a));
        source_ps.push(ps);
    }
    drop(catalog);
    let options = tidal::Options { durability: tidal::Durability::None, ..Default::default() };
    let db = tidal::Db::open(tidal_dir(dir), options).expect("tidal");
    let mut config = Config::new(dir);
    config.background = false;
    config.seed = Some(seed);
    let app = Forage::open(config, Arc::new(db), Arc::new(LexicalEmbedder::new())).expect("forage");
    Sim { app, topic_of, source_of, source_ps }
}

#[derive(Debug)]
struct Figures {
    like_rate: f64,
    uniform: f64,
    oracle: f64,
    distinct: usize,
    impressions: usize,
    reshown: usize,
    regret_first: f64,
    regret_last: f64,
}

/// The best like rate reachable over `impressions` showings of distinct items when one
/// source may fill at most `share` of a page of `page` while others have items.
fn oracle(sim: &Sim, impressions: usize, share: usize) -> f64 {
    let mut left: Vec<std::collections::VecDeque<f64>> =
        sim.source_ps.iter().map(|ps| ps.iter().copied().collect()).collect();
    let (mut total, mut shown) = (0.0, 0usize);
    while shown < impressions {
        let page = best_page(&mut left, share);
        if page.is_empty() {
            break;
        }
        shown += page.len();
        total += page.iter().sum::<f64>();
    }
    total / shown.max(1) as f64
}

/// The best page (like-probabilities) that can be taken from what is `left` of each source
/// (best first), with at most `share` of a page from one source while others have items;
/// takes it out of `left`.
fn best_page(left: &mut [std::collections::VecDeque<f64>], share: usize) -> Vec<f64> {
    let mut taken = vec![0usize; left.len()];
    let mut page = Vec::with_capacity(PAGE);
    for _ in 0..PAGE {
        let others_have = |s: usize| (0..left.len()).any(|o| o != s && !left[o].is_empty());
        let best = (0..left.len())
            .filter(|s| !left[*s].is_empty() && (taken[*s] < share || !others_have(*s)))
            .max_by(|a, b| left[*a][0].total_cmp(&left[*b][0]).then(b.cmp(a)));
        let Some(s) = best else { break };
        page.extend(left[s].pop_front());
        taken[s] += 1;
    }
    page
}

/// The mean like-probability of the best page still available: the items not shown yet.
fn best_available(sim: &Sim, seen: &HashSet<String>, share: usize) -> f64 {
    let mut left: Vec<Vec<f64>> = vec![Vec::new(); sim.source_ps.len()];
    for (id, t) in &sim.topic_of {
        if !seen.contains(id) {
            left[sim.source_of[id]].push(LIKE[*t]);
        }
    }
    let mut left: Vec<std::collections::VecDeque<f64>> = left
        .into_iter()
        .map(|mut ps| {
            ps.sort_by(|a, b| b.total_cmp(a));
            ps.into()
        })
        .collect();
    let page = best_page(&mut left, share);
    page.iter().sum::<f64>() / page.len().max(1) as f64
}

fn run(sim: &Sim, seed: u64) -> (f64, usize, usize, usize, Vec<f64>) {
    let mut reader = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut seen = HashSet::new();
    let (mut likes, mut impressions, mut reshown) = (0usize, 0usize, 0usize);
    let mut regret = Vec::with_capacity(PAGES);
    let share = Diversity::default().share_max(PAGE);
    for _ in 0..PAGES {
        // Regret is against the best page still available (seen items cannot come back).
        let best = best_available(sim, &seen, share);
        let page = sim.app.feed(&FeedRequest { limit: Some(PAGE), ..FeedRequest::default() }).expect("feed");
        assert_eq!(page.items.len(), PAGE, "the catalog ran dry");
        let mut expected = 0.0;
        for item in &page.items {
            let p = LIKE[sim.topic_of[&item.item.id]];
            expected += p;
            impressions += 1;
            if !seen.insert(item.item.id.clone()) {
                reshown += 1;
            }
            let kind = if reader.random::<f64>() < p {
                likes += 1;
                "like"
            } else if reader.random::<f64>() < SKIP_SHARE {
                "skip"
            } else {
                continue;
            };
            let fb = FeedbackRequest {
                item: item.item.id.clone(),
                kind: kind.into(),
                context: Some(page.context.clone()),
                ..FeedbackRequest::default()
            };
            sim.app.feedback(&fb).expect("feedback");
        }
        regret.push(best - expected / PAGE as f64);
    }
    (likes as f64 / impressions as f64, seen.len(), impressions, reshown, regret)
}

fn simulate(name: &str, sources: usize, topics_of: impl Fn(usize) -> Vec<usize>, seed: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = build(dir.path(), sources, topics_of, seed);
    let started = std::time::Instant::now();
    let (like_rate, distinct, impressions, reshown, regret) = run(&sim, seed);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let uniform = mean(&sim.topic_of.values().map(|t| LIKE[*t]).collect::<Vec<_>>());
    let share = Diversity::default().share_max(PAGE);
    let figures = Figures {
        like_rate,
        uniform,
        oracle: oracle(&sim, impressions, share),
        distinct,
        impressions,
        reshown,
        regret_first: mean(&regret[..WINDOW]),
        regret_last: mean(&regret[PAGES - WINDOW..]),
    };
    println!(
        "{name} (seed {seed}): like rate {:.3} = {:.2}x uniform {:.3}, {:.2} of the oracle {:.3} \
         (best reachable with at most {share} of {PAGE} from one source); {} distinct of {} shown, \
         re-shown {}; regret first {WINDOW} pages {:.3}, last {WINDOW} {:.3}; {:.1} s",
        figures.like_rate,
        figures.like_rate / figures.uniform,
        figures.uniform,
        figures.like_rate / figures.oracle,
        figures.oracle,
        figures.distinct,
        figures.impressions,
        figures.reshown,
        figures.regret_first,
        figures.regret_last,
        started.elapsed().as_secs_f64()
    );
    sim.app.shutdown();
    figures
}

fn check(f: &Figures, uniform_ratio_min: f64) {
    assert_eq!(f.reshown, 0, "items were shown twice");
    assert_eq!(f.distinct, f.impressions);
    assert!(f.uniform > 0.0 && f.oracle >= f.like_rate - 0.05, "{f:?}");
    assert!(
        f.like_rate >= uniform_ratio_min * f.uniform,
        "like rate {:.3} vs uniform {:.3}",
        f.like_rate,
        f.uniform
    );
    assert!(f.regret_last < f.regret_first, "regret did not fall: {f:?}");
}

#[test]
fn mixed_topic_sources_the_content_bandit_learns_the_taste() {
    let f = simulate("mixed-topic sources", 3, |_| (0..LIKE.len()).collect(), 11);
    check(&f, 2.0);
}

#[test]
fn single_topic_sources_the_feed_finds_the_liked_ones() {
    let f = simulate("single-topic sources", LIKE.len(), |s| vec![s], 12);
    check(&f, 2.0);
}
