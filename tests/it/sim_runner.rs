//! The seed runner the simulators share (`simulate`, `simulate_internal`, `simulate_compact`,
//! `simulate_quorum`): each gives a [`Simulator`] (its name, the `tests/simulate.sh` flag that
//! replays one of its seeds, and its `run_seed`), and its `seeds`, `replay` and
//! `same_seed_same_run` tests call [`seeds`], [`replay`] and [`same_seed_twice`].

use std::fmt::Debug;
use std::ops::AddAssign;

/// One seed's result: the verdict, the trace (every step, for replay comparison), counters.
pub type SeedRun<S> = (Result<(), String>, String, S);

/// A simulator as the runner sees it.
pub struct Simulator<S> {
    /// As printed: `storage`, `internal-log`, `compaction`, `quorum`.
    pub name: &'static str,
    /// The `tests/simulate.sh` option that replays one seed (`--seed`, `--internal-seed`...).
    pub replay_flag: &'static str,
    /// Runs one seed; `verbose` prints every step.
    pub run_seed: fn(u64, bool) -> SeedRun<S>,
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs FRESHET_SIM_SEEDS seeds (default `seeds_default`) from FRESHET_SIM_BASE (default 1,
/// so that `cargo test` is reproducible; `tests/simulate.sh N` without `--base` explores from a
/// random base) and prints `simulation: N seeds passed, F failed`.
pub fn seeds<S: Default + AddAssign + Debug>(sim: &Simulator<S>, seeds_default: u64) {
    let n = env_u64("FRESHET_SIM_SEEDS").unwrap_or(seeds_default);
    let base = env_u64("FRESHET_SIM_BASE").unwrap_or(1);
    let name = sim.name;
    println!("simulation: {name} seeds {base}..{}", base + n);
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut stats = S::default();
    for seed in base..base + n {
        let (verdict, _, s) = (sim.run_seed)(seed, false);
        stats += s;
        if let Err(e) = verdict {
            let flag = sim.replay_flag;
            println!("seed {seed} FAILED: {e}\n  replay: bash tests/simulate.sh {flag} {seed}");
            failed.push(seed);
        }
    }
    println!(
        "simulation: {n} {name} seeds in {:.1} s: {stats:?}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "simulation: {} seeds passed, {} failed",
        n - failed.len() as u64,
        failed.len()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

/// Replays FRESHET_SIM_SEED (default 1) printing every step.
pub fn replay<S: Debug>(sim: &Simulator<S>) {
    let seed = env_u64("FRESHET_SIM_SEED").unwrap_or(1);
    let (verdict, _, stats) = (sim.run_seed)(seed, true);
    println!("{stats:?}");
    if let Err(e) = verdict {
        panic!("seed {seed} failed: {e}");
    }
    println!("seed {seed} passed");
}

/// Each of `seeds` replays exactly: the same steps, disk choices and results twice.
pub fn same_seed_twice<S>(sim: &Simulator<S>, seeds: [u64; 2]) {
    for seed in seeds {
        let (v1, t1, _) = (sim.run_seed)(seed, false);
        let (v2, t2, _) = (sim.run_seed)(seed, false);
        assert_eq!(v1, v2);
        assert!(t1.lines().count() > 10, "seed {seed} did too little:\n{t1}");
        assert_eq!(t1, t2, "seed {seed} ran differently twice");
    }
}
