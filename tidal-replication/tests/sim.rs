//! The deterministic replication simulation over many seeds (see `tidal_replication::sim`).
//!
//! `SIM_SEEDS=N` runs seeds `0..N` (default 500, the CI run; 20,000 is the long run by
//! hand), `SIM_SEED=S` replays one seed. Any failing seed is printed with its replay
//! command, and the test fails.

use tidal_replication::sim::{SimConfig, run};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn replicas_converge_exactly_once_under_faults() {
    let cfg = SimConfig::default();
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("SIM_SEEDS").unwrap_or(500)).collect(),
    };
    let mut failures = Vec::new();
    let (mut acked, mut crashes, mut promotions, mut set_asides, mut partitions) = (0, 0, 0, 0, 0);
    for &seed in &seeds {
        match run(seed, &cfg) {
            Ok(r) => {
                if seeds.len() == 1 {
                    println!("{r:?}");
                }
                acked += r.acked;
                crashes += r.crashes;
                promotions += r.promotions;
                set_asides += r.set_asides;
                partitions += r.partitions;
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure.seed);
            }
        }
    }
    println!(
        "{} seeds: {acked} acknowledged signals checked, {crashes} crashes, {promotions} promotions, {partitions} partitions, {set_asides} batches set aside",
        seeds.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // The faults must really have happened, or the run proves nothing.
    if seeds.len() >= 100 {
        assert!(crashes > 0 && promotions > 0 && partitions > 0 && acked > 0);
    }
}
