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
//! The catalogs and the reader are in `support_sim`.
//!
//! `cargo test -p forage --test feed_sim -- --nocapture` prints the figures.

mod support_sim;

use std::collections::HashSet;

use forage::app::FeedRequest;
use forage::rank::Diversity;
use support_sim::{LIKE, PAGE, Reader, Sim, build};

const PAGES: usize = 150;
/// Pages compared at the start and the end for the regret trend (regret of a page: the mean
/// like-probability of the best page still available under the diversity rule, minus that of
/// the page shown).
const WINDOW: usize = 30;

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
    let mut reader = Reader::new(seed);
    let mut regret = Vec::with_capacity(PAGES);
    let share = Diversity::default().share_max(PAGE);
    for _ in 0..PAGES {
        // Regret is against the best page still available (seen items cannot come back).
        let best = best_available(sim, &reader.seen, share);
        let page = sim.app.feed(&FeedRequest { limit: Some(PAGE), ..FeedRequest::default() }).expect("feed");
        assert_eq!(page.items.len(), PAGE, "the catalog ran dry");
        let expected = reader.read(sim, &page);
        regret.push(best - expected / PAGE as f64);
    }
    (reader.like_rate(), reader.seen.len(), reader.impressions, reader.reshown, regret)
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
