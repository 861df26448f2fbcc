//! How long a failed frame waits before its next attempt, and how long a request waits before
//! it is tried again within the run: the retry policy, apart from the clock and the ledger so
//! its numbers read off a table.

use std::time::Duration;

use crate::config::RunConfig;
use crate::frames::Epoch;

/// The ledger's count of a frame's failures is taken as at most this many: the wait stopped
/// growing long before.
const MOST_ATTEMPTS: i64 = 30;
/// `retry_base` is doubled at most this many times (then `retry_max` has long been reached).
const MOST_DOUBLINGS: u32 = 20;
/// The pause before a request is tried again within the run doubles at most this many times.
const MOST_PAUSE_DOUBLINGS: u32 = 6;

/// The retry policy's knobs, in seconds: `run.retry_base`, `run.retry_max` and
/// `run.max_retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    pub base: i64,
    pub max: i64,
    pub max_retry_after: i64,
}

impl Backoff {
    pub fn of(run: &RunConfig) -> Self {
        Self { base: run.retry_base, max: run.retry_max, max_retry_after: run.max_retry_after }
    }

    /// The wait in seconds after `attempts` failures: `base` doubled each time, at most `max`;
    /// or what the server asked (its `Retry-After`, at most `max_retry_after`) when that is longer.
    pub fn wait(&self, attempts: u32, retry_after: Option<Duration>) -> i64 {
        let backoff = self.base.saturating_mul(1i64 << attempts.min(MOST_DOUBLINGS)).min(self.max);
        let asked = retry_after.map_or(0, |d| d.as_secs() as i64).min(self.max_retry_after);
        backoff.max(asked)
    }

    /// When a frame whose row counts `attempts` failures is tried next.
    pub fn next_attempt(&self, now: Epoch, attempts: i64, retry_after: Option<Duration>) -> Epoch {
        now + self.wait(attempts.clamp(0, MOST_ATTEMPTS) as u32, retry_after)
    }
}

/// The pause before a request the RS failed is tried again within the run (`attempt` from 0):
/// 200 ms, doubled each time, at most 12.8 s.
pub(super) fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(200 << attempt.min(MOST_PAUSE_DOUBLINGS))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults: `retry_base` 30 s, `retry_max` 1 h, `max_retry_after` 1 h.
    const DEFAULTS: Backoff = Backoff { base: 30, max: 3600, max_retry_after: 3600 };

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn the_wait_doubles_from_retry_base_up_to_retry_max_or_what_the_server_asked() {
        let short = Backoff { base: 10, max: 100, max_retry_after: 50 };
        let huge = Backoff { base: i64::MAX / 2, max: i64::MAX, max_retry_after: 3600 };
        for (policy, attempts, retry_after, want, why) in [
            (DEFAULTS, 0, None, 30, "the first attempt waits retry_base"),
            (DEFAULTS, 1, None, 60, "doubled"),
            (DEFAULTS, 2, None, 120, "doubled again"),
            (DEFAULTS, 6, None, 1920, "still growing"),
            (DEFAULTS, 7, None, 3600, "at retry_max"),
            (DEFAULTS, 8, None, 3600, "held at retry_max"),
            (DEFAULTS, 0, secs(600), 600, "a longer Retry-After is honoured"),
            (DEFAULTS, 0, secs(10), 30, "a shorter Retry-After waits the backoff"),
            (DEFAULTS, 0, secs(7200), 3600, "a Retry-After is capped at max_retry_after"),
            (DEFAULTS, 7, secs(1800), 3600, "the backoff when it is longer than the Retry-After"),
            (short, 3, None, 80, "a small policy grows"),
            (short, 4, None, 100, "and stops at its retry_max"),
            (short, 0, secs(70), 50, "its max_retry_after caps the server"),
            (short, 4, secs(70), 100, "the longer of the two"),
            (DEFAULTS, 20, None, 3600, "many attempts"),
            (DEFAULTS, 63, None, 3600, "more attempts than an i64 has bits do not overflow"),
            (DEFAULTS, u32::MAX, None, 3600, "nor do the most there can be"),
            (huge, 20, None, i64::MAX, "a product past i64 saturates"),
            (DEFAULTS, 0, Some(Duration::ZERO), 30, "Retry-After: 0 waits the backoff"),
        ] {
            assert_eq!(policy.wait(attempts, retry_after), want, "{why}: {policy:?}, {attempts}, {retry_after:?}");
        }
    }

    #[test]
    fn the_next_attempt_counts_the_frames_failures_within_bounds() {
        let now: Epoch = 1_793_534_400;
        for (attempts, retry_after, want) in [
            (0, None, now + 30),
            (2, None, now + 120),
            (-5, None, now + 30),
            (i64::MAX, None, now + 3600),
            (i64::MIN, secs(90), now + 90),
        ] {
            assert_eq!(DEFAULTS.next_attempt(now, attempts, retry_after), want, "{attempts}, {retry_after:?}");
        }
    }

    #[test]
    fn a_request_is_tried_again_within_the_run_after_a_short_doubling_pause() {
        let pauses: Vec<u128> = [0, 1, 2, 5, 6, 7, u32::MAX].into_iter().map(|a| retry_pause(a).as_millis()).collect();
        assert_eq!(pauses, [200, 400, 800, 6400, 12_800, 12_800, 12_800]);
    }
}
