//! The two servers' state across runs, and the load framesync puts on them: a server that
//! asked for quiet (Retry-After) gets no request until then, even from the next cron run; the
//! SS's clock skew is kept for `status`; requests are paced to `max_rps`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use crate::frames::Epoch;
use crate::ledger::Ledger;

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
    /// Until when the server asked for quiet, and why, if that is still ahead of `now`.
    pub fn quiet_until(&self, server: Server, now: Epoch) -> Result<Option<(Epoch, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT quiet_until, COALESCE(quiet_reason, '') FROM servers WHERE name = ?1 AND quiet_until > ?2",
                params![server.name(), now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn set_quiet(&mut self, server: Server, until: Epoch, reason: &str, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, quiet_until, quiet_reason, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET quiet_until = MAX(COALESCE(quiet_until, 0), ?2), quiet_reason = ?3, updated_at = ?4",
            params![server.name(), until, reason, now],
        )?;
        tx.commit()?;
        Ok(())
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
    use crate::ledger::Sync;

    #[test]
    fn quiet_is_remembered_and_only_ever_extended() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Sync::Normal).unwrap();
        assert_eq!(l.quiet_until(Server::Source, 0).unwrap(), None);
        l.set_quiet(Server::Source, 130, "HTTP 429", 100).unwrap();
        l.set_quiet(Server::Source, 110, "HTTP 503", 100).unwrap();
        assert_eq!(l.quiet_until(Server::Source, 100).unwrap(), Some((130, "HTTP 503".into())));
        assert_eq!(l.quiet_until(Server::Source, 130).unwrap(), None, "over at its time");
        assert_eq!(l.quiet_until(Server::Sink, 100).unwrap(), None, "the other server is not affected");
        l.record_skew(Server::Source, -7, 100).unwrap();
        assert_eq!(l.clock_skew(Server::Source).unwrap(), Some((-7, 100)));
        assert_eq!(l.quiet_until(Server::Source, 100).unwrap().map(|q| q.0), Some(130), "skew keeps the quiet");
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
