//! What a seed reports (counters, its violation and the one line that replays it), running
//! many seeds in parallel (a thread per core, each seed on one thread), and the summary table.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::check::Violation;
use super::trace::Trace;
use super::world::{Options, Tolerance, simulate};

#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub runs_asked: usize,
    /// Simulated runs (cron invocations) executed.
    pub runs: u64,
    pub skipped_ticks: u64,
    pub kills: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub served: u64,
    pub stored: u64,
    pub dead_letters: i64,
    pub doubles: u64,
    pub double_bound: u64,
    pub exits: BTreeMap<i32, u64>,
    pub violation: Option<Violation>,
    /// The violation is a known hole the caller tolerates.
    pub known: bool,
    /// Violations of holes the seed went on past, by kind.
    pub ignored: BTreeMap<Kind, u64>,
    /// The environment of the tolerance the seed ran with (part of its replay line).
    pub tolerance: String,
    pub wall: Duration,
    pub scenario: String,
    pub trace: Vec<String>,
}

impl Report {
    /// The one line that replays this seed with its trace.
    pub fn replay_line(&self) -> String {
        format!(
            "replay: {}SIM_SEED={} SIM_RUNS={} SIM_TRACE=1 cargo test --release -p framesync --features test-hooks --test simulation -- --ignored replay --nocapture",
            self.tolerance, self.seed, self.runs_asked
        )
    }

    /// The replay line and the violated invariant, when the seed failed (or met a known hole).
    pub fn failure(&self) -> Option<String> {
        let v = self.violation.as_ref()?;
        let hole = v.hole.map_or(String::new(), |h| format!(" [hole ({h})]"));
        Some(format!(
            "{}\n  invariant {} ({}){hole} after {} runs: {}\n  world: {}",
            self.replay_line(),
            v.invariant,
            v.tag,
            self.runs,
            v.detail,
            self.scenario
        ))
    }

    pub fn failed(&self) -> bool {
        self.violation.is_some() && !self.known
    }
}

/// Runs `count` seeds from `first`, `runs` cron minutes each, on every core; each finished
/// seed's failure is printed as it comes.
pub fn run_seeds(first: u64, count: u64, runs: usize, tolerance: &Tolerance) -> Summary {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(count.max(1) as usize);
    let next = AtomicU64::new(first);
    let reports = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        break;
                    }
                    let options = Options { seed, runs, trace: Trace::Off, tolerance: tolerance.clone() };
                    let report = simulate(options);
                    if let Some(failure) = report.failure().filter(|_| !report.known) {
                        println!("FAILED {failure}");
                    }
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    Summary::of(&reports, started.elapsed())
}

/// A kind of violation: invariant, tag, known hole.
pub type Kind = (u8, &'static str, Option<char>);

/// The seeds that met a kind of violation.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub seeds: u64,
    pub first: u64,
    pub known: bool,
}

/// The totals over seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub runs: u64,
    pub kills: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub served: u64,
    pub stored: u64,
    pub dead_letters: i64,
    pub doubles: u64,
    pub double_bound: u64,
    pub exits: BTreeMap<i32, u64>,
    pub violations: BTreeMap<Kind, Seen>,
    /// Violations of holes seeds went on past (`SIM_IGNORE`): how many, the first seed.
    pub ignored: BTreeMap<Kind, Seen>,
    pub skipped_ticks: u64,
    pub failed: Vec<String>,
    pub wall: Duration,
    /// The seed that took longest: (seed, runs, wall).
    pub slowest: (u64, u64, Duration),
}

impl Summary {
    fn of(reports: &[Report], wall: Duration) -> Self {
        let mut s = Summary { wall, ..Summary::default() };
        for r in reports {
            s.seeds += 1;
            s.runs += r.runs;
            add(&mut s.kills, &r.kills);
            add(&mut s.faults, &r.faults);
            add(&mut s.exits, &r.exits);
            s.served += r.served;
            s.stored += r.stored;
            s.dead_letters += r.dead_letters;
            s.doubles += r.doubles;
            s.double_bound += r.double_bound;
            s.skipped_ticks += r.skipped_ticks;
            if r.wall > s.slowest.2 {
                s.slowest = (r.seed, r.runs, r.wall);
            }
            for (kind, n) in &r.ignored {
                let seen = Seen { seeds: 0, first: r.seed, known: true };
                s.ignored.entry(*kind).or_insert(seen).seeds += n;
            }
            if let Some(v) = &r.violation {
                let seen = Seen { seeds: 0, first: r.seed, known: r.known };
                s.violations.entry((v.invariant, v.tag, v.hole)).or_insert(seen).seeds += 1;
                if r.failed() {
                    s.failed.push(r.failure().unwrap_or_default());
                }
            }
        }
        s
    }

    pub fn violations_not_known(&self) -> u64 {
        self.violations.values().filter(|s| !s.known).map(|s| s.seeds).sum()
    }

    pub fn print(&self) {
        let secs = self.wall.as_secs_f64().max(1e-9);
        println!("\nsimulation summary");
        println!("  {:<28} {}", "seeds", self.seeds);
        println!("  {:<28} {} ({:.0} runs/s)", "simulated runs", self.runs, self.runs as f64 / secs);
        println!("  {:<28} {:.1}s", "wall time", secs);
        let (seed, runs, wall) = self.slowest;
        println!("  {:<28} SIM_SEED={seed}: {runs} runs in {:.1}s", "slowest seed", wall.as_secs_f64());
        println!("  {:<28} {}", "records served (walks)", self.served);
        println!("  {:<28} {}", "records stored at the RS", self.stored);
        println!("  {:<28} {}", "records dead-lettered", self.dead_letters);
        println!(
            "  {:<28} {} (bound where keys are ignored: {})",
            "doubles at the RS", self.doubles, self.double_bound
        );
        println!("  {:<28} {}", "exit codes", join(&self.exits));
        println!("  {:<28} {}", "cron minutes skipped", self.skipped_ticks);
        println!("  kills by point ({}):", self.kills.values().sum::<u64>());
        for (point, n) in &self.kills {
            println!("    {point:<26} {n}");
        }
        println!("  faults injected by kind ({}):", self.faults.values().sum::<u64>());
        for (kind, n) in &self.faults {
            println!("    {kind:<26} {n}");
        }
        println!("  invariant violations: {} (known holes: {})", self.violations_not_known(), self.known());
        for ((invariant, tag, hole), seen) in &self.violations {
            let hole = hole.map_or(String::new(), |h| format!(" hole ({h})"));
            let status = if seen.known { "known" } else { "NEW" };
            println!(
                "    {status:<5} invariant {invariant} {tag}{hole}: {} seeds, first SIM_SEED={}",
                seen.seeds, seen.first
            );
        }
        for ((invariant, tag, hole), seen) in &self.ignored {
            let hole = hole.map_or(String::new(), |h| format!(" hole ({h})"));
            println!(
                "    went on past invariant {invariant} {tag}{hole}: {} times, first SIM_SEED={}",
                seen.seeds, seen.first
            );
        }
    }

    fn known(&self) -> u64 {
        self.violations.values().filter(|s| s.known).map(|s| s.seeds).sum()
    }
}

fn add<K: Ord + Copy>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(*k).or_default() += n;
    }
}

fn join(map: &BTreeMap<i32, u64>) -> String {
    map.iter().map(|(code, n)| format!("{code}: {n}")).collect::<Vec<_>>().join(", ")
}
