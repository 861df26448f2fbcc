//! Fault injection: the settings (shared by every connection, changeable at run time through
//! `/control/faults`) and the plan for each request. Each setting is defined once, in
//! `settings`; the `serve` flags (`flags`) and the control endpoint's keys are made from there.
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
//! - 429 (`ss_429_rate`, `rs_429_rate`): 429 with a `Retry-After` of `retry_after_secs`.
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
//! Two more switches make the RS's lookups misbehave without a roll: `rs_lookup_lies` (every
//! lookup answers present) and `rs_lookup_unreadable` (`/rs/query` answers without its data).
//!
//! Two limits make the RS a server of bounded means, without a roll (`crate::capacity`):
//! `rs_capacity` requests in service at once, each for its whole latency, and `rs_queue` more
//! waiting their turn; past both, a 503 with `Retry-After: 1` at once, instead of any fault drawn.
//!
//! `ss_clock_skew_secs` sets the SS's clock off the real one, without a roll: its `Date` header
//! and the records it has go by that clock, as an SS whose clock is wrong would answer.
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

use crate::data::{splitmix64, unit};

mod flags;
mod settings;

pub use flags::{FaultArgs, fraction};
pub use settings::{FaultSettings, FaultSpec, Field, Kind, SPECS};

const SIDE_SS: u64 = 0x5353;
const SIDE_RS: u64 = 0x5253;
const ROLL_FAULT: u64 = 1;
const ROLL_DETAIL: u64 = 2;
const ROLL_JITTER: u64 = 3;
/// Rates are decimals typed by people: 0.7 + 0.2 + 0.1 must not count as over 1.
const RATE_SLACK: f64 = 1e-9;
/// The most the SS's clock may be set off the real one, either way: a day.
pub const MOST_CLOCK_SKEW_SECS: i64 = 86_400;

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

impl FaultSettings {
    /// Every setting is valid, and they make sense together.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_limits()?;
        self.validate_rates()
    }

    /// An RS that can work on no request at all would only ever queue; an SS clock off by more
    /// than a day is no skew a test needs.
    pub fn validate_limits(&self) -> Result<(), String> {
        if self.rs_capacity == Some(0) {
            return Err("`rs_capacity` (--rs-capacity) must be at least 1, or `none` for no limit".into());
        }
        if self.ss_clock_skew_secs.abs() > MOST_CLOCK_SKEW_SECS {
            return Err(format!(
                "`ss_clock_skew_secs` (--ss-clock-skew) must be within a day of the real clock (±{MOST_CLOCK_SKEW_SECS}), not {}",
                self.ss_clock_skew_secs
            ));
        }
        Ok(())
    }

    /// A request meets at most one fault, so a side's rates cannot add up to more than 1.
    pub fn validate_rates(&self) -> Result<(), String> {
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
mod tests;
