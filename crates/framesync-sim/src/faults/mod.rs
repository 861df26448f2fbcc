//! Fault injection: the settings (shared by every connection, changeable at run time through
//! `/control/faults`) and the plan for each request.
//!
//! Each rate is the fraction of one side's requests that meet that fault. What the client sees,
//! in the order one roll walks them (the RS stores nothing for any fault but the lost response):
//!
//! - reset (`ss_reset_rate`, `rs_reset_rate`): a TCP RST before any byte, so `ECONNRESET` on
//!   the client's next read or write. The server drops the socket with the request head still
//!   unread (`http` only peeks at a head until the plan accepts it), and Linux answers a close
//!   with unread bytes by RST instead of FIN — for a bodiless GET too, without the `SO_LINGER`
//!   that std does not offer. No latency first.
//! - empty (`ss_empty_rate`, `rs_empty_rate`): the whole request is read, then a FIN: EOF before
//!   any byte.
//! - error (`ss_error_rate` 500, `rs_error_rate` 503), 5xx (`ss_5xx_rate`, `rs_5xx_rate`: 500,
//!   502, 503 or 504), 4xx (`rs_4xx_rate`: 400 or 422): that status, with a JSON error body.
//! - 429 (`ss_429_rate`, `rs_429_rate`): 429 with `Retry-After: retry_after_secs`.
//! - lost response (`rs_drop_response_rate`): EOF before any byte, like empty, but the RS has
//!   stored the request.
//! - truncate (`ss_truncate_rate`): the head with the full Content-Length, half the body, EOF.
//! - malformed (`ss_malformed_rate`): a whole 200, Content-Length right, body not JSON: either
//!   an HTML page (`text/html`) or the page's JSON cut in half (`application/json`).
//! - dribble (`ss_dribble_rate`): the right answer, the head at once, then the body
//!   `http::DRIBBLE_BYTES` bytes at a time with `dribble_delay_ms` before each piece: intact,
//!   unless the client's timeout is shorter than the whole dribble.
//!
//! `rs_down` is a switch, not a rate: every `/rs/` request is reset like above, and draws
//! nothing. Latency (`latency_ms`, or `ss_latency_ms` / `rs_latency_ms` when set, plus up to
//! `latency_jitter_ms`) is slept before every SS and RS answer, faulty or not, except a reset.
//!
//! Decisions are deterministic without a `rand` crate: the n-th SS request (and, counted apart,
//! the n-th RS request) rolls splitmix64 of (seed, side, n, purpose). One roll picks at most one
//! fault by walking the side's rates in a fixed order, so the rates add up (a side's must not
//! exceed 1) and the counts in `/control/stats` are exact; more rolls pick the details (which
//! 5xx, how much jitter). The same seed and the same sequence of requests meet the same faults,
//! and SS traffic never shifts the RS's faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::data::{splitmix64, unit};

const SIDE_SS: u64 = 0x5353;
const SIDE_RS: u64 = 0x5253;
const ROLL_FAULT: u64 = 1;
const ROLL_DETAIL: u64 = 2;
const ROLL_JITTER: u64 = 3;
/// Rates are decimals typed by people: 0.7 + 0.2 + 0.1 must not count as over 1.
const RATE_SLACK: f64 = 1e-9;

/// The field names are the `/control/faults` keys, and the JSON that endpoint answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultSettings {
    /// Every `/rs/` connection is reset right after its request head, as if the RS crashed.
    pub rs_down: bool,
    // The SS's rates, in the order a roll walks them.
    pub ss_reset_rate: f64,
    pub ss_empty_rate: f64,
    /// Answer 500.
    pub ss_error_rate: f64,
    pub ss_5xx_rate: f64,
    pub ss_429_rate: f64,
    pub ss_truncate_rate: f64,
    pub ss_malformed_rate: f64,
    pub ss_dribble_rate: f64,
    // The RS's rates, in the order a roll walks them. None of these faults stores anything,
    // except the lost response.
    pub rs_reset_rate: f64,
    pub rs_empty_rate: f64,
    /// Answer 503.
    pub rs_error_rate: f64,
    pub rs_5xx_rate: f64,
    pub rs_4xx_rate: f64,
    pub rs_429_rate: f64,
    /// Process and store, then close the socket without answering: the lost response.
    pub rs_drop_response_rate: f64,
    /// Slept before every SS and RS answer, unless the side has its own.
    pub latency_ms: u64,
    pub ss_latency_ms: Option<u64>,
    pub rs_latency_ms: Option<u64>,
    /// Up to this much more, drawn per request.
    pub latency_jitter_ms: u64,
    /// The `Retry-After` of injected 429s, SS and RS.
    pub retry_after_secs: u64,
    /// The pause between the pieces of a dribbled body.
    pub dribble_delay_ms: u64,
}

/// A setting reached by its `/control/faults` key, to be parsed into.
pub enum Field<'a> {
    Switch(&'a mut bool),
    Rate(&'a mut f64),
    Whole(&'a mut u64),
    /// A per-side value that falls back to the shared one when `None`.
    Override(&'a mut Option<u64>),
}

/// What one request meets instead of a plain answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Close right after the request head, leaving it unread: the peer gets a TCP RST.
    Reset,
    /// Read the whole request, process nothing, close without writing a byte.
    Empty,
    /// Answer this status without processing the request.
    Status(u16),
    /// Answer 429 with `Retry-After` without processing the request.
    TooManyRequests { retry_after_secs: u64 },
    /// Process the request (the RS stores it), then close without answering.
    DropResponse,
    /// The head with the full Content-Length, then the first half of the body, then close.
    Truncate,
    /// A 200 whose body is not JSON.
    Malformed(Garbage),
    /// The right answer, its body a few bytes at a time with this pause before each piece.
    Dribble { pause: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Garbage {
    /// An HTML error page, as a proxy in the way would send.
    Html,
    /// The real JSON cut in half, with a Content-Length that matches the cut.
    CutJson,
}

/// The fate of one request, decided from its head.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Plan {
    /// At most one fault, with the counter it is counted under.
    pub fault: Option<(FaultKind, Fault)>,
    /// Injected latency, slept before answering.
    pub delay: Duration,
}

/// The counters of `/control/stats` under `faults`: one per fault, plus the `rs_down` closes and
/// the requests delayed by injected latency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    RsDownClose,
    SsReset,
    SsEmpty,
    SsError,
    Ss5xx,
    Ss429,
    SsTruncate,
    SsMalformed,
    SsDribble,
    SsDelay,
    RsReset,
    RsEmpty,
    RsError,
    Rs5xx,
    Rs4xx,
    Rs429,
    RsDroppedResponse,
    RsDelay,
}

impl FaultKind {
    pub const ALL: [FaultKind; 18] = [
        FaultKind::RsDownClose,
        FaultKind::SsReset,
        FaultKind::SsEmpty,
        FaultKind::SsError,
        FaultKind::Ss5xx,
        FaultKind::Ss429,
        FaultKind::SsTruncate,
        FaultKind::SsMalformed,
        FaultKind::SsDribble,
        FaultKind::SsDelay,
        FaultKind::RsReset,
        FaultKind::RsEmpty,
        FaultKind::RsError,
        FaultKind::Rs5xx,
        FaultKind::Rs4xx,
        FaultKind::Rs429,
        FaultKind::RsDroppedResponse,
        FaultKind::RsDelay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::RsDownClose => "rs_down_closes",
            FaultKind::SsReset => "ss_resets",
            FaultKind::SsEmpty => "ss_empty_responses",
            FaultKind::SsError => "ss_errors",
            FaultKind::Ss5xx => "ss_5xx_errors",
            FaultKind::Ss429 => "ss_429s",
            FaultKind::SsTruncate => "ss_truncated_bodies",
            FaultKind::SsMalformed => "ss_malformed_bodies",
            FaultKind::SsDribble => "ss_dribbled_bodies",
            FaultKind::SsDelay => "ss_delays",
            FaultKind::RsReset => "rs_resets",
            FaultKind::RsEmpty => "rs_empty_responses",
            FaultKind::RsError => "rs_errors",
            FaultKind::Rs5xx => "rs_5xx_errors",
            FaultKind::Rs4xx => "rs_4xx_errors",
            FaultKind::Rs429 => "rs_429s",
            FaultKind::RsDroppedResponse => "rs_dropped_responses",
            FaultKind::RsDelay => "rs_delays",
        }
    }
}

const SERVER_ERRORS: [u16; 4] = [500, 502, 503, 504];
const CLIENT_ERRORS: [u16; 2] = [400, 422];

/// One fault of a side's table, which lists them in the order one roll walks them.
struct Row {
    key: &'static str,
    kind: FaultKind,
    rate: f64,
    fault: Fault,
}

impl Row {
    fn new(key: &'static str, kind: FaultKind, rate: f64, fault: Fault) -> Row {
        Row { key, kind, rate, fault }
    }
}

impl Default for FaultSettings {
    /// No faults, no latency.
    fn default() -> FaultSettings {
        FaultSettings {
            rs_down: false,
            ss_reset_rate: 0.0,
            ss_empty_rate: 0.0,
            ss_error_rate: 0.0,
            ss_5xx_rate: 0.0,
            ss_429_rate: 0.0,
            ss_truncate_rate: 0.0,
            ss_malformed_rate: 0.0,
            ss_dribble_rate: 0.0,
            rs_reset_rate: 0.0,
            rs_empty_rate: 0.0,
            rs_error_rate: 0.0,
            rs_5xx_rate: 0.0,
            rs_4xx_rate: 0.0,
            rs_429_rate: 0.0,
            rs_drop_response_rate: 0.0,
            latency_ms: 0,
            ss_latency_ms: None,
            rs_latency_ms: None,
            latency_jitter_ms: 0,
            retry_after_secs: 1,
            dribble_delay_ms: 50,
        }
    }
}

impl FaultSettings {
    /// Every key `/control/faults` knows.
    pub const KEYS: [&str; 22] = [
        "rs_down",
        "ss_reset_rate",
        "ss_empty_rate",
        "ss_error_rate",
        "ss_5xx_rate",
        "ss_429_rate",
        "ss_truncate_rate",
        "ss_malformed_rate",
        "ss_dribble_rate",
        "rs_reset_rate",
        "rs_empty_rate",
        "rs_error_rate",
        "rs_5xx_rate",
        "rs_4xx_rate",
        "rs_429_rate",
        "rs_drop_response_rate",
        "latency_ms",
        "ss_latency_ms",
        "rs_latency_ms",
        "latency_jitter_ms",
        "retry_after_secs",
        "dribble_delay_ms",
    ];

    pub fn field(&mut self, key: &str) -> Option<Field<'_>> {
        let field = match key {
            "rs_down" => Field::Switch(&mut self.rs_down),
            "ss_reset_rate" => Field::Rate(&mut self.ss_reset_rate),
            "ss_empty_rate" => Field::Rate(&mut self.ss_empty_rate),
            "ss_error_rate" => Field::Rate(&mut self.ss_error_rate),
            "ss_5xx_rate" => Field::Rate(&mut self.ss_5xx_rate),
            "ss_429_rate" => Field::Rate(&mut self.ss_429_rate),
            "ss_truncate_rate" => Field::Rate(&mut self.ss_truncate_rate),
            "ss_malformed_rate" => Field::Rate(&mut self.ss_malformed_rate),
            "ss_dribble_rate" => Field::Rate(&mut self.ss_dribble_rate),
            "rs_reset_rate" => Field::Rate(&mut self.rs_reset_rate),
            "rs_empty_rate" => Field::Rate(&mut self.rs_empty_rate),
            "rs_error_rate" => Field::Rate(&mut self.rs_error_rate),
            "rs_5xx_rate" => Field::Rate(&mut self.rs_5xx_rate),
            "rs_4xx_rate" => Field::Rate(&mut self.rs_4xx_rate),
            "rs_429_rate" => Field::Rate(&mut self.rs_429_rate),
            "rs_drop_response_rate" => Field::Rate(&mut self.rs_drop_response_rate),
            "latency_ms" => Field::Whole(&mut self.latency_ms),
            "ss_latency_ms" => Field::Override(&mut self.ss_latency_ms),
            "rs_latency_ms" => Field::Override(&mut self.rs_latency_ms),
            "latency_jitter_ms" => Field::Whole(&mut self.latency_jitter_ms),
            "retry_after_secs" => Field::Whole(&mut self.retry_after_secs),
            "dribble_delay_ms" => Field::Whole(&mut self.dribble_delay_ms),
            _ => return None,
        };
        Some(field)
    }

    /// A request meets at most one fault, so a side's rates cannot add up to more than 1.
    pub fn validate(&self) -> Result<(), String> {
        for (side, table) in [("SS", &self.ss_table(0.0)[..]), ("RS", &self.rs_table(0.0)[..])] {
            let total: f64 = table.iter().map(|row| row.rate).sum();
            if total > 1.0 + RATE_SLACK {
                let given: Vec<String> =
                    table.iter().filter(|row| row.rate > 0.0).map(|row| format!("{}={}", row.key, row.rate)).collect();
                return Err(format!(
                    "the {side} fault rates add up to {} ({}): a request meets at most one fault, \
                     so they must add up to at most 1",
                    (total * 1e6).round() / 1e6,
                    given.join(" + ")
                ));
            }
        }
        Ok(())
    }

    /// `detail` picks which 5xx, which 4xx, which garbage.
    fn ss_table(&self, detail: f64) -> [Row; 8] {
        let s = self;
        let garbage = if detail < 0.5 { Garbage::Html } else { Garbage::CutJson };
        let dribble = Fault::Dribble { pause: millis(s.dribble_delay_ms) };
        [
            Row::new("ss_reset_rate", FaultKind::SsReset, s.ss_reset_rate, Fault::Reset),
            Row::new("ss_empty_rate", FaultKind::SsEmpty, s.ss_empty_rate, Fault::Empty),
            Row::new("ss_error_rate", FaultKind::SsError, s.ss_error_rate, Fault::Status(500)),
            Row::new("ss_5xx_rate", FaultKind::Ss5xx, s.ss_5xx_rate, Fault::Status(one_of(&SERVER_ERRORS, detail))),
            Row::new("ss_429_rate", FaultKind::Ss429, s.ss_429_rate, s.too_many_requests()),
            Row::new("ss_truncate_rate", FaultKind::SsTruncate, s.ss_truncate_rate, Fault::Truncate),
            Row::new("ss_malformed_rate", FaultKind::SsMalformed, s.ss_malformed_rate, Fault::Malformed(garbage)),
            Row::new("ss_dribble_rate", FaultKind::SsDribble, s.ss_dribble_rate, dribble),
        ]
    }

    fn rs_table(&self, detail: f64) -> [Row; 7] {
        let s = self;
        let (rs_5xx, rs_4xx) = (one_of(&SERVER_ERRORS, detail), one_of(&CLIENT_ERRORS, detail));
        [
            Row::new("rs_reset_rate", FaultKind::RsReset, s.rs_reset_rate, Fault::Reset),
            Row::new("rs_empty_rate", FaultKind::RsEmpty, s.rs_empty_rate, Fault::Empty),
            Row::new("rs_error_rate", FaultKind::RsError, s.rs_error_rate, Fault::Status(503)),
            Row::new("rs_5xx_rate", FaultKind::Rs5xx, s.rs_5xx_rate, Fault::Status(rs_5xx)),
            Row::new("rs_4xx_rate", FaultKind::Rs4xx, s.rs_4xx_rate, Fault::Status(rs_4xx)),
            Row::new("rs_429_rate", FaultKind::Rs429, s.rs_429_rate, s.too_many_requests()),
            Row::new(
                "rs_drop_response_rate",
                FaultKind::RsDroppedResponse,
                s.rs_drop_response_rate,
                Fault::DropResponse,
            ),
        ]
    }

    fn too_many_requests(&self) -> Fault {
        Fault::TooManyRequests { retry_after_secs: self.retry_after_secs }
    }

    /// The side's fixed latency plus `roll`'s share of the jitter, 0 to `latency_jitter_ms`.
    fn delay(&self, side_latency_ms: Option<u64>, roll: f64) -> Duration {
        let jitter = ((self.latency_jitter_ms as f64 + 1.0) * roll) as u64;
        let fixed = side_latency_ms.unwrap_or(self.latency_ms);
        millis(fixed.saturating_add(jitter.min(self.latency_jitter_ms)))
    }
}

fn one_of(choices: &[u16], roll: f64) -> u16 {
    choices[((roll * choices.len() as f64) as usize).min(choices.len() - 1)]
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Walks the rates in order: the first fault whose running total exceeds `roll`, if any.
fn pick(table: &[Row], roll: f64) -> Option<(FaultKind, Fault)> {
    let mut threshold = 0.0;
    for row in table {
        threshold += row.rate;
        if roll < threshold {
            return Some((row.kind, row.fault));
        }
    }
    None
}

pub struct Faults {
    seed: u64,
    settings: Mutex<FaultSettings>,
    ss_requests: AtomicU64,
    rs_requests: AtomicU64,
}

impl Faults {
    pub fn new(seed: u64, settings: FaultSettings) -> Faults {
        let (ss_requests, rs_requests) = (AtomicU64::new(0), AtomicU64::new(0));
        Faults { seed, settings: Mutex::new(settings), ss_requests, rs_requests }
    }

    /// Settings are plain values, so a panic while holding the lock cannot leave them torn.
    pub fn settings(&self) -> FaultSettings {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies `change` to a copy and keeps it only if `change` and `validate` both accept it.
    /// The lock is held throughout, so two concurrent updates cannot lose one another.
    pub fn update(
        &self,
        change: impl FnOnce(&mut FaultSettings) -> Result<(), String>,
    ) -> Result<FaultSettings, String> {
        let mut settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new = settings.clone();
        change(&mut new)?;
        new.validate()?;
        *settings = new.clone();
        Ok(new)
    }

    pub fn rs_down(&self) -> bool {
        self.settings().rs_down
    }

    /// Decides the fate of the next SS request (and counts it).
    pub fn next_ss(&self) -> Plan {
        let roll = self.dice(SIDE_SS, &self.ss_requests);
        let s = self.settings();
        Plan {
            fault: pick(&s.ss_table(roll(ROLL_DETAIL)), roll(ROLL_FAULT)),
            delay: s.delay(s.ss_latency_ms, roll(ROLL_JITTER)),
        }
    }

    /// Decides the fate of the next RS request (and counts it).
    pub fn next_rs(&self) -> Plan {
        let roll = self.dice(SIDE_RS, &self.rs_requests);
        let s = self.settings();
        Plan {
            fault: pick(&s.rs_table(roll(ROLL_DETAIL)), roll(ROLL_FAULT)),
            delay: s.delay(s.rs_latency_ms, roll(ROLL_JITTER)),
        }
    }

    /// Numbers one request on `side`; the returned roll maps a purpose to [0, 1).
    fn dice(&self, side: u64, counter: &AtomicU64) -> impl Fn(u64) -> f64 {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let base = splitmix64(splitmix64(splitmix64(self.seed) ^ side) ^ n);
        move |purpose| unit(splitmix64(base ^ purpose))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    const DRAWS: usize = 10_000;

    fn set<T>(field: &mut T, value: T) -> Result<(), String> {
        *field = value;
        Ok(())
    }

    fn ss_plans(faults: &Faults, n: usize) -> Vec<Plan> {
        (0..n).map(|_| faults.next_ss()).collect()
    }

    fn rs_plans(faults: &Faults, n: usize) -> Vec<Plan> {
        (0..n).map(|_| faults.next_rs()).collect()
    }

    /// How many plans met each fault counter (`None` for no fault).
    fn tally(plans: &[Plan]) -> HashMap<Option<&'static str>, usize> {
        let mut counts = HashMap::new();
        for plan in plans {
            *counts.entry(plan.fault.map(|(kind, _)| kind.name())).or_default() += 1;
        }
        counts
    }

    fn every_ss_rate(rate: f64) -> FaultSettings {
        FaultSettings {
            ss_reset_rate: rate,
            ss_empty_rate: rate,
            ss_error_rate: rate,
            ss_5xx_rate: rate,
            ss_429_rate: rate,
            ss_truncate_rate: rate,
            ss_malformed_rate: rate,
            ss_dribble_rate: rate,
            ..FaultSettings::default()
        }
    }

    fn every_rs_rate(rate: f64) -> FaultSettings {
        FaultSettings {
            rs_reset_rate: rate,
            rs_empty_rate: rate,
            rs_error_rate: rate,
            rs_5xx_rate: rate,
            rs_4xx_rate: rate,
            rs_429_rate: rate,
            rs_drop_response_rate: rate,
            ..FaultSettings::default()
        }
    }

    #[test]
    fn the_same_seed_and_request_sequence_meet_the_same_faults() {
        let settings = FaultSettings { latency_jitter_ms: 100, ..every_rs_rate(0.1) };
        let a = rs_plans(&Faults::new(1, settings.clone()), 500);
        let b = rs_plans(&Faults::new(1, settings.clone()), 500);
        let c = rs_plans(&Faults::new(2, settings), 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn each_rate_is_honored_over_ten_thousand_draws() {
        let ss = tally(&ss_plans(&Faults::new(5, every_ss_rate(0.1)), DRAWS));
        let rs = tally(&rs_plans(&Faults::new(5, every_rs_rate(0.1)), DRAWS));
        // 0.1 of 10,000 has a standard deviation of 30: 200 is over six of them.
        for (counts, faults, none) in [(ss, 8, 2000), (rs, 7, 3000)] {
            assert_eq!(counts.len(), faults + 1, "{counts:?}");
            for (kind, n) in &counts {
                let expected = if kind.is_some() { 1000 } else { none };
                assert!(n.abs_diff(expected) < 200, "{kind:?}: {n} of {DRAWS}, expected about {expected}");
            }
        }
    }

    #[test]
    fn rates_adding_up_to_one_give_every_request_exactly_one_fault() {
        let plans = rs_plans(&Faults::new(9, every_rs_rate(1.0 / 7.0)), DRAWS);
        assert!(plans.iter().all(|p| p.fault.is_some()));
        let counts = tally(&plans);
        assert_eq!(counts.values().sum::<usize>(), DRAWS, "each request counted under one fault");
        assert!(counts.values().all(|n| n.abs_diff(DRAWS / 7) < 200), "{counts:?}");
    }

    #[test]
    fn rates_adding_up_to_more_than_one_are_refused_and_change_nothing() {
        let faults = Faults::new(1, FaultSettings { ss_error_rate: 0.7, ..FaultSettings::default() });
        let error = faults.update(|s| set(&mut s.ss_429_rate, 0.5)).unwrap_err();
        assert!(error.contains("SS fault rates add up to 1.2 (ss_error_rate=0.7 + ss_429_rate=0.5)"), "{error}");
        assert_eq!(faults.settings().ss_429_rate, 0.0);
        let exactly_one = faults.update(|s| set(&mut s.ss_429_rate, 0.3)).unwrap();
        assert_eq!(exactly_one.ss_429_rate, 0.3);
        assert!(every_rs_rate(0.15).validate().unwrap_err().contains("the RS fault rates add up to 1.05"));
    }

    #[test]
    fn injected_statuses_are_drawn_from_their_class() {
        let statuses = |settings: FaultSettings| -> BTreeSet<u16> {
            let faults = Faults::new(3, settings);
            let status = |p: Plan| match p.fault {
                Some((_, Fault::Status(s))) => s,
                other => panic!("expected a status, got {other:?}"),
            };
            (0..200).map(|_| status(faults.next_rs())).collect()
        };
        let five = statuses(FaultSettings { rs_5xx_rate: 1.0, ..FaultSettings::default() });
        assert_eq!(five, BTreeSet::from([500, 502, 503, 504]));
        let four = statuses(FaultSettings { rs_4xx_rate: 1.0, ..FaultSettings::default() });
        assert_eq!(four, BTreeSet::from([400, 422]));
        let legacy = statuses(FaultSettings { rs_error_rate: 1.0, ..FaultSettings::default() });
        assert_eq!(legacy, BTreeSet::from([503]));
    }

    #[test]
    fn ss_requests_do_not_shift_rs_faults() {
        let settings = FaultSettings { rs_error_rate: 0.5, ss_429_rate: 0.5, ..FaultSettings::default() };
        let quiet = Faults::new(3, settings.clone());
        let busy = Faults::new(3, settings);
        ss_plans(&busy, 17);
        assert_eq!(rs_plans(&quiet, 50), rs_plans(&busy, 50));
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        let faults = Faults::new(1, FaultSettings::default());
        assert!(ss_plans(&faults, 100).iter().all(|p| *p == Plan::default()));
        faults.update(|s| set(&mut s.rs_429_rate, 1.0).and(set(&mut s.retry_after_secs, 7))).unwrap();
        let expected = Some((FaultKind::Rs429, Fault::TooManyRequests { retry_after_secs: 7 }));
        assert!(rs_plans(&faults, 100).iter().all(|p| p.fault == expected));
    }

    #[test]
    fn latency_is_the_sides_own_or_the_shared_plus_jitter_within_bounds() {
        let settings =
            FaultSettings { latency_ms: 10, rs_latency_ms: Some(0), latency_jitter_ms: 5, ..Default::default() };
        let faults = Faults::new(4, settings);
        let ss: BTreeSet<u128> = ss_plans(&faults, 500).iter().map(|p| p.delay.as_millis()).collect();
        let rs: BTreeSet<u128> = rs_plans(&faults, 500).iter().map(|p| p.delay.as_millis()).collect();
        assert_eq!(ss, (10..=15).collect());
        assert_eq!(rs, (0..=5).collect());
    }

    #[test]
    fn every_key_reaches_a_field_named_like_it() {
        let mut settings = FaultSettings::default();
        let json = serde_json::to_value(settings.clone()).unwrap();
        let fields: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, FaultSettings::KEYS.into_iter().collect());
        assert!(FaultSettings::KEYS.iter().all(|key| settings.field(key).is_some()));
        assert!(settings.field("rs_eror_rate").is_none());
    }
}
