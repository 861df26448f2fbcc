//! The `servers` rows: what framesync remembers about the SS and the RS between runs.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::Ledger;
use crate::frames::Epoch;
use crate::servers::{SKEW_FRESH, SKEW_WARNING, Server};

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
        let off_reason = off_reason.map(|reason| self.scrubbed(reason));
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, lookup_checked_at, lookup_off_reason, updated_at) VALUES ('sink', ?1, ?2, ?1)
             ON CONFLICT (name) DO UPDATE SET lookup_checked_at = ?1, lookup_off_reason = ?2, updated_at = ?1",
            params![now, off_reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers the push's in-flight limit where this run's push left it.
    pub fn set_in_flight_limit(&mut self, limit: usize, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO servers (name, in_flight_limit, updated_at) VALUES ('sink', ?1, ?2)
             ON CONFLICT (name) DO UPDATE SET in_flight_limit = ?1, updated_at = ?2",
            params![limit as i64, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The push's in-flight limit where the last push left it; none before any push.
    pub fn in_flight_limit(&self) -> Result<Option<usize>> {
        let limit: Option<i64> = self
            .conn
            .query_row("SELECT in_flight_limit FROM servers WHERE name = 'sink'", [], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(limit.map(|l| l.max(1) as usize))
    }

    /// Remembers that a server asked for quiet until `until`. A longer quiet already asked for
    /// stays, unless it is more than `bound` ahead (written by a clock since jumped back).
    pub fn set_quiet(&mut self, server: Server, until: Epoch, reason: &str, now: Epoch, bound: i64) -> Result<()> {
        let reason = self.scrubbed(reason);
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
