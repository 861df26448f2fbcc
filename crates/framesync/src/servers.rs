//! The two servers' state across runs, and the load framesync puts on them: a server that
//! asked for quiet (Retry-After) gets no request until then, even from the next cron run; the
//! SS's clock skew is kept for `status`; requests are paced to `max_rps`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An SS clock off by more than this is warned about, and, when frames wait for it, a failure
/// of the run; one behind by less is planned around.
pub const SKEW_WARNING: i64 = 5;
/// A skew measured longer ago than this is not planned around.
pub const SKEW_FRESH: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Source,
    Sink,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Source => "source",
            Server::Sink => "sink",
        }
    }
}

/// Spaces requests at least `1 / max_rps` apart, so no second ever holds more than `max_rps`
/// requests (plus the one starting it) — also when many threads send at once: each takes the
/// next free start under the lock, then waits for it outside the lock.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    /// When the next request may start; shared by every thread sending to the server.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(max_rps: Option<f64>) -> Self {
        Self { interval: max_rps.map(|rps| Duration::from_secs_f64(1.0 / rps)), next: Mutex::new(None) }
    }

    /// Waits until the next request may start: each caller takes the next free start, then
    /// sleeps until it (outside the lock), so requests from many threads are still spaced.
    pub fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let now = Instant::now();
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let start = next.map_or(now, |next| next.max(now));
            *next = Some(start + interval);
            start
        };
        if start > now {
            std::thread::sleep(start - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::ledger::Synchronous;

    #[test]
    fn a_record_is_blamed_only_while_the_rs_takes_what_is_new_and_fails_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        assert!(!l.sink_fails_only_the_same(50, 200).unwrap(), "nothing acknowledged yet");
        l.sink_evidence(100, true, false, false).unwrap();
        assert!(l.sink_fails_only_the_same(50, 200).unwrap(), "took another since its failure at 50");
        assert!(!l.sink_fails_only_the_same(100, 200).unwrap(), "nothing taken since its failure at 100");
        assert!(!l.sink_fails_only_the_same(50, 90).unwrap(), "an acknowledgement a clock ahead wrote");
        // A record sent for the first time failed at 120: the RS fails new records too.
        l.sink_evidence(120, false, false, true).unwrap();
        l.sink_evidence(130, true, false, false).unwrap();
        assert!(!l.sink_fails_only_the_same(110, 200).unwrap());
        assert!(l.sink_fails_only_the_same(120, 200).unwrap(), "since 120 it failed only the same");
        // It took a record it had failed before at 140: its failures pass.
        l.sink_evidence(140, true, true, false).unwrap();
        assert!(!l.sink_fails_only_the_same(130, 200).unwrap());
        l.sink_evidence(150, true, false, false).unwrap();
        assert!(l.sink_fails_only_the_same(140, 200).unwrap());
    }

    #[test]
    fn quiet_is_remembered_and_only_ever_extended() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        assert_eq!(l.quiet_until(Server::Source, 0, 3600).unwrap(), None);
        l.set_quiet(Server::Source, 130, "HTTP 429", 100, 3600).unwrap();
        l.set_quiet(Server::Source, 110, "HTTP 503", 100, 3600).unwrap();
        assert_eq!(l.quiet_until(Server::Source, 100, 3600).unwrap(), Some((130, "HTTP 503".into())));
        assert_eq!(l.quiet_until(Server::Source, 130, 3600).unwrap(), None, "over at its time");
        assert_eq!(l.quiet_until(Server::Sink, 100, 3600).unwrap(), None, "the other server is not affected");
        l.record_skew(Server::Source, -7, 100).unwrap();
        assert_eq!(l.clock_skew(Server::Source).unwrap(), Some((-7, 100)));
        assert_eq!(l.quiet_until(Server::Source, 100, 3600).unwrap().map(|q| q.0), Some(130), "skew keeps the quiet");
    }

    /// Pins a pipeline stuck after one run with the clock a year ahead: the quiet it wrote sat a
    /// year in the future, and later runs sent nothing.
    #[test]
    fn a_quiet_longer_than_any_accepted_wait_is_over_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        let year = 365 * 86_400;
        l.set_quiet(Server::Sink, 100 + year + 60, "HTTP 503", 100 + year, 3600).unwrap();
        assert_eq!(l.quiet_until(Server::Sink, 100, 3600).unwrap(), None, "written by a clock a year ahead");
        assert!(l.quiet_until(Server::Sink, 100 + year, 3600).unwrap().is_some(), "as long as it is within the bound");
        l.set_quiet(Server::Sink, 160, "HTTP 429", 100, 3600).unwrap();
        assert_eq!(l.quiet_until(Server::Sink, 100, 3600).unwrap().map(|q| q.0), Some(160), "a sane wait replaces it");
    }

    #[test]
    fn a_pacer_spaces_requests() {
        let pacer = Pacer::new(Some(50.0));
        let start = Instant::now();
        for _ in 0..6 {
            pacer.wait();
        }
        // Six requests at 50/s: the sixth starts no sooner than 5 intervals (100 ms) after the first.
        assert!(start.elapsed() >= Duration::from_millis(100));
        let unpaced = Pacer::new(None);
        let start = Instant::now();
        unpaced.wait();
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn a_pacer_spaces_requests_from_many_threads() {
        let pacer = Pacer::new(Some(50.0));
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    pacer.wait();
                    pacer.wait();
                });
            }
        });
        // Six requests from three threads at 50/s: the last starts 5 intervals after the first.
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
