//! What the RS answered: acknowledged records, dead letters, failed pushes, and frames that
//! become delivered (merged into `delivered_spans`).

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::Ledger;
use super::rows::{INSERT_DELIVERED, insert_dead_letter, insert_rows};
use crate::delivery::Key;
use crate::frames::{Epoch, Frame};
use crate::model::DeadLetter;

impl Ledger {
    /// Records UIDs the RS acknowledged. Called only after the acknowledgement arrived.
    pub fn acknowledge(&mut self, start: Epoch, uids: &[&str], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        record_acknowledged(&tx, start, uids, now)?;
        crate::hooks::kill_point("mid-ack-commit");
        tx.commit()?;
        Ok(())
    }

    /// `acknowledge` and `complete_frame` in one transaction: the last acknowledgements of a
    /// frame are recorded, and the frame delivered if nothing is left. True when delivered.
    pub fn acknowledge_and_complete(
        &mut self,
        frame: Frame,
        uids: &[&str],
        next_recheck: Option<Epoch>,
        now: Epoch,
    ) -> Result<bool> {
        let tx = self.write()?;
        if !uids.is_empty() {
            record_acknowledged(&tx, frame.start, uids, now)?;
            crate::hooks::kill_point("mid-ack-commit");
        }
        let delivered = deliver_if_complete(&tx, frame, next_recheck, now)?;
        if delivered.is_some() {
            crate::hooks::kill_point("mid-complete");
        }
        tx.commit()?;
        Ok(delivered == Some(true))
    }

    /// Dead-letters a record; returns how many dead letters were added (0: it was one already).
    pub fn dead_letter(&mut self, start: Epoch, letter: &DeadLetter, now: Epoch) -> Result<i64> {
        self.dead_letter_all(start, std::slice::from_ref(letter), now)
    }

    /// Dead-letters records together, in one transaction (a batch exhausted as a whole);
    /// returns how many were added.
    pub fn dead_letter_all(&mut self, start: Epoch, letters: &[DeadLetter], now: Epoch) -> Result<i64> {
        let letters: Vec<DeadLetter> = letters.iter().map(|letter| self.scrubbed_letter(letter)).collect();
        let tx = self.write()?;
        let mut added = 0;
        for letter in &letters {
            added += i64::from(insert_dead_letter(&tx, start, letter, now)?);
        }
        tx.commit()?;
        Ok(added)
    }

    /// What a per-item answer settles, in one transaction: the records the RS took, those it
    /// refused (dead letters; how many were added is returned), and the new key of those it
    /// sent back. A crash leaves the batch as it was before the answer (re-sent whole under
    /// its key) or wholly settled, never some of its records under another key than the rest.
    /// Those sent back keep their attempts: the RS named them, so their failures are their own
    /// and count on to `sink.max_attempts` under every new key.
    pub fn settle_items(
        &mut self,
        start: Epoch,
        acknowledged: &[&str],
        letters: &[DeadLetter],
        again: &[(i64, Key)],
        now: Epoch,
    ) -> Result<i64> {
        let letters: Vec<DeadLetter> = letters.iter().map(|letter| self.scrubbed_letter(letter)).collect();
        let tx = self.write()?;
        record_acknowledged(&tx, start, acknowledged, now)?;
        let mut added = 0;
        for letter in &letters {
            added += i64::from(insert_dead_letter(&tx, start, letter, now)?);
        }
        {
            let mut update = tx.prepare_cached("UPDATE staged SET key = ?3 WHERE frame = ?1 AND seq = ?2")?;
            for (seq, key) in again {
                update.execute(params![start, seq, key.to_sql()])?;
            }
        }
        crate::hooks::kill_point("mid-ack-commit");
        tx.commit()?;
        Ok(added)
    }

    /// Records a failed push: the frame keeps its progress and waits until `next_attempt`.
    pub fn push_failed(&mut self, start: Epoch, error: &str, next_attempt: Epoch, now: Epoch) -> Result<()> {
        let error = self.scrubbed(error);
        let tx = self.write()?;
        tx.prepare_cached(
            "UPDATE frames SET attempts = attempts + 1, last_error = ?2, next_attempt = ?3, updated_at = ?4
             WHERE start = ?1 AND state <> 'delivered'",
        )?
        .execute(params![start, error, next_attempt, now])?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the frame delivered if every staged record is acknowledged or dead-lettered:
    /// deletes its staged records and merges it into the delivered spans, in one transaction.
    /// Returns false (and changes nothing) while records are pending.
    pub fn complete_frame(&mut self, frame: Frame, next_recheck: Option<Epoch>, now: Epoch) -> Result<bool> {
        let tx = self.write()?;
        let Some(delivered) = deliver_if_complete(&tx, frame, next_recheck, now)? else { return Ok(false) };
        crate::hooks::kill_point("mid-complete");
        tx.commit()?;
        Ok(delivered)
    }
}

/// Records UIDs the RS acknowledged, within a write transaction.
fn record_acknowledged(tx: &Connection, start: Epoch, uids: &[&str], now: Epoch) -> Result<()> {
    let values: Vec<&dyn ToSql> = uids.iter().flat_map(|uid| [uid as &dyn ToSql, &start, &now]).collect();
    let added = insert_rows(tx, INSERT_DELIVERED, 3, &values)?;
    tx.prepare_cached("UPDATE frames SET pushed = pushed + ?2, attempts = 0, updated_at = ?3 WHERE start = ?1")?
        .execute(params![start, added as i64, now])?;
    Ok(())
}

/// Marks the frame delivered if every staged record is acknowledged or dead-lettered, within a
/// write transaction: deletes its staged records and merges it into the delivered spans. None
/// (and nothing changed) while records are pending; else whether the frame became delivered.
fn deliver_if_complete(tx: &Connection, frame: Frame, next_recheck: Option<Epoch>, now: Epoch) -> Result<Option<bool>> {
    let pending: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM staged s WHERE s.frame = ?1
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)",
        )?
        .query_row([frame.start], |r| r.get(0))?;
    if pending > 0 {
        return Ok(None);
    }
    tx.prepare_cached("DELETE FROM staged WHERE frame = ?1")?.execute([frame.start])?;
    let updated = tx
        .prepare_cached(
            "UPDATE frames SET state = 'delivered', attempts = 0, last_error = NULL, next_attempt = NULL,
                 delivered_at = COALESCE(delivered_at, ?2),
                 next_recheck = CASE WHEN delivered_at IS NULL THEN ?3 ELSE next_recheck END, updated_at = ?2
             WHERE start = ?1 AND state IN ('pulled', 'pushing')",
        )?
        .execute(params![frame.start, now, next_recheck])?;
    if updated == 1 {
        merge_span(tx, frame.start, frame.end())?;
    }
    Ok(Some(updated == 1))
}

/// Adds `[start, end)` to the delivered spans, merging with the neighbours it touches.
fn merge_span(tx: &Connection, start: Epoch, end: Epoch) -> Result<()> {
    let covering: Option<i64> = tx
        .query_row(
            "SELECT start FROM delivered_spans WHERE start <= ?1 AND end >= ?2 LIMIT 1",
            params![start, end],
            |r| r.get(0),
        )
        .optional()?;
    if covering.is_some() {
        return Ok(());
    }
    let left: Option<i64> = tx
        .prepare_cached("SELECT start FROM delivered_spans WHERE end = ?1")?
        .query_row([start], |r| r.get(0))
        .optional()?;
    let right: Option<i64> = tx
        .prepare_cached("SELECT end FROM delivered_spans WHERE start = ?1")?
        .query_row([end], |r| r.get(0))
        .optional()?;
    let new_start = left.unwrap_or(start);
    let new_end = right.unwrap_or(end);
    if left.is_some() {
        tx.prepare_cached("DELETE FROM delivered_spans WHERE start = ?1")?.execute([new_start])?;
    }
    if right.is_some() {
        tx.prepare_cached("DELETE FROM delivered_spans WHERE start = ?1")?.execute([end])?;
    }
    tx.prepare_cached("INSERT INTO delivered_spans (start, end) VALUES (?1, ?2)")?
        .execute(params![new_start, new_end])?;
    Ok(())
}
