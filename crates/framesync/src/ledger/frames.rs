//! Frame rows as the planner reads them, and pulls that failed or wait.

use anyhow::Result;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{OptionalExtension, params};

use super::Ledger;
use crate::frames::{Epoch, Frame};
use crate::model::{FrameState, OpenFrame, PullFailure};

/// A state column's text; anything else is a ledger this framesync cannot read.
impl FromSql for FrameState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        FrameState::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown frame state {text:?}").into()))
    }
}

impl Ledger {
    /// Delivered spans overlapping `[from, to)`, in order.
    pub fn delivered_spans(&self, from: Epoch, to: Epoch) -> Result<Vec<(Epoch, Epoch)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT start, end FROM delivered_spans WHERE end > ?1 AND start < ?2 ORDER BY start")?;
        let rows = stmt.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every frame row that is not delivered.
    pub fn open_frames(&self) -> Result<Vec<OpenFrame>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT start, state, next_attempt, attempts, refused FROM frames WHERE state <> 'delivered' ORDER BY start",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OpenFrame {
                start: r.get(0)?,
                state: r.get(1)?,
                next_attempt: r.get(2)?,
                attempts: r.get(3)?,
                refused: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn frame_state(&self, start: Epoch) -> Result<Option<FrameState>> {
        Ok(self.conn.query_row("SELECT state FROM frames WHERE start = ?1", [start], |r| r.get(0)).optional()?)
    }

    /// Records a failed pull: the frame stays missing, with its error, why, and next attempt.
    pub fn pull_failed(
        &mut self,
        frame: Frame,
        error: &str,
        why: PullFailure,
        next_attempt: Epoch,
        now: Epoch,
    ) -> Result<()> {
        let refused = why == PullFailure::Refused;
        let error = self.scrubbed(error);
        let tx = self.write()?;
        tx.prepare_cached("INSERT INTO frames (start, end, state, attempts, last_error, refused, next_attempt, updated_at)
             VALUES (?1, ?2, 'missing', 1, ?3, ?4, ?5, ?6)
             ON CONFLICT (start) DO UPDATE SET attempts = attempts + 1, last_error = ?3, refused = ?4, next_attempt = ?5,
                 updated_at = ?6
             WHERE state = 'missing'")?.execute(params![frame.start, frame.end(), error, refused, next_attempt, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a frame that waits, not failed: the SS's clock says it is still open. It stays
    /// missing with the reason and a next attempt; its attempts do not grow.
    pub fn pull_waiting(&mut self, frame: Frame, reason: &str, next_attempt: Epoch, now: Epoch) -> Result<()> {
        let reason = self.scrubbed(reason);
        let tx = self.write()?;
        tx.prepare_cached(
            "INSERT INTO frames (start, end, state, last_error, next_attempt, updated_at) VALUES (?1, ?2, 'missing', ?3, ?4, ?5)
             ON CONFLICT (start) DO UPDATE SET last_error = ?3, next_attempt = ?4, updated_at = ?5 WHERE state = 'missing'",
        )?
        .execute(params![frame.start, frame.end(), reason, next_attempt, now])?;
        tx.commit()?;
        Ok(())
    }

    /// Attempts so far for a frame (0 when it has no row).
    pub fn attempts(&self, start: Epoch) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT attempts FROM frames WHERE start = ?1", [start], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }
}
