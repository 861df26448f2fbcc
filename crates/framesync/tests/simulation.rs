//! The deterministic simulation: the REAL planner, job and ledger (a SQLite file) and the REAL
//! HTTP clients (ureq, over an in-process transport), driven by a seeded schedule of cron runs
//! against model SS and RS servers whose semantics vary by seed — inclusive or exclusive
//! bounds, millisecond stamps on a frame's edges, cursors and next URLs, `Link` headers,
//! offsets and page numbers (stopping at an empty page, a short one or a stated total),
//! JSON or NDJSON bodies, snapshot or live pages, keys honored or ignored, batches (as JSON
//! arrays or NDJSON, with action lines), per-item answers, a ClickHouse-like RS whose bad
//! records answer 500 "Code: 27" under an answer rule, lookups by status, by a JSON pointer or
//! batched, poison records, redirects, clocks that drift and jump — and servers that lie: lookups
//! saying "present" for everything, an SS ignoring the offset, stating a wrong total or serving
//! a short page mid-walk, per-item lists of the wrong length or saying nothing, lookup answers
//! without their pointer or listing a UID not asked for (`sim/shapes.rs` draws these) — with
//! kills at every named point and in flight. The invariants (see `sim/check.rs`) are checked
//! after every simulated run. Same seed, same trace.
//!
//! - `the_simulation_holds_its_invariants_over_many_seeds`: a bounded run in the suite.
//! - `simulate_at_scale` (ignored): `scripts/simulate`, SIM_SEEDS × SIM_RUNS on every core.
//! - `replay` (ignored): one seed, SIM_SEED, with SIM_TRACE=1 printing every run.
//!
//! A failing seed prints the one line that replays it.

mod sim;

use sim::report::run_seeds;
use sim::trace::Trace;
use sim::world::{Options, Tolerance, simulate};

/// The holes the simulation finds on earlier code, by letter: a violation traced back to one
/// names it in its report (`[hole (x)]`), which is how the seeds in README's "Guarantees" that
/// find each hole on the code before its fix were found. All are fixed: the suite and
/// `scripts/simulate` tolerate none (`SIM_TOLERATE` and `SIM_IGNORE` take letters, to look past
/// one when a fix is reverted by hand).
pub const HOLES: &[(&str, &str)] = &[
    ("a", "batch mode: a regrouped batch gets a new key and is stored twice at an RS that honors keys"),
    ("b", "a lookup answering 200 with an HTML page is trusted: records count as delivered, never stored"),
    ("c", "dead letters do not fail the run; a 401/404 period dead-letters every record"),
    ("d", "re-checks the SS refuses (no history) stay due forever and starve the old gaps"),
    ("e", "a clock a year ahead for one run leaves waits a year ahead"),
    ("f", "a record the RS always answers 500 keeps its frame pushing forever"),
    ("g", "a followed redirect counts as delivered"),
    ("h", "{last} in rfc3339 is to − 1 s: an inclusive SS with ms stamps loses the last second's fraction"),
    (
        "i",
        "the freshest frame, not yet due by the SS's clock a little behind ours, stops the run's pulls: re-checks and old gaps starve",
    ),
    (
        "j",
        "a clock a year ahead for one run re-checks frames early, for the last time, though the SS's Date says it is early: their later records are lost",
    ),
    (
        "k",
        "a record the RS fails item by item (per-item answers) goes again under a new key with its failures reset: it never reaches max_attempts and keeps its frame pushing forever",
    ),
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn the_simulation_holds_its_invariants_over_many_seeds() {
    let summary = run_seeds(
        env_u64("SIM_SEED", 1),
        env_u64("SIM_SEEDS", 32),
        env_u64("SIM_RUNS", 240) as usize,
        &Tolerance::default(),
    );
    summary.print();
    assert!(summary.failed.is_empty(), "{} seeds failed:\n{}", summary.failed.len(), summary.failed.join("\n"));
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let trace = |seed| {
        simulate(Options { seed, runs: 60, trace: Trace::Collect(Vec::new()), tolerance: Tolerance::default() }).trace
    };
    for seed in [3, 4] {
        let (first, second) = (trace(seed), trace(seed));
        assert!(first.len() > 60, "seed {seed}: a trace of {} lines", first.len());
        assert!(first == second, "seed {seed} replayed differently");
    }
}

#[test]
#[ignore = "one seed with its trace: SIM_SEED=n SIM_RUNS=n SIM_TRACE=1"]
fn replay() {
    let trace = if std::env::var("SIM_TRACE").is_ok_and(|v| v == "1") { Trace::Print } else { Trace::Off };
    let options = Options {
        seed: env_u64("SIM_SEED", 1),
        runs: env_u64("SIM_RUNS", 3000) as usize,
        trace,
        tolerance: Tolerance::from_env(),
    };
    let report = simulate(options);
    println!("{} runs, {:?} wall, kills {:?}, faults {:?}", report.runs, report.wall, report.kills, report.faults);
    if let Some(failure) = report.failure() {
        panic!("{failure}");
    }
}

#[test]
#[ignore = "long: run by scripts/simulate"]
fn simulate_at_scale() {
    let summary = run_seeds(
        env_u64("SIM_SEED", 1),
        env_u64("SIM_SEEDS", 100),
        env_u64("SIM_RUNS", 3000) as usize,
        &Tolerance::from_env(),
    );
    summary.print();
    assert_eq!(summary.violations_not_known(), 0, "invariant violations: see the replay lines above");
}
