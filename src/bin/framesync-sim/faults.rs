//! Fault injection: the settings (shared by every connection, changeable at run time through
//! `/control/faults`) and the per-request decisions.
//!
//! Decisions are deterministic without a `rand` crate: the n-th SS request (and, counted apart,
//! the n-th RS request) rolls splitmix64 of (seed, side, n, kind). The same seed and the same
//! sequence of requests meet the same faults, and SS traffic never shifts the RS's faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::data::{splitmix64, unit};

const SIDE_SS: u64 = 0x5353;
const SIDE_RS: u64 = 0x5253;
const ROLL_ERROR: u64 = 1;
const ROLL_429: u64 = 2;
const ROLL_DROP: u64 = 3;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultSettings {
    /// Every `/rs/` connection is closed right after its request head, as if the RS crashed.
    pub rs_down: bool,
    /// Answer 503 without processing.
    pub rs_error_rate: f64,
    /// Process and store, then close the socket without answering: the lost response.
    pub rs_drop_response_rate: f64,
    /// Answer 500.
    pub ss_error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_secs`.
    pub ss_429_rate: f64,
    /// Added before every SS and RS answer.
    pub latency_ms: u64,
    pub retry_after_secs: u64,
}

/// A partial change of the settings: only the `Some` fields change.
#[derive(Debug, Default, PartialEq)]
pub struct FaultUpdate {
    pub rs_down: Option<bool>,
    pub rs_error_rate: Option<f64>,
    pub rs_drop_response_rate: Option<f64>,
    pub ss_error_rate: Option<f64>,
    pub ss_429_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, PartialEq)]
pub enum SsFault {
    None,
    Error,
    TooManyRequests { retry_after_secs: u64 },
}

#[derive(Debug, PartialEq)]
pub enum RsFault {
    None,
    Error,
    DropResponse,
}

/// The kinds of injected faults, as counted by `/control/stats`.
#[derive(Clone, Copy, Debug)]
pub enum FaultKind {
    RsDownClose,
    RsError,
    RsDroppedResponse,
    SsError,
    Ss429,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::RsDownClose,
        FaultKind::RsError,
        FaultKind::RsDroppedResponse,
        FaultKind::SsError,
        FaultKind::Ss429,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::RsDownClose => "rs_down_closes",
            FaultKind::RsError => "rs_errors",
            FaultKind::RsDroppedResponse => "rs_dropped_responses",
            FaultKind::SsError => "ss_errors",
            FaultKind::Ss429 => "ss_429s",
        }
    }
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

    pub fn update(&self, update: FaultUpdate) -> FaultSettings {
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        s.rs_down = update.rs_down.unwrap_or(s.rs_down);
        s.rs_error_rate = update.rs_error_rate.unwrap_or(s.rs_error_rate);
        s.rs_drop_response_rate = update.rs_drop_response_rate.unwrap_or(s.rs_drop_response_rate);
        s.ss_error_rate = update.ss_error_rate.unwrap_or(s.ss_error_rate);
        s.ss_429_rate = update.ss_429_rate.unwrap_or(s.ss_429_rate);
        s.latency_ms = update.latency_ms.unwrap_or(s.latency_ms);
        s.retry_after_secs = update.retry_after_secs.unwrap_or(s.retry_after_secs);
        s.clone()
    }

    pub fn rs_down(&self) -> bool {
        self.settings().rs_down
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.settings().latency_ms)
    }

    /// Decides the fate of the next SS request (and counts it).
    pub fn next_ss(&self) -> SsFault {
        let roll = self.dice(SIDE_SS, &self.ss_requests);
        let s = self.settings();
        if roll(ROLL_ERROR) < s.ss_error_rate {
            SsFault::Error
        } else if roll(ROLL_429) < s.ss_429_rate {
            SsFault::TooManyRequests { retry_after_secs: s.retry_after_secs }
        } else {
            SsFault::None
        }
    }

    /// Decides the fate of the next RS request (and counts it).
    pub fn next_rs(&self) -> RsFault {
        let roll = self.dice(SIDE_RS, &self.rs_requests);
        let s = self.settings();
        if roll(ROLL_ERROR) < s.rs_error_rate {
            RsFault::Error
        } else if roll(ROLL_DROP) < s.rs_drop_response_rate {
            RsFault::DropResponse
        } else {
            RsFault::None
        }
    }

    /// Numbers one request on `side`; the returned roll maps a fault kind to [0, 1).
    fn dice(&self, side: u64, counter: &AtomicU64) -> impl Fn(u64) -> f64 {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let base = splitmix64(splitmix64(splitmix64(self.seed) ^ side) ^ n);
        move |kind| unit(splitmix64(base ^ kind))
    }
}

#[cfg(test)]
pub fn no_faults() -> FaultSettings {
    FaultSettings {
        rs_down: false,
        rs_error_rate: 0.0,
        rs_drop_response_rate: 0.0,
        ss_error_rate: 0.0,
        ss_429_rate: 0.0,
        latency_ms: 0,
        retry_after_secs: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs_sequence(faults: &Faults, n: usize) -> Vec<RsFault> {
        (0..n).map(|_| faults.next_rs()).collect()
    }

    #[test]
    fn the_same_seed_and_request_sequence_meet_the_same_faults() {
        let settings = FaultSettings { rs_error_rate: 0.3, rs_drop_response_rate: 0.3, ..no_faults() };
        let a = rs_sequence(&Faults::new(1, settings.clone()), 200);
        let b = rs_sequence(&Faults::new(1, settings.clone()), 200);
        let c = rs_sequence(&Faults::new(2, settings), 200);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let drops = a.iter().filter(|f| **f == RsFault::DropResponse).count();
        assert!((20..80).contains(&drops), "{drops} drops of 200");
    }

    #[test]
    fn ss_requests_do_not_shift_rs_faults() {
        let settings = FaultSettings { rs_error_rate: 0.5, ss_429_rate: 0.5, ..no_faults() };
        let quiet = Faults::new(3, settings.clone());
        let busy = Faults::new(3, settings);
        for _ in 0..17 {
            busy.next_ss();
        }
        assert_eq!(rs_sequence(&quiet, 50), rs_sequence(&busy, 50));
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        let faults = Faults::new(1, no_faults());
        assert!((0..100).all(|_| faults.next_ss() == SsFault::None));
        faults.update(FaultUpdate { ss_429_rate: Some(1.0), retry_after_secs: Some(7), ..Default::default() });
        let expected = SsFault::TooManyRequests { retry_after_secs: 7 };
        assert!((0..100).all(|_| faults.next_ss() == expected));
    }

    #[test]
    fn an_update_changes_only_the_given_settings() {
        let faults = Faults::new(1, FaultSettings { latency_ms: 5, ..no_faults() });
        let new = faults.update(FaultUpdate { rs_down: Some(true), ..Default::default() });
        assert_eq!(new, FaultSettings { rs_down: true, latency_ms: 5, ..no_faults() });
        assert!(faults.rs_down());
        assert_eq!(faults.latency(), Duration::from_millis(5));
    }
}
