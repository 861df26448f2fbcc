//! Time, injected: the wall clock that frames are planned from, a monotonic clock for budgets
//! and group timers, and sleeping. The real job uses [`SystemClock`]; tests and the
//! deterministic simulation move time themselves.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::frames::Epoch;

pub trait Clock {
    /// The wall clock, in UTC seconds.
    fn now(&self) -> Epoch;

    /// Time since an arbitrary origin; it never goes back. Budgets (`run.max_seconds`) and
    /// the acknowledgement group's age are measured with it.
    fn elapsed(&self) -> Duration {
        origin().elapsed()
    }

    /// Waits, e.g. between retries of a request.
    fn sleep(&self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// This machine's clock (shifted by `FRAMESYNC_TEST_NOW` in a test build).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Epoch {
        crate::hooks::now(chrono::Utc::now().timestamp())
    }
}
