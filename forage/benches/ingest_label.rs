//! Ingest and label new feed items end to end: the issue's benchmark "time to ingest and label
//! 10,000 new feed items".
//!
//! `cargo bench -p forage --bench ingest_label` (env `INGEST_LABEL_ITEMS` changes the item
//! count, default 10,000).
//!
//! Before the clock starts, the bench writes RSS documents (one per topic of the sample
//! feeds, at most `FEED_ITEMS_MAX` items each) whose items are variations of the sample feed
//! items: a sample title with a varying suffix, and two to four sentences drawn from the
//! summaries of the same topic, with a seeded generator. Then, per embedder, on a fresh
//! file-backed catalog with the five sample labels (`samples/labels/labels.json`):
//! 1. parse: read and parse every RSS document;
//! 2. upsert: add the sources and upsert their items (one transaction per feed, as a refresh);
//! 3. embed+label: `embed_pending`, which embeds in batches and labels each batch as stored;
//! 4. relabel: `relabel_all` over every embedding (what a label edit costs).
//!
//! The real model (from `FORAGE_MODEL_DIR` or the default folder; never installed here) is
//! measured when present, and the lexical fallback always, as the peer in the same run: read
//! the ratio, the machine is shared.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use forage::catalog::Catalog;
use forage::embed::worker::embed_pending;
use forage::embed::{BertEmbedder, Embedder, LexicalEmbedder, default_model_dir};
use forage::labels::{load_label_specs, relabel_all};
use forage::sources::feed::{FEED_ITEMS_MAX, parse_feed};

const ITEMS_DEFAULT: usize = 10_000;
const SEED: u64 = 0x5eed_1abe;
const TOPIC_FILES: [&str; 5] = ["rust.xml", "databases.atom", "ml.json", "climate.xml", "space.atom"];

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// A small xorshift generator: the bench needs reproducible choices, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes one RSS document per topic with `items` items spread over them; returns the paths.
fn write_feeds(dir: &Path, items: usize) -> Vec<PathBuf> {
    let mut rng = Rng(SEED);
    let per_feed = items.div_ceil(TOPIC_FILES.len());
    let mut paths = Vec::new();
    let mut written = 0;
    for (t, file) in TOPIC_FILES.iter().enumerate() {
        let bytes = std::fs::read(samples().join("feeds").join(file)).expect("sample feed");
        let seeds = parse_feed(&bytes).expect("parse sample").items;
        let sentences: Vec<&str> =
            seeds.iter().flat_map(|s| s.summary.split_inclusive(". ")).map(str::trim).collect();
        let mut chunk = 0;
        let mut remaining = per_feed.min(items - written);
        while remaining > 0 {
            let n = remaining.min(FEED_ITEMS_MAX);
            let mut xml =
                String::from("<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>Bench</title>\n");
            for i in 0..n {
                let seed = &seeds[rng.below(seeds.len())];
                let title = format!("{} (issue {}, note {i})", seed.title, rng.below(500));
                let summary: Vec<&str> =
                    (0..2 + rng.below(3)).map(|_| sentences[rng.below(sentences.len())]).collect();
                let url = format!("https://bench.example.org/{t}/{chunk}/{i}");
                xml.push_str(&format!(
                    "<item><title>{}</title><link>{url}</link><guid>{url}</guid><description>{}</description></item>\n",
                    escape(&title),
                    escape(&summary.join(" "))
                ));
            }
            xml.push_str("</channel></rss>\n");
            let path = dir.join(format!("{t}-{chunk}.xml"));
            std::fs::write(&path, xml).expect("write feed");
            paths.push(path);
            written += n;
            remaining -= n;
            chunk += 1;
        }
    }
    paths
}

struct Row {
    stage: &'static str,
    model: String,
    items: usize,
    secs: f64,
}

/// Runs the pipeline on a fresh catalog; returns one row per stage and an end-to-end row.
fn run(feeds: &[PathBuf], embedder: &dyn Embedder) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = embedder.name().to_owned();
    let row = |stage, items, secs| Row { stage, model: model.clone(), items, secs };
    let mut rows = Vec::new();

    let start = Instant::now();
    let parsed: Vec<_> = feeds
        .iter()
        .map(|p| parse_feed(&std::fs::read(p).expect("read feed")).expect("parse feed").items)
        .collect();
    let items: usize = parsed.iter().map(Vec::len).sum();
    rows.push(row("parse", items, start.elapsed().as_secs_f64()));

    let mut cat = Catalog::open(&dir.path().join("catalog.db")).expect("open catalog");
    for spec in load_label_specs(&samples().join("labels").join("labels.json")).expect("labels") {
        cat.create_label(&spec, 0).expect("label");
    }
    let start = Instant::now();
    let mut new = 0;
    for (path, items) in feeds.iter().zip(&parsed) {
        let src = cat.add_source(&format!("file://{}", path.display()), "file", 3600, 1).expect("source");
        new += cat.upsert_items(src, items, 1).expect("upsert");
    }
    rows.push(row("upsert", new, start.elapsed().as_secs_f64()));
    assert_eq!(new, items, "the generator made duplicates");

    let catalog = Mutex::new(cat);
    let start = Instant::now();
    let step = (items / 10).max(1);
    let report = embed_pending(&catalog, embedder, &|p| {
        if p.done % step < forage::embed::BATCH_TEXTS_MAX {
            eprint!("\r  {model}: embedded {}/{}   ", p.done, p.total);
        }
    })
    .expect("embed");
    eprintln!();
    rows.push(row("embed+label", report.embedded, start.elapsed().as_secs_f64()));
    assert_eq!(report.embedded, items);

    let start = Instant::now();
    let assignments = relabel_all(&catalog, embedder).expect("relabel");
    rows.push(row("relabel", items, start.elapsed().as_secs_f64()));
    let total: f64 = rows.iter().map(|r| r.secs).sum();
    rows.push(row("end to end", items, total));
    eprintln!("  {model}: {} labels on new items, {assignments} after relabelling", report.labelled);
    rows
}

fn main() {
    let items =
        std::env::var("INGEST_LABEL_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(ITEMS_DEFAULT);
    let feeds_dir = tempfile::tempdir().expect("tempdir");
    let feeds = write_feeds(feeds_dir.path(), items);
    let model_dir = std::env::var_os("FORAGE_MODEL_DIR").filter(|v| !v.is_empty()).map(PathBuf::from);
    let model_dir = model_dir.or_else(default_model_dir);
    let real: Option<Box<dyn Embedder>> = match model_dir.as_deref().map(BertEmbedder::load) {
        Some(Ok(model)) => Some(Box::new(model)),
        Some(Err(e)) => {
            eprintln!("real model not available ({e}): lexical embedder only");
            None
        }
        None => {
            eprintln!("no model folder: lexical embedder only");
            None
        }
    };
    println!("ingest and label {items} new feed items ({} RSS documents, 5 labels)", feeds.len());
    let mut rows = Vec::new();
    if let Some(real) = &real {
        rows.extend(run(&feeds, real.as_ref()));
    }
    rows.extend(run(&feeds, &LexicalEmbedder::new()));
    println!("{:<12} {:<18} {:>7} {:>9} {:>10}", "stage", "embedder", "items", "secs", "items/s");
    for r in &rows {
        println!(
            "{:<12} {:<18} {:>7} {:>9.3} {:>10.0}",
            r.stage,
            r.model,
            r.items,
            r.secs,
            r.items as f64 / r.secs
        );
    }
    if real.is_some() {
        let e2e: Vec<f64> = rows.iter().filter(|r| r.stage == "end to end").map(|r| r.secs).collect();
        if let [model, lexical] = e2e[..] {
            println!("end to end, real model / lexical: {:.1}x the time", model / lexical);
        }
    }
}
