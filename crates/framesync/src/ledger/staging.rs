//! Staging: a frame's records on their way from the SS into the ledger.
//!
//! A pull, a re-check, a redelivery and `verify` all read a frame page by page into a
//! [`Staging`], which keeps each UID once across the whole frame. Nothing it holds is in the
//! ledger's tables, and no write lock is taken while the pages arrive: the records wait in
//! memory, and past [`SPILL_BYTES`] in a temp table of this connection (SQLite keeps temp tables
//! outside the ledger file and locks them apart from it), so a frame of any size is pulled with
//! about one page and the spill buffer in memory. A `commit_*` then writes them into `staged` in
//! one short `BEGIN IMMEDIATE` transaction with no network I/O in it. Dropping a `Staging` without
//! committing discards it; a kill leaves the ledger as it was.

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};

use super::Ledger;
use super::rows::{INSERT_STAGED, insert_dead_letter, insert_rows};
use crate::frames::{Epoch, Frame};
use crate::model::{DeadLetter, StagedRecord};
use crate::recheck::next_recheck;

/// Records held in memory before they go to the temp table (and after, between flushes).
const SPILL_BYTES: usize = 8 << 20;
/// What a record in memory costs beside its UID and body (the struct and two allocations).
const RECORD_OVERHEAD: usize = 96;

/// The temp tables, created once per connection; `seq` is the record's place in the frame.
const CREATE_TEMP: &str = "
    CREATE TEMP TABLE IF NOT EXISTS staging_records (seq INTEGER PRIMARY KEY, uid TEXT NOT NULL, ts INTEGER, body TEXT NOT NULL);
    CREATE TEMP TABLE IF NOT EXISTS staging_invalid (n INTEGER PRIMARY KEY, uid TEXT NOT NULL, detail TEXT NOT NULL, body TEXT NOT NULL);
    DELETE FROM temp.staging_records;
    DELETE FROM temp.staging_invalid;";
const CLEAR_TEMP: &str = "DELETE FROM temp.staging_records; DELETE FROM temp.staging_invalid;";
const INSERT_SPILLED: &str = "INSERT INTO temp.staging_records (seq, uid, ts, body) VALUES ";

/// What a pull's commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Records staged, each UID once.
    pub staged: i64,
    /// Records dead-lettered as invalid (a record that already was one is not counted again).
    pub invalid: i64,
}

/// A frame's records read from the SS, not yet in the ledger (see the module's documentation).
pub struct Staging<'l> {
    conn: &'l Connection,
    /// The ledger's mark that a staging is open: one at a time, for the temp tables are shared.
    open: &'l Cell<bool>,
    frame: Frame,
    records: Records,
    dedup: Dedup,
    duplicates: i64,
    /// Repeats whose contents differ from the record kept, and the first such UID.
    changed: i64,
    first_changed: Option<String>,
}

impl Ledger {
    /// Starts staging a frame's records. Nothing is written to the ledger until a `commit_*`,
    /// and the ledger can be read meanwhile; one staging is open at a time.
    pub fn staging(&self, frame: Frame) -> Result<Staging<'_>> {
        if self.staging_open.replace(true) {
            bail!("frame {frame}: another staging is open on this ledger connection");
        }
        let staging = Staging {
            conn: &self.conn,
            open: &self.staging_open,
            frame,
            records: Records::default(),
            dedup: Dedup::default(),
            duplicates: 0,
            changed: 0,
            first_changed: None,
        };
        Ok(staging)
    }

    /// Stages all records of a frame at once, as a pull of one page would.
    pub fn stage_frame(
        &self,
        frame: Frame,
        records: &[StagedRecord],
        invalid: &[DeadLetter],
        now: Epoch,
    ) -> Result<()> {
        let mut staging = self.staging(frame)?;
        staging.add(records.to_vec(), invalid)?;
        staging.commit_pull(0, None, now).map(drop)
    }

    /// Stages the late records among `records` of a delivered frame (see
    /// [`Staging::commit_recheck`]).
    pub fn stage_recheck(
        &self,
        frame: Frame,
        records: &[StagedRecord],
        schedule: &[i64],
        now: Epoch,
    ) -> Result<Option<usize>> {
        let mut staging = self.staging(frame)?;
        staging.add(records.to_vec(), &[])?;
        staging.say_repeats();
        staging.commit_recheck(schedule, now)
    }

    /// Stages `records` of a delivered frame to be sent again (see
    /// [`Staging::commit_redelivery`]).
    pub fn stage_redelivery(&self, frame: Frame, records: &[StagedRecord], now: Epoch) -> Result<usize> {
        let mut staging = self.staging(frame)?;
        staging.add(records.to_vec(), &[])?;
        staging.say_repeats();
        staging.commit_redelivery(now)
    }
}

impl Staging<'_> {
    /// Adds a page: each record whose UID came earlier in the frame is counted as a repeat and
    /// dropped (the first is kept); records that cannot be staged wait to be dead-lettered.
    pub fn add(&mut self, records: Vec<StagedRecord>, invalid: &[DeadLetter]) -> Result<()> {
        for record in records {
            let hash = self.dedup.hash(&record.uid);
            let seq = self.records.len();
            let (records, conn) = (&self.records, self.conn);
            match self.dedup.see(hash, &record.uid, seq, |seq| records.get(conn, seq))? {
                Seen::First => self.records.push(conn, record)?,
                Seen::Again(earlier) => {
                    self.duplicates += 1;
                    if records.get(conn, earlier)?.body != record.body {
                        self.changed += 1;
                        self.first_changed.get_or_insert(record.uid);
                    }
                }
            }
        }
        if invalid.is_empty() {
            return Ok(());
        }
        self.records.create_temp(self.conn)?;
        let mut insert =
            self.conn.prepare_cached("INSERT INTO temp.staging_invalid (uid, detail, body) VALUES (?1, ?2, ?3)")?;
        for letter in invalid {
            insert.execute(params![letter.uid, letter.detail, letter.body])?;
        }
        Ok(())
    }

    /// Records kept so far, each UID once.
    pub fn staged(&self) -> i64 {
        self.records.len()
    }

    /// Repeated UIDs dropped so far.
    pub fn duplicates(&self) -> i64 {
        self.duplicates
    }

    /// Says once for the frame how many repeated UIDs were dropped, and how many of them
    /// differed from the record kept: the first of each is kept.
    pub fn say_repeats(&self) {
        if self.duplicates == 0 {
            return;
        }
        let changed = match &self.first_changed {
            Some(uid) => {
                format!(" ({} with contents different from the first, e.g. {uid:?}: the first is kept)", self.changed)
            }
            None => String::new(),
        };
        log::warn!("frame {}: {} repeated UIDs in one pull were kept once{changed}", self.frame, self.duplicates);
    }

    /// Whether a record with this UID was added.
    pub fn contains(&self, uid: &str) -> Result<bool> {
        let (records, conn) = (&self.records, self.conn);
        self.dedup.find(self.dedup.hash(uid), uid, |seq| records.get(conn, seq)).map(|seq| seq.is_some())
    }

    /// Calls `f` with every record kept, in order.
    pub fn for_each(&self, mut f: impl FnMut(&StagedRecord) -> Result<()>) -> Result<()> {
        self.records.for_each(self.conn, &mut f)
    }

    /// Makes the frame `pulled` with every record, and dead-letters the invalid ones, in one
    /// transaction. Records stamped before `forgotten_before` (UTC seconds) are of unknown fate:
    /// a frame of theirs older than `run.retain` may have delivered them and been pruned, its
    /// UIDs forgotten, so they are looked up before they are sent where the RS has a lookup.
    pub fn commit_pull(mut self, out_of_frame: i64, forgotten_before: Option<Epoch>, now: Epoch) -> Result<Committed> {
        self.records.flush_if_spilled(self.conn)?;
        let frame = self.frame;
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .prepare_cached("SELECT state FROM frames WHERE start = ?1")?
            .query_row([frame.start], |r| r.get(0))
            .optional()?;
        if matches!(state.as_deref(), Some("pulled" | "pushing" | "delivered")) {
            bail!("frame {frame} is already {}; it is not pulled twice", state.unwrap_or_default());
        }
        tx.prepare_cached(
            "INSERT INTO frames (start, end, state, pulled_at, updated_at) VALUES (?1, ?2, 'pulled', ?3, ?3)
             ON CONFLICT (start) DO UPDATE SET state = 'pulled', attempts = 0, last_error = NULL,
                 next_attempt = NULL, sent_through = -1, pulled_at = ?3, updated_at = ?3",
        )?
        .execute(params![frame.start, frame.end(), now])?;
        self.records.write_staged(&tx, frame.start)?;
        if let Some(before) = forgotten_before {
            tx.prepare_cached("UPDATE staged SET unknown = 1 WHERE frame = ?1 AND ts < ?2")?
                .execute(params![frame.start, before.saturating_mul(1000)])?;
        }
        let mut invalid = 0;
        let letters = if self.records.temp { invalid_letters(&tx)? } else { Vec::new() };
        for letter in letters {
            invalid += i64::from(insert_dead_letter(&tx, frame.start, &letter, now)?);
        }
        let staged = self.records.len();
        tx.prepare_cached("UPDATE frames SET records = ?2, out_of_frame = ?3, duplicates = ?4 WHERE start = ?1")?
            .execute(params![frame.start, staged + invalid, out_of_frame, self.duplicates])?;
        tx.commit()?;
        Ok(Committed { staged, invalid })
    }

    /// Stages the records of a re-check that the ledger has not seen (neither delivered, nor
    /// dead-lettered, nor staged), in one transaction. With new records the frame goes back to
    /// `pulled` so they are pushed; its delivered span stays, since everything pushed before
    /// stays delivered. Returns how many records were new, or None when the frame is not
    /// delivered (a dead letter retried meanwhile reopened it): it is re-checked once it is.
    pub fn commit_recheck(mut self, schedule: &[i64], now: Epoch) -> Result<Option<usize>> {
        self.records.flush_if_spilled(self.conn)?;
        let frame = self.frame;
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let row: Option<(String, Option<Epoch>, Option<Epoch>)> = tx
            .query_row("SELECT state, delivered_at, pulled_at FROM frames WHERE start = ?1", [frame.start], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((state, Some(delivered_at), pulled_at)) = row else {
            bail!("frame {frame} was never delivered; it is not re-checked");
        };
        if state != "delivered" {
            return Ok(None);
        }
        // Delivered by a clock that was ahead then: the schedule counts from now instead.
        let delivered_at = delivered_at.min(now);
        let mut added = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO staged (frame, seq, uid, ts, body)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE uid = ?3)
                   AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE uid = ?3)
                   AND NOT EXISTS (SELECT 1 FROM staged WHERE uid = ?3)",
            )?;
            let mut late = tx.prepare_cached(
                "INSERT OR IGNORE INTO late_records (uid, frame, ts, first_pulled_at, found_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            self.records.for_each(&tx, &mut |record| {
                if insert.execute(params![frame.start, added as i64, record.uid, record.ts_ms, record.body])? == 1 {
                    let first_pulled_at = pulled_at.unwrap_or(delivered_at);
                    late.execute(params![record.uid, frame.start, record.ts_ms, first_pulled_at, now])?;
                    added += 1;
                }
                Ok(())
            })?;
        }
        let next = next_recheck(delivered_at, schedule, now);
        tx.execute(
            "UPDATE frames SET rechecks = rechecks + 1, next_recheck = ?2, updated_at = ?3, delivered_at = ?4,
                 recheck_attempts = 0, recheck_refusals = 0,
                 recheck_error = CASE WHEN rechecks_given_up > 0 THEN recheck_error END
             WHERE start = ?1",
            params![frame.start, next, now, delivered_at],
        )?;
        if added > 0 {
            tx.execute(
                "UPDATE frames SET state = 'pulled', sent_through = -1, late = late + ?2, records = records + ?2
                 WHERE start = ?1",
                params![frame.start, added as i64],
            )?;
        }
        tx.commit()?;
        Ok(Some(added))
    }

    /// Stages the records of a delivered frame to be sent again (`backfill --redeliver`, or
    /// `verify --repair` for records the RS lost or the ledger never saw): their delivered UIDs
    /// are forgotten in the same transaction and recorded again as the RS acknowledges them;
    /// the keys stay the same, so an RS that honors them stores nothing twice. Dead-lettered
    /// records stay dead letters. Returns how many records are staged.
    pub fn commit_redelivery(mut self, now: Epoch) -> Result<usize> {
        self.records.flush_if_spilled(self.conn)?;
        let frame = self.frame;
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let state: Option<String> =
            tx.query_row("SELECT state FROM frames WHERE start = ?1", [frame.start], |r| r.get(0)).optional()?;
        let pruned = state.is_none()
            && tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM delivered_spans WHERE start <= ?1 AND end >= ?2)",
                params![frame.start, frame.end()],
                |r| r.get::<_, bool>(0),
            )?;
        if pruned {
            // Delivered, and its row pruned after run.retain: it comes back as delivered (with
            // no re-check schedule, which its first delivery has long finished).
            tx.execute(
                "INSERT INTO frames (start, end, state, pulled_at, delivered_at, updated_at) VALUES (?1, ?2, 'delivered', ?3, ?3, ?3)",
                params![frame.start, frame.end(), now],
            )?;
        } else if state.as_deref() != Some("delivered") {
            bail!("frame {frame} is not delivered; it is pulled, not re-delivered");
        }
        let (mut staged, mut forgotten) = (0, 0);
        {
            let mut forget = tx.prepare_cached("DELETE FROM delivered WHERE uid = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO staged (frame, seq, uid, ts, body, unknown) SELECT ?1, ?2, ?3, ?4, ?5, 1
                 WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE uid = ?3)
                   AND NOT EXISTS (SELECT 1 FROM staged WHERE uid = ?3)",
            )?;
            self.records.for_each(&tx, &mut |record| {
                if insert.execute(params![frame.start, staged as i64, record.uid, record.ts_ms, record.body])? == 1 {
                    forgotten += forget.execute([&record.uid])?;
                    staged += 1;
                }
                Ok(())
            })?;
        }
        if staged > 0 {
            tx.execute(
                "UPDATE frames SET state = 'pulled', sent_through = -1, records = records + ?2 - ?3,
                     pushed = pushed - ?3, updated_at = ?4
                 WHERE start = ?1",
                params![frame.start, staged as i64, forgotten as i64, now],
            )?;
        }
        tx.commit()?;
        Ok(staged)
    }
}

impl Drop for Staging<'_> {
    /// Whatever was not committed is discarded (the temp tables are this connection's alone).
    fn drop(&mut self) {
        if self.records.temp
            && let Err(e) = self.conn.execute_batch(CLEAR_TEMP)
        {
            log::debug!("clearing the staging tables: {e}");
        }
        self.open.set(false);
    }
}

/// The invalid records waiting in the temp table, as dead letters.
fn invalid_letters(conn: &Connection) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached("SELECT uid, detail, body FROM temp.staging_invalid ORDER BY n")?;
    let rows = stmt.query_map([], |r| Ok(DeadLetter::invalid(r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The records kept, in frame order: the first `spilled` in the temp table, the rest in memory.
#[derive(Default)]
struct Records {
    /// The temp tables are ready (and empty of other frames' records).
    temp: bool,
    spilled: i64,
    buffer: Vec<StagedRecord>,
    buffered_bytes: usize,
}

impl Records {
    fn len(&self) -> i64 {
        self.spilled + self.buffer.len() as i64
    }

    fn push(&mut self, conn: &Connection, record: StagedRecord) -> Result<()> {
        self.buffered_bytes += RECORD_OVERHEAD + record.body.len() + record.uid.len();
        self.buffer.push(record);
        if self.buffered_bytes > SPILL_BYTES {
            self.spill(conn)?;
        }
        Ok(())
    }

    /// The record at `seq`.
    fn get(&self, conn: &Connection, seq: i64) -> Result<StagedRecord> {
        if seq >= self.spilled {
            return Ok(self.buffer[(seq - self.spilled) as usize].clone());
        }
        Ok(conn
            .prepare_cached("SELECT uid, ts, body FROM temp.staging_records WHERE seq = ?1")?
            .query_row([seq], |r| Ok(StagedRecord { uid: r.get(0)?, ts_ms: r.get(1)?, body: r.get(2)? }))?)
    }

    /// Makes the temp tables ready, on first use: most frames never need them.
    fn create_temp(&mut self, conn: &Connection) -> Result<()> {
        if !self.temp {
            conn.execute_batch(CREATE_TEMP)?;
            self.temp = true;
        }
        Ok(())
    }

    /// Moves the buffer to the temp table, in one transaction of the temp database alone.
    fn spill(&mut self, conn: &Connection) -> Result<()> {
        self.create_temp(conn)?;
        let tx = conn.unchecked_transaction()?;
        let first = self.spilled;
        let seqs: Vec<i64> = (first..first + self.buffer.len() as i64).collect();
        let values: Vec<&dyn ToSql> =
            self.buffer.iter().zip(&seqs).flat_map(|(r, seq)| [seq as &dyn ToSql, &r.uid, &r.ts_ms, &r.body]).collect();
        insert_rows(&tx, INSERT_SPILLED, 4, &values)?;
        tx.commit()?;
        self.spilled += self.buffer.len() as i64;
        self.buffer.clear();
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Once some records are in the temp table, all of them go there before a commit.
    fn flush_if_spilled(&mut self, conn: &Connection) -> Result<()> {
        if self.spilled > 0 && !self.buffer.is_empty() {
            self.spill(conn)?;
        }
        Ok(())
    }

    /// Writes every record into `staged` for `frame`, `seq` kept.
    fn write_staged(&self, tx: &Connection, frame: Epoch) -> Result<()> {
        if self.spilled > 0 {
            tx.prepare_cached(
                "INSERT INTO staged (frame, seq, uid, ts, body) SELECT ?1, seq, uid, ts, body FROM temp.staging_records ORDER BY seq",
            )?
            .execute([frame])?;
            return Ok(());
        }
        let seqs: Vec<i64> = (0..self.buffer.len() as i64).collect();
        let values: Vec<&dyn ToSql> = self
            .buffer
            .iter()
            .zip(&seqs)
            .flat_map(|(r, seq)| [&frame as &dyn ToSql, seq, &r.uid, &r.ts_ms, &r.body])
            .collect();
        insert_rows(tx, INSERT_STAGED, 5, &values)?;
        Ok(())
    }

    fn for_each(&self, conn: &Connection, f: &mut dyn FnMut(&StagedRecord) -> Result<()>) -> Result<()> {
        if self.spilled > 0 {
            let mut stmt = conn.prepare_cached("SELECT uid, ts, body FROM temp.staging_records ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                f(&StagedRecord { uid: r.get(0)?, ts_ms: r.get(1)?, body: r.get(2)? })?;
            }
        }
        self.buffer.iter().try_for_each(f)
    }
}

/// Whether a UID came earlier in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    First,
    /// It did, at this seq.
    Again(i64),
}

/// Finds repeated UIDs in a frame holding 16 bytes per record (the seq of each UID's hash), not
/// the UIDs: a hash seen before is confirmed against the record it came with.
#[derive(Default)]
struct Dedup {
    hasher: RandomState,
    /// The seq of the first record with each UID hash.
    first_by_hash: HashMap<u64, i64>,
    /// UIDs whose hash an earlier, different UID had, with their seq.
    collided: HashMap<String, i64>,
}

impl Dedup {
    fn hash(&self, uid: &str) -> u64 {
        self.hasher.hash_one(uid)
    }

    /// Whether `uid` (of hash `hash`) came earlier; if not, it is remembered at `seq`.
    /// `record_at` reads the record kept at a seq.
    fn see(&mut self, hash: u64, uid: &str, seq: i64, record_at: impl Fn(i64) -> Result<StagedRecord>) -> Result<Seen> {
        if let Some(earlier) = self.find(hash, uid, record_at)? {
            return Ok(Seen::Again(earlier));
        }
        match self.first_by_hash.entry(hash) {
            Entry::Occupied(_) => {
                self.collided.insert(uid.to_owned(), seq);
            }
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
        }
        Ok(Seen::First)
    }

    /// The seq of the record with `uid`, if one was seen.
    fn find(&self, hash: u64, uid: &str, record_at: impl Fn(i64) -> Result<StagedRecord>) -> Result<Option<i64>> {
        let Some(&first) = self.first_by_hash.get(&hash) else { return Ok(None) };
        if record_at(first)?.uid == uid {
            return Ok(Some(first));
        }
        Ok(self.collided.get(uid).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str, body: &str) -> StagedRecord {
        StagedRecord { uid: uid.into(), ts_ms: None, body: body.into() }
    }

    /// Feeds `uids` to a `Dedup` whose every hash is the same; returns what each was.
    fn see_all_colliding(uids: &[&str]) -> Vec<Seen> {
        let mut dedup = Dedup::default();
        let mut kept: Vec<StagedRecord> = Vec::new();
        let mut seen = Vec::new();
        for uid in uids {
            let at = |seq: i64| Ok(kept[seq as usize].clone());
            let s = dedup.see(0, uid, kept.len() as i64, at).unwrap();
            if s == Seen::First {
                kept.push(rec(uid, ""));
            }
            seen.push(s);
        }
        seen
    }

    #[test]
    fn repeats_are_found_even_when_every_uid_hash_collides() {
        use Seen::*;
        assert_eq!(
            see_all_colliding(&["a", "b", "a", "c", "b", "c", "d"]),
            [First, First, Again(0), First, Again(1), Again(2), First]
        );
    }

    #[test]
    fn a_record_is_read_back_from_memory_or_from_the_temp_table() {
        let conn = Connection::open_in_memory().unwrap();
        let mut records = Records::default();
        records.push(&conn, rec("a", "1")).unwrap();
        records.spill(&conn).unwrap();
        records.push(&conn, rec("b", "2")).unwrap();
        assert_eq!((records.spilled, records.len()), (1, 2));
        assert_eq!(records.get(&conn, 0).unwrap(), rec("a", "1"));
        assert_eq!(records.get(&conn, 1).unwrap(), rec("b", "2"));
        let mut all = Vec::new();
        records
            .for_each(&conn, &mut |r| {
                all.push(r.uid.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(all, ["a", "b"]);
    }
}
