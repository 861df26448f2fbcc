//! The push side: the pending records of a frame, the keys they are sent under, and the sends
//! that failed.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::Ledger;
use crate::delivery::Key;
use crate::frames::Epoch;
use crate::model::Pending;

impl Ledger {
    /// Staged records of a frame that are neither acknowledged nor dead-lettered, in order,
    /// and the highest seq that may already have reached the RS.
    pub fn pending(&self, start: Epoch) -> Result<(Vec<Pending>, i64)> {
        self.pending_after(start, -1, -1)
    }

    /// Like `pending`, from the record after `seq` on and at most `limit` records (-1: all), so
    /// a frame of any size is pushed with a window of it in memory. A record that may have been
    /// sent (its seq is at most `sent_through`) but has no key recorded was sent under its own.
    pub fn pending_after(&self, start: Epoch, seq: i64, limit: i64) -> Result<(Vec<Pending>, i64)> {
        let sent_through: i64 = self
            .conn
            .prepare_cached("SELECT sent_through FROM frames WHERE start = ?1")?
            .query_row([start], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.seq, s.uid, s.body, s.key, s.attempts, s.unknown, s.failed_at IS NOT NULL FROM staged s
             WHERE s.frame = ?1 AND s.seq > ?2
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)
             ORDER BY s.seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![start, seq, limit], |r| pending_row(r, sent_through))?;
        Ok((rows.collect::<Result<_, _>>()?, sent_through))
    }

    /// The pending records after `seq` that were sent in the batch `key`: the rest of a batch
    /// whose first records a window holds, so the batch is re-sent whole under its key.
    pub fn pending_in_batch(&self, start: Epoch, seq: i64, key: &Key) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.seq, s.uid, s.body, s.key, s.attempts, s.unknown, s.failed_at IS NOT NULL FROM staged s
             WHERE s.frame = ?1 AND s.seq > ?2 AND s.key = ?3
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)
             ORDER BY s.seq",
        )?;
        let rows = stmt.query_map(params![start, seq, key.to_sql()], |r| pending_row(r, i64::MAX))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notes, before sending, that records up to `seq` may reach the RS (after a crash their
    /// fate is unknown: they are looked up, where the RS offers a lookup, before being re-sent),
    /// and the keys of the batches about to be sent for the first time: `(first seq, last seq,
    /// key)`, each given to the pending records of that range that have none yet.
    pub fn mark_sending(&mut self, start: Epoch, seq: i64, batches: &[(i64, i64, Key)], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.prepare_cached(
            "UPDATE frames SET state = 'pushing', sent_through = MAX(sent_through, ?2), updated_at = ?3
             WHERE start = ?1 AND state IN ('pulled', 'pushing')",
        )?
        .execute(params![start, seq, now])?;
        let mut keyed = tx.prepare_cached(
            "UPDATE staged SET key = ?4 WHERE frame = ?1 AND seq BETWEEN ?2 AND ?3 AND key IS NULL
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = staged.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = staged.uid)",
        )?;
        for (first, last, key) in batches {
            keyed.execute(params![start, first, last, key.to_sql()])?;
        }
        drop(keyed);
        tx.commit()?;
        Ok(())
    }

    /// Sets the keys of staged records, before they are sent under new ones: a batch the RS
    /// refused as a whole (4xx, 413) is sent again record by record or in halves; records a
    /// lookup found absent leave a batch whose other records are present. None: never sent.
    pub fn set_keys(&mut self, start: Epoch, keys: &[(i64, Option<Key>)]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut update =
                tx.prepare_cached("UPDATE staged SET key = ?3, attempts = 0 WHERE frame = ?1 AND seq = ?2")?;
            for (seq, key) in keys {
                update.execute(params![start, seq, key.as_ref().map(Key::to_sql)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts a failed send against each of the records (the RS was seen taking others, so the
    /// records, not the RS, are the likely cause) and notes when it failed; returns their
    /// attempts now.
    pub fn count_failed_send(&mut self, start: Epoch, seqs: &[i64], error: &str, now: Epoch) -> Result<Vec<i64>> {
        let error = self.scrubbed(error);
        let tx = self.write()?;
        let mut attempts = Vec::with_capacity(seqs.len());
        {
            let mut update = tx.prepare_cached(
                "UPDATE staged SET attempts = attempts + 1, last_error = ?3, failed_at = ?4
                 WHERE frame = ?1 AND seq = ?2 RETURNING attempts",
            )?;
            for seq in seqs {
                attempts.push(update.query_row(params![start, seq, error, now], |r| r.get(0)).optional()?.unwrap_or(0));
            }
        }
        tx.commit()?;
        Ok(attempts)
    }

    /// Notes that a send of the records failed, without counting it against them (the RS may
    /// be down): the next failure counts only if the RS takes another request in between.
    pub fn note_failed_send(&mut self, start: Epoch, seqs: &[i64], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        {
            let mut update = tx.prepare_cached("UPDATE staged SET failed_at = ?3 WHERE frame = ?1 AND seq = ?2")?;
            for seq in seqs {
                update.execute(params![start, seq, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// When a send of any of the records last failed; None if none has failed yet.
    pub fn last_failed_send(&self, start: Epoch, seqs: &[i64]) -> Result<Option<Epoch>> {
        let mut select = self.conn.prepare_cached("SELECT failed_at FROM staged WHERE frame = ?1 AND seq = ?2")?;
        let mut last = None;
        for seq in seqs {
            let at: Option<Epoch> = select.query_row(params![start, seq], |r| r.get(0)).optional()?.flatten();
            last = last.max(at);
        }
        Ok(last)
    }
}

fn pending_row(r: &rusqlite::Row, sent_through: i64) -> rusqlite::Result<Pending> {
    let seq: i64 = r.get(0)?;
    Ok(Pending {
        seq,
        uid: r.get(1)?,
        body: r.get(2)?,
        key: Key::from_sql(r.get(3)?).or((seq <= sent_through).then_some(Key::Own)),
        attempts: r.get(4)?,
        unknown: seq <= sent_through || r.get::<_, bool>(5)?,
        failed_before: r.get(6)?,
    })
}
