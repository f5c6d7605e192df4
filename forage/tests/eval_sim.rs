//! Offline evaluation against the simulated reader (`support_sim`), seeded: the real feed
//! logs a run of pages over sources that each mix all topics evenly (so choosing sources
//! tells nothing apart; only the item-level choice does), the logs are read back from
//! Tidal, and `Forage::evaluate_policies` and the estimators score policies whose true
//! like rates the simulation knows:
//!
//! * (a) the IPS estimate of the logging policy matches the like rate the reader actually
//!   gave it (its weights are all 1, so this checks the logging, the reward join and the
//!   estimator's sums, not the propensities); and the item-level propensities themselves are
//!   calibrated: from the state the run ends in, many previews of a one-item page (ranked
//!   and planned like a page, not logged) show each frequent item about as often as its
//!   propensity says;
//! * (b) a policy known to be better, the oracle on the simulated taste (uniform among the
//!   slot's candidates of the reader's favourite topic), estimates higher than uniform
//!   choice over the slot's candidates, by IPS and by SNIPS.
//!
//! `cargo test -p forage --test eval_sim -- --nocapture` prints the figures.

mod support_sim;

use std::collections::{HashMap, HashSet};

use forage::app::FeedRequest;
use forage::app::feed::CANDIDATES_PER_ARM_MAX;
use forage::bandit::evaluate;
use support_sim::{LIKE, PAGE, Reader, Sim, build};

const SEED: u64 = 21;
const SOURCES: usize = 3;
const PAGES: usize = 120;
/// The logging policy's weights are all 1, so its estimate is the logged like rate exactly;
/// a gap means lost impressions or misjoined rewards.
const LOGGING_TOLERANCE: f64 = 1e-9;
/// Previews of a one-item page for the calibration.
const PREVIEWS: usize = 400;
/// Items chosen at least this often in the previews are checked.
const CALIBRATION_COUNT_MIN: usize = 4;
/// How far an item's preview frequency may sit from its mean logged propensity `p`: this
/// many binomial standard deviations `√(p(1−p)/PREVIEWS)`, plus [`CALIBRATION_SLACK`].
const CALIBRATION_SIGMAS: f64 = 3.0;
const CALIBRATION_SLACK: f64 = 0.005;

/// What the simulation knows about the candidates of one page.
struct Pool {
    /// Candidates (every source's newest unseen ones, as the feed ranks them).
    size: usize,
    /// Mean like-probability over them: the like rate of uniform choice.
    mean_like: f64,
    /// Candidates of the reader's favourite topic (topic 0).
    favourite: usize,
}

/// The candidates the feed ranks for the next page: per source, its newest
/// [`CANDIDATES_PER_ARM_MAX`] items not shown yet (the candidate index's order).
fn pool(sim: &Sim, order: &[(String, i64)], seen: &HashSet<String>) -> Pool {
    let mut per_source: HashMap<i64, usize> = HashMap::new();
    let (mut size, mut like_sum, mut favourite) = (0, 0.0, 0);
    for (id, source) in order {
        let taken = per_source.entry(*source).or_insert(0);
        if seen.contains(id) || *taken >= CANDIDATES_PER_ARM_MAX {
            continue;
        }
        *taken += 1;
        let topic = sim.topic_of[id];
        size += 1;
        like_sum += LIKE[topic];
        favourite += usize::from(topic == 0);
    }
    Pool { size, mean_like: like_sum / size.max(1) as f64, favourite }
}

#[test]
fn ips_from_the_feed_logs_tracks_what_the_simulation_knows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = build(dir.path(), SOURCES, |_| (0..LIKE.len()).collect(), SEED);
    let order: Vec<(String, i64)> = {
        let mut stamps = sim.app.catalog().item_stamps().expect("stamps");
        stamps.sort_by_key(|s| s.source_id);
        stamps.into_iter().map(|s| (s.id, s.source_id)).collect()
    };
    let mut reader = Reader::new(SEED);
    let mut pools: HashMap<String, Pool> = HashMap::new();
    for _ in 0..PAGES {
        let pool = pool(&sim, &order, &reader.seen);
        let page = sim.app.feed(&FeedRequest { limit: Some(PAGE), ..FeedRequest::default() }).expect("feed");
        assert_eq!(page.items.len(), PAGE, "the catalog ran dry");
        reader.read(&sim, &page);
        pools.insert(page.context.clone(), pool);
    }
    let logs = sim.app.store().read_logs().expect("logs").impressions;
    assert_eq!(logs.len(), reader.impressions, "every impression is in the logs once");
    assert!(reader.likes > 0, "the reader liked nothing");
    for l in &logs {
        assert!(l.item_level && l.within_propensity.is_some() && l.greedy_propensity.is_some(), "{l:?}");
        let pool = &pools[&l.context];
        let candidates = l.candidates.expect("candidates logged") as usize;
        assert!(candidates <= pool.size && candidates + PAGE > pool.size, "{candidates} of {}", pool.size);
    }

    let summary = sim.app.evaluate_policies().expect("eval");
    let by_name = |name: &str| summary.estimates.iter().find(|e| e.policy == name).expect(name).clone();
    let (logging, uniform) = (by_name("logging"), by_name("uniform-items"));
    println!("{summary:#?}");
    assert_eq!((summary.source_level_only, uniform.skipped), (0, 0));

    // (a) The logging policy's estimate is what the reader gave it.
    let observed = reader.like_rate();
    println!("logging: ips {:.4} vs observed like rate {observed:.4}", logging.ips);
    assert!((logging.ips - observed).abs() <= LOGGING_TOLERANCE, "{} vs {observed}", logging.ips);
    assert!((logging.snips - observed).abs() <= LOGGING_TOLERANCE);

    // Printed, not asserted: uniform choice differs too much from the logging policy (it
    // rarely shows what uniform choice mostly would) for these logs to estimate it well;
    // the effective sample size says so.
    let truth = logs.iter().map(|l| pools[&l.context].mean_like).sum::<f64>() / logs.len() as f64;
    println!(
        "uniform: true like rate {truth:.4}; ips {:.4}, snips {:.4}, ess {:.1} of {}",
        uniform.ips, uniform.snips, uniform.effective_sample_size, uniform.n
    );

    // (a) The propensities are calibrated (see `calibration`).
    calibration(&sim);

    // (b) The oracle on the simulated taste beats uniform choice.
    let oracle = evaluate(&logs, |l| {
        let pool = &pools[&l.context];
        if sim.topic_of[&l.item] == 0 { 1.0 / pool.favourite.max(1) as f64 } else { 0.0 }
    });
    println!("oracle (true like rate {:.2}): {oracle:?}", LIKE[0]);
    assert!(oracle.n > 0 && oracle.effective_sample_size > 1.0, "{oracle:?}");
    assert!(oracle.ips > uniform.ips, "oracle ips {} vs uniform {}", oracle.ips, uniform.ips);
    assert!(oracle.snips > uniform.snips, "oracle snips {} vs uniform {}", oracle.snips, uniform.snips);
    sim.app.shutdown();
}

/// Previews of a one-item page from the current state: every item chosen at least
/// [`CALIBRATION_COUNT_MIN`] times is chosen about as often as its mean item-level
/// propensity says.
fn calibration(sim: &Sim) {
    let mut chosen: HashMap<String, (usize, f64)> = HashMap::new();
    for _ in 0..PREVIEWS {
        let preview = FeedRequest { limit: Some(1), preview: true, ..FeedRequest::default() };
        let page = sim.app.feed(&preview).expect("preview");
        let item = &page.items[0];
        let entry = chosen.entry(item.item.id.clone()).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += item.item_propensity;
    }
    let mut frequent: Vec<(f64, f64)> = chosen
        .values()
        .filter(|(n, _)| *n >= CALIBRATION_COUNT_MIN)
        .map(|(n, p)| (*n as f64 / PREVIEWS as f64, p / *n as f64))
        .collect();
    frequent.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "calibration: {} items over {PREVIEWS} previews; (frequency, propensity): {frequent:.4?}",
        chosen.len()
    );
    assert!(frequent.len() >= 3, "too few frequent items to check: {frequent:?}");
    for (frequency, p) in frequent {
        let allowed = CALIBRATION_SIGMAS * (p * (1.0 - p) / PREVIEWS as f64).sqrt() + CALIBRATION_SLACK;
        assert!((frequency - p).abs() <= allowed, "chosen {frequency:.4} of the time, propensity {p:.4}");
    }
}
