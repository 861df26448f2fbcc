//! Re-checks of delivered frames: which are due, and the ones that failed; the late records they
//! found.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::Ledger;
use crate::frames::{Epoch, Frame};
use crate::recheck::{LateFigures, RecheckFailure, next_recheck};

impl Ledger {
    /// Delivered frames whose re-check is due, oldest first. A re-check set more than `bound`
    /// ahead (the last re-check plus the longest backoff) was set by a clock that has jumped
    /// back since: it is due now.
    ///
    /// Two walks along the `frames_recheck` index, each stopping at `limit`: a run's cost does
    /// not grow with the re-checks waiting behind it.
    pub fn due_rechecks(&self, now: Epoch, bound: i64, limit: usize) -> Result<Vec<Epoch>> {
        let mut due = self.frames_by_recheck(
            "SELECT start FROM frames WHERE next_recheck <= ?1 AND state = 'delivered'
             ORDER BY next_recheck, start LIMIT ?2",
            now,
            limit,
        )?;
        if due.len() < limit {
            let jumped = self.frames_by_recheck(
                "SELECT start FROM frames WHERE next_recheck > ?1 AND state = 'delivered'
                 ORDER BY next_recheck, start LIMIT ?2",
                now.saturating_add(bound),
                limit - due.len(),
            )?;
            due.extend(jumped);
        }
        Ok(due)
    }

    fn frames_by_recheck(&self, sql: &str, at: Epoch, limit: usize) -> Result<Vec<Epoch>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![at, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When a delivered frame's next re-check is due, if one is scheduled.
    pub fn recheck_due_at(&self, start: Epoch) -> Result<Option<Epoch>> {
        Ok(self
            .conn
            .query_row("SELECT next_recheck FROM frames WHERE start = ?1", [start], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Failed re-checks of a frame since its last successful one.
    pub fn recheck_attempts(&self, start: Epoch) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT recheck_attempts FROM frames WHERE start = ?1", [start], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Records a re-check that failed: due again at `next` — or, when the SS refused it
    /// (`refused`) for the `limit`th time in a row, given up, counted and kept on the frame with
    /// the error, and the next scheduled re-check, if any, comes at its time.
    #[allow(clippy::too_many_arguments)]
    pub fn recheck_failed(
        &mut self,
        frame: Frame,
        error: &str,
        refused: bool,
        next: Epoch,
        limit: u32,
        schedule: &[i64],
        now: Epoch,
    ) -> Result<RecheckFailure> {
        let error = self.scrubbed(error);
        let tx = self.write()?;
        let row: Option<(i64, Option<Epoch>)> = tx
            .query_row("SELECT recheck_refusals, delivered_at FROM frames WHERE start = ?1", [frame.start], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((refusals, delivered_at)) = row else { return Ok(RecheckFailure::Retried) };
        let failure = if refused && refusals + 1 >= i64::from(limit) {
            let scheduled = next_recheck(delivered_at.unwrap_or(now).min(now), schedule, now);
            tx.execute(
                "UPDATE frames SET recheck_attempts = 0, recheck_refusals = 0, recheck_error = ?2,
                     rechecks_given_up = rechecks_given_up + 1, next_recheck = ?3, updated_at = ?4
                 WHERE start = ?1",
                params![frame.start, error, scheduled, now],
            )?;
            RecheckFailure::GaveUp
        } else {
            tx.execute(
                "UPDATE frames SET recheck_attempts = recheck_attempts + 1, recheck_refusals = recheck_refusals + ?5,
                     recheck_error = ?2, next_recheck = ?3, updated_at = ?4
                 WHERE start = ?1",
                params![frame.start, error, next, now, i64::from(refused)],
            )?;
            RecheckFailure::Retried
        };
        tx.commit()?;
        Ok(failure)
    }

    /// Late-data figures for records found since `since`.
    pub fn late_figures(&self, since: Epoch) -> Result<LateFigures> {
        let size: i64 = self.conn.query_row("SELECT COALESCE(MAX(frame_size), 60) FROM pipeline", [], |r| r.get(0))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT frame, ts, first_pulled_at, found_at FROM late_records WHERE found_at >= ?1")?;
        let rows: Vec<(Epoch, Option<i64>, Epoch, Epoch)> =
            stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        Ok(LateFigures::of(size, &rows))
    }
}
