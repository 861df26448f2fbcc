//! Simulated time: true time, which only moves forward (by request latencies, sleeps and the
//! minutes between cron runs), and the two clocks that read it wrongly — this machine's, whose
//! skew drifts and sometimes jumps, and the SS's, which sends it in `Date` headers. Nothing in
//! the simulation reads the real clock.

use std::time::Duration;

use framesync::frames::Epoch;

use super::net::Shared;
use super::rng::Rng;
use super::scenario::{MAX_DRIFT_MS, SS_MAX_DRIFT_MS};

#[derive(Debug)]
pub struct Time {
    /// True time, in ms since the epoch.
    pub true_ms: i64,
    origin_ms: i64,
    /// This machine's clock minus true time: its drift, in ms.
    drift_ms: i64,
    /// A jump of this machine's clock on top of the drift (a year ahead, an hour back), in s.
    pub jump: i64,
    /// The SS's clock minus true time, in ms, and its jump in s.
    ss_drift_ms: i64,
    pub ss_jump: i64,
}

impl Time {
    pub fn new(start: Epoch) -> Self {
        Self { true_ms: start * 1000, origin_ms: start * 1000, drift_ms: 0, jump: 0, ss_drift_ms: 0, ss_jump: 0 }
    }

    pub fn advance(&mut self, ms: i64) {
        self.true_ms += ms.max(0);
    }

    /// This machine's wall clock, in ms.
    pub fn machine_ms(&self) -> i64 {
        self.true_ms + self.drift_ms + self.jump * 1000
    }

    /// The SS's wall clock, in ms.
    pub fn ss_ms(&self) -> i64 {
        self.true_ms + self.ss_drift_ms + self.ss_jump * 1000
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_millis((self.true_ms - self.origin_ms) as u64)
    }

    /// Between runs, both clocks drift a little, within their bounds.
    pub fn drift(&mut self, rng: &mut Rng) {
        self.drift_ms = (self.drift_ms + rng.range(-150, 150)).clamp(-MAX_DRIFT_MS, MAX_DRIFT_MS);
        self.ss_drift_ms = (self.ss_drift_ms + rng.range(-150, 150)).clamp(-SS_MAX_DRIFT_MS, SS_MAX_DRIFT_MS);
    }
}

/// framesync's clock in the simulation: reads and moves the shared simulated time.
pub struct SimClock(pub Shared);

impl SimClock {
    /// This machine's wall clock, in seconds (what framesync's `now` returns).
    pub fn now_secs(&self) -> Epoch {
        self.0.lock().time.machine_ms().div_euclid(1000)
    }
}

impl framesync::clock::Clock for SimClock {
    fn now(&self) -> Epoch {
        self.now_secs()
    }

    fn elapsed(&self) -> Duration {
        self.0.lock().time.elapsed()
    }

    fn sleep(&self, pause: Duration) {
        let mut net = self.0.lock();
        net.time.advance(pause.as_millis() as i64);
        net.trace(|| format!("    sleep {}ms", pause.as_millis()));
    }
}
