//! The bandit end to end: a seeded simulation against a synthetic user (Thompson sampling
//! beats uniform choice and its regret falls), impressions with propensities logged to a
//! real Tidal store and read back, and inverse propensity scoring on synthetic logs whose
//! true target value is known.

use std::collections::{BTreeMap, HashSet};

use forage::bandit::{
    ArmCandidates, LoggedImpression, POLICY_THOMPSON, Posterior, choose_arm, evaluate, feedback_signals,
    log_impressions, plan_feed, read_counts, read_logs, read_posteriors,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal::{Db, Options, SignalKind};

/// The synthetic user's like-probability per source.
const LIKE_PROBABILITIES: [f64; 5] = [0.1, 0.2, 0.3, 0.45, 0.6];
const ROUNDS: usize = 2_000;
const WINDOW: usize = 500;
const SEED: u64 = 42;
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];
const REWARD_RATIO_MIN: f64 = 1.25;

struct Run {
    reward: f64,
    /// Expected regret of each round: best like-probability minus the chosen one's.
    regret: Vec<f64>,
}

fn simulate(seed: u64, thompson: bool) -> Run {
    let mut policy_rng = StdRng::seed_from_u64(seed);
    let mut user_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let best = LIKE_PROBABILITIES.iter().copied().fold(0.0, f64::max);
    let mut posteriors = vec![Posterior::default(); LIKE_PROBABILITIES.len()];
    let available = vec![true; LIKE_PROBABILITIES.len()];
    let mut run = Run { reward: 0.0, regret: Vec::with_capacity(ROUNDS) };
    for _ in 0..ROUNDS {
        let arm = if thompson {
            choose_arm(&posteriors, &available, &mut policy_rng).expect("every arm is available")
        } else {
            policy_rng.random_range(0..LIKE_PROBABILITIES.len())
        };
        let liked = user_rng.random::<f64>() < LIKE_PROBABILITIES[arm];
        posteriors[arm].update(liked);
        run.reward += f64::from(u8::from(liked));
        run.regret.push(best - LIKE_PROBABILITIES[arm]);
    }
    run
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn thompson_beats_uniform_and_its_regret_falls() {
    let thompson = simulate(SEED, true);
    let uniform = simulate(SEED, false);
    let first = mean(&thompson.regret[..WINDOW]);
    let last = mean(&thompson.regret[ROUNDS - WINDOW..]);
    println!(
        "seed {SEED}: thompson reward {} vs uniform {} (ratio {:.2}); regret first {WINDOW} {first:.4}, last {WINDOW} {last:.4}",
        thompson.reward,
        uniform.reward,
        thompson.reward / uniform.reward
    );
    assert!(uniform.reward > 0.0, "the uniform run earned nothing");
    assert!(thompson.reward >= REWARD_RATIO_MIN * uniform.reward);
    assert!(last < first, "regret did not fall: first {first}, last {last}");

    let (mut t_sum, mut u_sum) = (0.0, 0.0);
    for seed in SEEDS {
        let (t, u) = (simulate(seed, true), simulate(seed, false));
        let (first, last) = (mean(&t.regret[..WINDOW]), mean(&t.regret[ROUNDS - WINDOW..]));
        println!("seed {seed}: thompson {} uniform {} regret {first:.4} -> {last:.4}", t.reward, u.reward);
        assert!(last < first, "seed {seed}: regret did not fall: first {first}, last {last}");
        t_sum += t.reward;
        u_sum += u.reward;
    }
    let ratio = t_sum / u_sum;
    println!(
        "mean over {} seeds: thompson {} uniform {} ratio {ratio:.2}",
        SEEDS.len(),
        t_sum / 5.0,
        u_sum / 5.0
    );
    assert!(ratio >= REWARD_RATIO_MIN, "mean ratio {ratio}");
}

fn open_db(dir: &std::path::Path) -> Db {
    Db::open(dir, Options { durability: tidal::Durability::None, ..Options::default() }).expect("open store")
}

/// Every impression signal of `user` in the store's history: (item, context, attrs).
fn impressions_of(db: &Db, user: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
    let shard = db.router().shard_for(user);
    let until = db.applied_seqs()[shard as usize] + 1;
    let mut found = Vec::new();
    tidal::history::scan_history(db.vfs(), db.dir(), shard, until, |_, _, s| {
        if s.user == user && s.kind == SignalKind::Impression {
            let attrs = s.attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            found.push((s.item.to_owned(), s.context.unwrap_or_default().to_owned(), attrs));
        }
        Ok(())
    })
    .expect("scan history");
    found
}

#[test]
fn feed_impressions_with_propensities_are_in_tidal_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    let user = "alice";
    let arms = vec![
        ArmCandidates {
            arm: "blog".into(),
            items: (0..4).map(|i| format!("blog-{i}")).collect(),
            scores: vec![],
        },
        ArmCandidates {
            arm: "news".into(),
            items: (0..4).map(|i| format!("news-{i}")).collect(),
            scores: vec![],
        },
    ];
    let posteriors = read_posteriors(&db, user, &["blog", "news"]).expect("posteriors");
    assert_eq!(posteriors, vec![Posterior::default(); 2]);
    let mut rng = StdRng::seed_from_u64(SEED);
    let feed = plan_feed(&arms, &posteriors, 6, &mut rng);
    assert_eq!(feed.len(), 6);

    let first = log_impressions(&db, user, "ctx-1", POLICY_THOMPSON, &feed).expect("log");
    let retry = log_impressions(&db, user, "ctx-1", POLICY_THOMPSON, &feed).expect("log again");
    assert!(first.iter().all(|a| !a.duplicate));
    assert!(retry.iter().all(|a| a.duplicate), "a retried request must log nothing new");

    let logged = impressions_of(&db, user);
    assert_eq!(logged.len(), feed.len(), "each shown item is logged exactly once");
    for shown in &feed {
        let (_, context, attrs) = logged.iter().find(|(item, ..)| *item == shown.item).expect("logged");
        assert_eq!(context, "ctx-1");
        let propensity: f64 = attrs["propensity"].parse().expect("a number");
        assert_eq!(propensity, shown.propensity);
        assert!(propensity > 0.0 && propensity <= 1.0);
        assert_eq!(attrs["position"], shown.position.to_string());
        assert_eq!(attrs["policy"], POLICY_THOMPSON);
    }
    let blog_shown = feed.iter().filter(|s| s.source == "blog").count() as u64;
    assert_eq!(read_counts(&db, user, "blog").expect("counts").impressions, blog_shown);

    // A like in the same context rewards the arm and joins its impression in the logs.
    let liked = &feed[0];
    let signals =
        feedback_signals(user, &liked.item, &liked.source, Some("ctx-1"), SignalKind::Like, Some("fb-1"))
            .expect("feedback");
    db.write_batch(signals).expect("write feedback");
    let arm = if liked.source == "blog" { 0 } else { 1 };
    let after = read_posteriors(&db, user, &["blog", "news"]).expect("posteriors");
    assert_eq!(after[arm].alpha, posteriors[arm].alpha + 1.0);
    let logs = read_logs(&db).expect("read logs");
    assert_eq!(logs.impressions.len(), feed.len());
    // Logged without item-level attributes (as before they existed): the arm's propensity
    // stands in, and the record says so.
    for log in &logs.impressions {
        assert!(!log.item_level && log.candidates.is_none() && log.greedy_propensity.is_none(), "{log:?}");
        assert_eq!(log.propensity, log.arm_propensity);
    }
    let rewarded: HashSet<&str> =
        logs.impressions.iter().filter(|l| l.reward > 0.0).map(|l| l.item.as_str()).collect();
    assert_eq!(rewarded, HashSet::from([liked.item.as_str()]));
}

#[test]
fn ips_recovers_the_known_value_of_a_target_policy() {
    const LOGGING: [f64; 3] = [0.5, 0.3, 0.2];
    const TARGET: [f64; 3] = [0.1, 0.2, 0.7];
    const REWARD: [f64; 3] = [0.2, 0.5, 0.8];
    const LOGS: usize = 20_000;
    const TOLERANCE: f64 = 0.03;
    let mut rng = StdRng::seed_from_u64(SEED);
    let arms = ["a", "b", "c"];
    let logs: Vec<LoggedImpression> = (0..LOGS)
        .map(|i| {
            let u = rng.random::<f64>();
            let arm = if u < LOGGING[0] {
                0
            } else if u < LOGGING[0] + LOGGING[1] {
                1
            } else {
                2
            };
            let reward = f64::from(u8::from(rng.random::<f64>() < REWARD[arm]));
            LoggedImpression {
                user: "u".into(),
                context: format!("ctx-{i}"),
                item: format!("item-{i}"),
                arm: arms[arm].into(),
                position: 0,
                propensity: LOGGING[arm],
                arm_propensity: LOGGING[arm],
                item_level: true,
                within_propensity: None,
                candidates: None,
                greedy_propensity: None,
                policy: "logging".into(),
                reward,
            }
        })
        .collect();
    let index = |l: &LoggedImpression| arms.iter().position(|a| *a == l.arm).expect("known arm");
    let truth: f64 = TARGET.iter().zip(REWARD).map(|(p, r)| p * r).sum();
    let report = evaluate(&logs, |l| TARGET[index(l)]);
    println!("target truth {truth:.3}: {report:?}");
    assert_eq!(report.n, LOGS);
    assert!((report.ips - truth).abs() < TOLERANCE, "ips {} vs {truth}", report.ips);
    assert!((report.snips - truth).abs() < TOLERANCE, "snips {} vs {truth}", report.snips);
    assert!(report.effective_sample_size > 0.0 && report.effective_sample_size < LOGS as f64);

    let logging_truth: f64 = LOGGING.iter().zip(REWARD).map(|(p, r)| p * r).sum();
    let same = evaluate(&logs, |l| LOGGING[index(l)]);
    assert!((same.ips - logging_truth).abs() < TOLERANCE);
    assert!((same.effective_sample_size - LOGS as f64).abs() < 1e-6);
}
