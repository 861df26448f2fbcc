//! The chaos trials: framesync killed with SIGKILL at every named kill point and at random
//! times, against an SS and RS that fail, time out and lose answers; then a clean run, and the
//! RS database compared with what the SS served. Three kinds of RS: one that honors the
//! Idempotency-Key, one that ignores it but offers a lookup, one that ignores it and offers none.
//!
//! `chaos_in_the_suite` runs a small number of trials on every test run; `scripts/chaos` runs
//! `chaos_at_scale` with CHAOS_TRIALS (default 1000) kills per kind of RS. Both push with
//! `sink.concurrency` = CHAOS_CONCURRENCY (default 16, the product's default; 1 is one request
//! in flight).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use framesync::hooks::POINTS;
use framesync_testkit::faults::{Kind, SPECS as FAULTS};

/// splitmix64: deterministic trials from CHAOS_SEED, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rs {
    HonorsKeys,
    IgnoresKeysWithLookup,
    IgnoresKeysWithoutLookup,
}

#[derive(Default, Debug)]
struct Tally {
    trials: u64,
    kills_by_point: BTreeMap<String, u64>,
    random_kills: u64,
    runs_not_killed: u64,
    rounds: u64,
    expected: i64,
    lost: i64,
    duplicates: i64,
    extra: i64,
    lost_responses_injected: i64,
    integrity_checks: u64,
    integrity_ok: u64,
}

impl Tally {
    fn kills(&self) -> u64 {
        self.kills_by_point.values().sum::<u64>() + self.random_kills
    }

    /// Kills that can fall between the RS storing a record and the ledger recording it: while
    /// requests are in flight or a group of acknowledgements is held, at any point of a push.
    fn in_flight_kills(&self) -> u64 {
        ["after-mark-sending", "mid-wave", "after-ack", "mid-ack-commit", "after-dead-letter", "mid-complete"]
            .iter()
            .map(|p| self.kills_by_point.get(*p).copied().unwrap_or(0))
            .sum::<u64>()
            + self.random_kills
    }
}

/// `sink.ack_group` in the trials: small, so kills fall inside groups. A kill can lose at most
/// one group's acknowledgements, which the next run re-sends with the same keys.
const ACK_GROUP: u64 = 4;

/// `sink.concurrency` in the trials.
fn concurrency() -> u64 {
    env_u64("CHAOS_CONCURRENCY", 16)
}

/// `sink.adaptive` in the trials: CHAOS_ADAPTIVE=0 holds the limit at `sink.concurrency`.
fn adaptive() -> bool {
    env_u64("CHAOS_ADAPTIVE", 1) != 0
}

/// Records a kill can leave stored at the RS and unrecorded in the ledger (record mode): a
/// group held short of `ACK_GROUP`, plus the `concurrency` requests whose answers were not
/// acted on.
fn crash_window() -> u64 {
    ACK_GROUP - 1 + concurrency()
}

/// Every fault rate the simulator has, each rare, so a trial meets a mix of them; lost
/// responses twice as often. Except 4xx from the RS: it rejects a good record for good, and a
/// round ends checking that every record but the poison ones is stored.
fn sim_flags(seed: &str) -> Vec<String> {
    let mut flags: Vec<String> = ["--records-per-minute", "8", "--page-size", "3", "--poison-fraction", "0.02"]
        .into_iter()
        .chain(["--dribble-delay", "1ms", "--retry-after", "0", "--latency-jitter", "2ms", "--seed", seed])
        .map(String::from)
        .collect();
    for spec in FAULTS.iter().filter(|spec| spec.kind == Kind::Rate && spec.key != "rs_4xx_rate") {
        let rate = if spec.key == "rs_drop_response_rate" { "0.02" } else { "0.01" };
        flags.extend([format!("--{}", spec.flag.expect("every rate has a flag")), rate.to_string()]);
    }
    flags
}

/// One round: a fresh simulator and ledger, `kills` killed runs, a clean finish, the check.
fn round(rs: Rs, kills: u64, rng: &mut Rng, tally: &mut Tally) {
    let dir = tempfile::tempdir().unwrap();
    let seed = rng.next().to_string();
    let mut flags = sim_flags(&seed);
    if rs != Rs::HonorsKeys {
        flags.push("--rs-ignore-keys".into());
    }
    let sim = Sim::start(dir.path(), &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let sink =
        format!("retries = 1\nack_group = {ACK_GROUP}\nconcurrency = {}\nadaptive = {}", concurrency(), adaptive());
    let sink = match rs {
        Rs::IgnoresKeysWithLookup => format!("{sink}\nlookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base()),
        _ => sink,
    };
    let run = "max_frames = 4\nretry_base = \"0s\"\nretry_max = \"0s\"\nretain = \"2m\"";
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(90), "", &sink, run);
    let mut killed = 0;
    while killed < kills {
        tally.trials += 1;
        if kill_once(&p, rng, tally) {
            killed += 1;
        }
        if !p.ledger_path().exists() || p.query::<i64>("PRAGMA user_version") == 0 {
            continue; // killed before the ledger was created, or while it was being created
        }
        tally.integrity_checks += 1;
        if p.query::<String>("PRAGMA integrity_check") == "ok" {
            tally.integrity_ok += 1;
        }
        if p.missing_frames() == 0 && p.query::<i64>("SELECT COUNT(*) FROM staged") == 0 {
            break; // all delivered: the rest of this round's kills go to the next round
        }
    }
    p.run_until_complete_pausing(200, Duration::ZERO);
    let check = sim.check(p.reference, p.complete_until());
    tally.rounds += 1;
    tally.expected += check["expected"].as_i64().unwrap();
    tally.lost += check["missing"].as_i64().unwrap();
    tally.duplicates += check["duplicates"].as_i64().unwrap();
    tally.extra += check["extra"].as_i64().unwrap();
    tally.lost_responses_injected += sim.stats()["faults"]["rs_dropped_responses"].as_i64().unwrap_or(0);
    tally.integrity_checks += 1;
    if p.query::<String>("PRAGMA integrity_check") == "ok" {
        tally.integrity_ok += 1;
    }
}

/// One run, killed at a random kill point (and pass) or at a random time. True if it died.
fn kill_once(p: &Pipeline, rng: &mut Rng, tally: &mut Tally) -> bool {
    let mut command = p.command(&["run"]);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    if rng.below(5) == 0 {
        let mut child = command.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        if finished {
            tally.runs_not_killed += 1;
            return false;
        }
        tally.random_kills += 1;
        return true;
    }
    let point = POINTS[rng.below(POINTS.len() as u64) as usize];
    let pass = 1 + rng.below(if point.contains("ack") || point.contains("sending") { 12 } else { 3 });
    let status = command.env("FRAMESYNC_TEST_KILL_AT", format!("{point}:{pass}")).status().unwrap();
    if status.code().is_some() {
        tally.runs_not_killed += 1;
        return false;
    }
    *tally.kills_by_point.entry(point.to_string()).or_default() += 1;
    true
}

fn chaos(kills_per_rs: u64, per_round: u64, seed: u64) -> BTreeMap<Rs, Tally> {
    let mut rng = Rng(seed);
    let mut report = BTreeMap::new();
    for rs in [Rs::HonorsKeys, Rs::IgnoresKeysWithLookup, Rs::IgnoresKeysWithoutLookup] {
        let mut tally = Tally::default();
        while tally.kills() < kills_per_rs {
            round(rs, per_round.min(kills_per_rs - tally.kills()), &mut rng, &mut tally);
        }
        report.insert(rs, tally);
    }
    print_report(&report, seed);
    report
}

fn print_report(report: &BTreeMap<Rs, Tally>, seed: u64) {
    println!(
        "chaos report (CHAOS_SEED={seed}, CHAOS_CONCURRENCY={}, CHAOS_ADAPTIVE={})",
        concurrency(),
        adaptive() as u8
    );
    println!(
        "{:<30} {:>7} {:>6} {:>7} {:>9} {:>6} {:>11} {:>12} {:>15} {:>10}",
        "RS",
        "trials",
        "kills",
        "random",
        "expected",
        "lost",
        "duplicates",
        "lost answers",
        "in-flight kills",
        "integrity"
    );
    for (rs, t) in report {
        println!(
            "{:<30} {:>7} {:>6} {:>7} {:>9} {:>6} {:>11} {:>12} {:>15} {:>4}/{:<5}",
            format!("{rs:?}"),
            t.trials,
            t.kills(),
            t.random_kills,
            t.expected,
            t.lost,
            t.duplicates,
            t.lost_responses_injected,
            t.in_flight_kills(),
            t.integrity_ok,
            t.integrity_checks
        );
    }
    let mut points: BTreeMap<&str, u64> = BTreeMap::new();
    for t in report.values() {
        for (p, n) in &t.kills_by_point {
            *points.entry(p).or_default() += n;
        }
    }
    println!("kills by point: {points:?}");
}

fn assert_guarantees(report: &BTreeMap<Rs, Tally>) {
    for (rs, t) in report {
        assert_eq!(t.lost, 0, "{rs:?}: records lost");
        assert_eq!(t.extra, 0, "{rs:?}: records the SS never served");
        assert_eq!(t.integrity_ok, t.integrity_checks, "{rs:?}: integrity_check failed");
        match rs {
            Rs::HonorsKeys | Rs::IgnoresKeysWithLookup => assert_eq!(t.duplicates, 0, "{rs:?}: duplicates"),
            Rs::IgnoresKeysWithoutLookup => assert!(
                t.duplicates as u64 <= t.lost_responses_injected as u64 + t.in_flight_kills() * crash_window(),
                "{rs:?}: {} duplicates for {} lost answers and {} in-flight kills (groups of {ACK_GROUP}, {} in flight)",
                t.duplicates,
                t.lost_responses_injected,
                t.in_flight_kills(),
                concurrency()
            ),
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn chaos_in_the_suite() {
    let report = chaos(12, 12, env_u64("CHAOS_SEED", 7));
    assert_guarantees(&report);
}

#[test]
#[ignore = "long: run by scripts/chaos"]
fn chaos_at_scale() {
    let report = chaos(env_u64("CHAOS_TRIALS", 1000), 25, env_u64("CHAOS_SEED", 1));
    assert_guarantees(&report);
    let points: std::collections::BTreeSet<&String> = report.values().flat_map(|t| t.kills_by_point.keys()).collect();
    assert!(points.len() >= 8, "kills landed on {} points: {points:?}", points.len());
}
