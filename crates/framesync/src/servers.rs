//! The two servers' state across runs, and the load framesync puts on them: a server that
//! asked for quiet (Retry-After) gets no request until then, even from the next cron run; the
//! SS's clock skew is kept for `status`; requests are paced to `max_rps`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use crate::frames::Epoch;
use crate::ledger::Ledger;

/// An SS clock off by more than this is warned about, and, when frames wait for it, a failure
/// of the run; one behind by less is planned around.
pub const SKEW_WARNING: i64 = 5;
/// A skew measured longer ago than this is not planned around.
const SKEW_FRESH: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Source,
    Sink,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Source => "source",
            Server::Sink => "sink",
        }
    }
}

impl Ledger {
    /// Until when the server asked for quiet, and why, if that is still ahead of `now` — and
    /// no more than `bound` (the longest wait framesync accepts) ahead: a wait beyond it can
    /// only have been written by a clock that has jumped back since, and it is over.
    pub fn quiet_until(&self, server: Server, now: Epoch, bound: i64) -> Result<Option<(Epoch, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT quiet_until, COALESCE(quiet_reason, '') FROM servers
                 WHERE name = ?1 AND quiet_until > ?2 AND quiet_until <= ?2 + ?3",
                params![server.name(), now, bound],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records whether the RS's lookup could say "absent" when a run checked it: `off_reason`
    /// is None when it could (and was used), else why lookups were off in that run.
    pub fn lookup_checked(&mut self, off_reason: Option<&str>, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, lookup_checked_at, lookup_off_reason, updated_at) VALUES ('sink', ?1, ?2, ?1)
             ON CONFLICT (name) DO UPDATE SET lookup_checked_at = ?1, lookup_off_reason = ?2, updated_at = ?1",
            params![now, off_reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers that a server asked for quiet until `until`. A longer quiet already asked for
    /// stays, unless it is more than `bound` ahead (written by a clock since jumped back).
    pub fn set_quiet(&mut self, server: Server, until: Epoch, reason: &str, now: Epoch, bound: i64) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, quiet_until, quiet_reason, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET quiet_reason = ?3, updated_at = ?4,
                 quiet_until = CASE WHEN quiet_until > ?2 AND quiet_until <= ?4 + ?5 THEN quiet_until ELSE ?2 END",
            params![server.name(), until, reason, now, bound],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records what the RS did with this run's sends, at `now`: it acknowledged requests, it
    /// acknowledged a unit it had failed before (`recovered`), it failed a unit sent for the
    /// first time (`newcomer_failed`).
    pub fn sink_evidence(&mut self, now: Epoch, acked: bool, recovered: bool, newcomer_failed: bool) -> Result<()> {
        if !acked && !recovered && !newcomer_failed {
            return Ok(());
        }
        let at = |happened: bool| happened.then_some(now);
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, acked_at, recovered_at, newcomer_failed_at, updated_at)
             VALUES ('sink', ?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET acked_at = COALESCE(?1, acked_at),
                 recovered_at = COALESCE(?2, recovered_at),
                 newcomer_failed_at = COALESCE(?3, newcomer_failed_at), updated_at = ?4",
            params![at(acked), at(recovered), at(newcomer_failed), now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether, after `since` (a record's previous failure) and up to `now`, the RS acknowledged
    /// a request, failed no unit sent for the first time and acknowledged no unit it had failed
    /// before: it takes what is new and keeps failing the same records. Times written by a
    /// clock that has jumped back since prove nothing.
    pub fn sink_fails_only_the_same(&self, since: Epoch, now: Epoch) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM servers WHERE name = 'sink' AND acked_at > ?1 AND acked_at <= ?2
                 AND COALESCE(newcomer_failed_at, ?1) <= ?1 AND COALESCE(recovered_at, ?1) <= ?1)",
            params![since, now],
            |r| r.get(0),
        )?)
    }

    pub fn record_skew(&mut self, server: Server, skew: i64, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, clock_skew, skew_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET clock_skew = ?2, skew_at = ?3, updated_at = ?3",
            params![server.name(), skew, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// How far behind this machine's clock the SS's was when a run last measured it (within
    /// the last hour), if by no more than `SKEW_WARNING`: planning counts from the SS's time, so
    /// the freshest frame, which the SS would still call open, takes no room from the rest. A
    /// larger skew is left to the pulls, which hold such frames back and fail the run naming it.
    pub fn ss_tolerably_behind(&self, now: Epoch) -> Result<i64> {
        Ok(self
            .clock_skew(Server::Source)?
            .filter(|&(skew, at)| (now - at).abs() <= SKEW_FRESH && (-SKEW_WARNING..0).contains(&skew))
            .map_or(0, |(skew, _)| -skew))
    }

    /// The last clock skew seen, and when.
    pub fn clock_skew(&self, server: Server) -> Result<Option<(i64, Epoch)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT clock_skew, skew_at FROM servers WHERE name = ?1 AND clock_skew IS NOT NULL",
                [server.name()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

/// Spaces requests at least `1 / max_rps` apart, so no second ever holds more than `max_rps`
/// requests (plus the one starting it).
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Cell<Option<Instant>>,
}

impl Pacer {
    pub fn new(max_rps: Option<f64>) -> Self {
        Self { interval: max_rps.map(|rps| Duration::from_secs_f64(1.0 / rps)), next: Cell::new(None) }
    }

    /// Waits until the next request may start.
    pub fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let now = Instant::now();
        let start = self.next.get().map_or(now, |next| next.max(now));
        if start > now {
            std::thread::sleep(start - now);
        }
        self.next.set(Some(start + interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
