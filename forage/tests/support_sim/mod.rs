//! The simulated reader shared by the seeded simulation tests (`feed_sim`, `eval_sim`): a
//! real app (catalog in SQLite, an embedded Tidal, every part of the feed) over a synthetic
//! catalog whose items carry embeddings near their topic's centre, and a reader who likes
//! each topic with its own probability ([`LIKE`]).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use forage::app::{Config, FeedPage, FeedbackRequest, Forage, catalog_path, tidal_dir};
use forage::catalog::{Catalog, NewItem};
use forage::embed::{Embedder, LexicalEmbedder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The reader's like-probability per topic.
pub const LIKE: [f64; 6] = [0.8, 0.5, 0.2, 0.05, 0.05, 0.02];
const DIMS: usize = 384;
/// Noise around a topic's centre: within-topic cosine about 1/(1+σ²) = 0.4, as short news
/// texts under all-MiniLM-L6-v2.
const NOISE_SIGMA: f64 = 1.22;
const ITEMS_PER_TOPIC: usize = 3000;
/// Items on a page.
pub const PAGE: usize = 10;
/// The reader skips (an explicit negative) this share of the items they do not like.
const SKIP_SHARE: f64 = 0.5;

/// A simulated catalog in a real app, and what the simulation knows about every item.
pub struct Sim {
    pub app: Arc<Forage>,
    /// The topic (index into [`LIKE`]) of every item.
    pub topic_of: HashMap<String, usize>,
    /// The source (index) of every item.
    pub source_of: HashMap<String, usize>,
    /// Per source, the like-probabilities of its items, best first.
    pub source_ps: Vec<Vec<f64>>,
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
pub fn build(
    dir: &std::path::Path,
    sources: usize,
    topics_of: impl Fn(usize) -> Vec<usize>,
    seed: u64,
) -> Sim {
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

/// The simulated reader: likes an item with its topic's probability, skips
/// [`SKIP_SHARE`] of the others, and sends the feedback in the page's context.
pub struct Reader {
    rng: StdRng,
    /// Every item shown so far.
    pub seen: HashSet<String>,
    pub likes: usize,
    pub impressions: usize,
    /// Impressions of items shown before.
    pub reshown: usize,
}

impl Reader {
    pub fn new(seed: u64) -> Reader {
        Reader {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            seen: HashSet::new(),
            likes: 0,
            impressions: 0,
            reshown: 0,
        }
    }

    /// Reads `page`; returns the sum of its items' like-probabilities.
    pub fn read(&mut self, sim: &Sim, page: &FeedPage) -> f64 {
        let mut expected = 0.0;
        for item in &page.items {
            let p = LIKE[sim.topic_of[&item.item.id]];
            expected += p;
            self.impressions += 1;
            if !self.seen.insert(item.item.id.clone()) {
                self.reshown += 1;
            }
            let kind = if self.rng.random::<f64>() < p {
                self.likes += 1;
                "like"
            } else if self.rng.random::<f64>() < SKIP_SHARE {
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
        expected
    }

    /// Likes per impression so far.
    pub fn like_rate(&self) -> f64 {
        self.likes as f64 / self.impressions.max(1) as f64
    }
}
