//! Deleting what is older than `run.retain`, in batches (the rules are in [`crate::prune`]).

use anyhow::Result;
use rusqlite::{OptionalExtension, Transaction, params};

use super::Ledger;
use crate::frames::Epoch;
use crate::model::{Kept, Pruned};

impl Ledger {
    /// The frames older than `cutoff` that pruning leaves alone, by reason.
    pub fn kept(&self, cutoff: Epoch) -> Result<Kept> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(state = 'delivered' AND next_recheck IS NOT NULL), 0),
                    COALESCE(SUM(state = 'delivered' AND EXISTS (SELECT 1 FROM dead_letters x WHERE x.frame = f.start)), 0),
                    COALESCE(SUM(state <> 'delivered'), 0)
             FROM frames f WHERE end <= ?1",
            [cutoff],
            |r| Ok(Kept { awaiting_recheck: r.get(0)?, with_dead_letters: r.get(1)?, not_delivered: r.get(2)? }),
        )?)
    }

    /// One transaction deleting at most `limit` rows of what is older than `cutoff`: the UIDs
    /// and rows of prunable frames, oldest first, then old runs.
    pub fn prune_batch(&mut self, cutoff: Epoch, now: Epoch, limit: i64) -> Result<Pruned> {
        let tx = self.write()?;
        let mut batch = Pruned { transactions: 1, ..Pruned::default() };
        let mut budget = limit;
        prune_frames(&tx, cutoff, &mut budget, &mut batch)?;
        prune_runs(&tx, cutoff, &mut budget, &mut batch)?;
        prune_late_records(&tx, cutoff, &mut budget, &mut batch)?;
        // A batch that found nothing to delete is the sign that nothing prunable is left.
        batch.finished = batch.rows() == 0;
        if batch.rows() > 0 {
            tx.execute(
                "UPDATE pruned SET runs = runs + ?1, records_pushed = records_pushed + ?2, frames = frames + ?3,
                     late = late + ?4, uids = uids + ?5, last_at = ?6 WHERE id = 1",
                params![batch.runs, batch.records_pushed, batch.frames, batch.late, batch.uids, now],
            )?;
        }
        crate::hooks::kill_point("mid-prune");
        tx.commit()?;
        Ok(batch)
    }
}

/// Deletes the UIDs, then the row, of each prunable frame. A frame whose UIDs do not fit in
/// the budget keeps its row (and the rest of its UIDs) until the next batch; a frame with dead
/// letters keeps its row for good (until they are retried or dropped).
fn prune_frames(tx: &Transaction, cutoff: Epoch, budget: &mut i64, batch: &mut Pruned) -> Result<()> {
    let frames: Vec<(Epoch, i64, bool)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT start, late, dead_letters FROM (
                 SELECT start, late, EXISTS (SELECT 1 FROM dead_letters x WHERE x.frame = f.start) AS dead_letters
                 FROM frames f
                 WHERE start < ?1 AND end <= ?1 AND state = 'delivered' AND next_recheck IS NULL AND delivered_at <= ?1)
             WHERE NOT dead_letters OR EXISTS (SELECT 1 FROM delivered d WHERE d.frame = start)
             ORDER BY start LIMIT ?2",
        )?;
        stmt.query_map(params![cutoff, *budget], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut delete_uids =
        tx.prepare_cached("DELETE FROM delivered WHERE uid IN (SELECT uid FROM delivered WHERE frame = ?1 LIMIT ?2)")?;
    for (start, late, dead_letters) in frames {
        if *budget < 2 {
            break;
        }
        let room = *budget - 1; // one row is kept for the frame row itself
        let uids = delete_uids.execute(params![start, room])? as i64;
        *budget -= uids;
        batch.uids += uids;
        if uids == room && has_uids(tx, start)? {
            break;
        }
        if dead_letters {
            continue;
        }
        tx.execute("DELETE FROM frames WHERE start = ?1", [start])?;
        *budget -= 1;
        batch.frames += 1;
        batch.late += late;
    }
    Ok(())
}

fn has_uids(tx: &Transaction, frame: Epoch) -> Result<bool> {
    Ok(tx.query_row("SELECT 1 FROM delivered WHERE frame = ?1 LIMIT 1", [frame], |_| Ok(())).optional()?.is_some())
}

/// Deletes old runs, adding what they counted to the `pruned` totals.
fn prune_runs(tx: &Transaction, cutoff: Epoch, budget: &mut i64, batch: &mut Pruned) -> Result<()> {
    if *budget == 0 {
        return Ok(());
    }
    let runs: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, records_pushed FROM runs
             WHERE started_at < ?1
               AND id NOT IN (SELECT MAX(id) FROM runs GROUP BY command)
               AND id NOT IN (SELECT MAX(id) FROM runs WHERE exit_code = 0 GROUP BY command)
             ORDER BY id LIMIT ?2",
        )?;
        stmt.query_map(params![cutoff, *budget], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    let mut delete = tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?;
    for (id, pushed) in runs {
        delete.execute([id])?;
        batch.runs += 1;
        batch.records_pushed += pushed;
        *budget -= 1;
    }
    Ok(())
}

/// Deletes `late_records` rows found longer ago than the retention: only `status` and the
/// `late_by_hour` view read them.
fn prune_late_records(tx: &Transaction, cutoff: Epoch, budget: &mut i64, batch: &mut Pruned) -> Result<()> {
    let deleted = tx
        .prepare_cached(
            "DELETE FROM late_records WHERE uid IN (SELECT uid FROM late_records WHERE found_at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff, *budget])? as i64;
    *budget -= deleted;
    batch.late_records += deleted;
    Ok(())
}
