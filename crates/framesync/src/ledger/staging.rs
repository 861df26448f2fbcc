//! Staging: the records of a pulled frame, written in one transaction page by page; the new
//! records a re-check finds; the records of a frame sent again.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::Ledger;
use crate::delivery::Key;
use crate::frames::{Epoch, Frame};
use crate::model::{DeadLetter, PullCounts, StagedRecord};
use crate::recheck::next_recheck;

/// Rows per INSERT statement where many are written at once (a power of two): for rows this
/// small, running a statement costs more than writing a row.
const ROWS_PER_INSERT: usize = 32;
pub(super) const INSERT_DELIVERED: &str = "INSERT OR IGNORE INTO delivered (uid, frame, at) VALUES ";
const INSERT_STAGED: &str = "INSERT INTO staged (frame, seq, uid, ts, body) VALUES ";

/// Runs `insert` over `values`, `columns` to a row, in statements of `ROWS_PER_INSERT` rows and
/// then of halving powers of two (so the statement cache holds six per table). Returns the rows
/// inserted.
pub(super) fn insert_rows(conn: &Connection, insert: &str, columns: usize, values: &[&dyn ToSql]) -> Result<usize> {
    let row = format!("({})", vec!["?"; columns].join(", "));
    let mut added = 0;
    let mut rest = values;
    let mut rows = ROWS_PER_INSERT;
    while !rest.is_empty() {
        while rows * columns > rest.len() {
            rows /= 2;
        }
        let (now, later) = rest.split_at(rows * columns);
        added += conn.prepare_cached(&format!("{insert}{}", vec![row.as_str(); rows].join(", ")))?.execute(now)?;
        rest = later;
    }
    Ok(added)
}

impl Ledger {
    /// Stages all records of a frame in one transaction: the frame becomes `pulled` with every
    /// record, or stays as it was. Invalid records are dead-lettered in the same transaction.
    pub fn stage_frame(
        &mut self,
        frame: Frame,
        records: &[StagedRecord],
        invalid: &[DeadLetter],
        counts: &PullCounts,
        now: Epoch,
    ) -> Result<()> {
        let mut staging = self.begin_staging(frame, now)?;
        let staged = self
            .stage(&mut staging, records)
            .and_then(|()| invalid.iter().try_for_each(|letter| self.stage_dead_letter(&mut staging, letter)))
            .and_then(|()| self.commit_staging(staging, counts));
        if staged.is_err() {
            self.abandon_staging();
        }
        staged
    }

    /// Opens the one transaction that stages a frame, page by page (see [`Staging`]).
    pub fn begin_staging(&mut self, frame: Frame, now: Epoch) -> Result<Staging> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let opened = self.open_for_staging(frame, now);
        if opened.is_err() {
            self.abandon_staging();
        }
        opened?;
        Ok(Staging {
            frame,
            now,
            staged: 0,
            invalid: 0,
            duplicates: 0,
            first_by_hash: HashMap::new(),
            collided: HashMap::new(),
            hasher: RandomState::new(),
            hash_mask: u64::MAX,
        })
    }

    fn open_for_staging(&mut self, frame: Frame, now: Epoch) -> Result<()> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM frames WHERE start = ?1")?
            .query_row([frame.start], |r| r.get(0))
            .optional()?;
        if matches!(state.as_deref(), Some("pulled" | "pushing" | "delivered")) {
            bail!("frame {frame} is already {}; it is not pulled twice", state.unwrap_or_default());
        }
        self.conn
            .prepare_cached(
                "INSERT INTO frames (start, end, state, pulled_at, updated_at) VALUES (?1, ?2, 'pulled', ?3, ?3)
             ON CONFLICT (start) DO UPDATE SET state = 'pulled', attempts = 0, last_error = NULL,
                 next_attempt = NULL, sent_through = -1, pulled_at = ?3, updated_at = ?3",
            )?
            .execute(params![frame.start, frame.end(), now])?;
        Ok(())
    }

    /// Stages records in order, after those already staged; a UID staged earlier in the frame is
    /// kept once and counted as a duplicate.
    pub fn stage(&mut self, staging: &mut Staging, records: &[StagedRecord]) -> Result<()> {
        let mut at = self.conn.prepare_cached("SELECT uid, body FROM staged WHERE frame = ?1 AND seq = ?2")?;
        let start = staging.frame.start;
        // Records to insert, ROWS_PER_INSERT at a time: (seq, record).
        let mut rows: Vec<(i64, &StagedRecord)> = Vec::with_capacity(ROWS_PER_INSERT);
        let insert = |rows: &mut Vec<(i64, &StagedRecord)>| -> Result<()> {
            if !rows.is_empty() {
                let values: Vec<&dyn ToSql> =
                    rows.iter().flat_map(|(seq, r)| [&start as &dyn ToSql, seq, &r.uid, &r.ts_ms, &r.body]).collect();
                insert_rows(&self.conn, INSERT_STAGED, 5, &values)?;
                rows.clear();
            }
            Ok(())
        };
        for record in records {
            let hash = staging.hasher.hash_one(&record.uid) & staging.hash_mask;
            let earlier = match staging.first_by_hash.get(&hash) {
                None => {
                    staging.first_by_hash.insert(hash, staging.staged);
                    None
                }
                Some(&seq) => {
                    insert(&mut rows)?; // the earlier record may be among them
                    let (uid, body): (String, String) =
                        at.query_row(params![start, seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    match (uid == record.uid, staging.collided.get(&record.uid)) {
                        (true, _) => Some(body),
                        (false, Some(&seq)) => Some(at.query_row(params![start, seq], |r| r.get(1))?),
                        (false, None) => {
                            staging.collided.insert(record.uid.clone(), staging.staged);
                            None
                        }
                    }
                }
            };
            if let Some(body) = earlier {
                staging.duplicates += 1;
                if body != record.body {
                    log::warn!(
                        "frame {}: UID {:?} appears twice with different contents; the first is kept",
                        staging.frame,
                        record.uid
                    );
                }
                continue;
            }
            rows.push((staging.staged, record));
            staging.staged += 1;
            if rows.len() == ROWS_PER_INSERT {
                insert(&mut rows)?;
            }
        }
        insert(&mut rows)
    }

    /// Dead-letters a record that cannot be staged, with its frame (once: the same record in
    /// another pull of the frame is the same dead letter).
    pub fn stage_dead_letter(&mut self, staging: &mut Staging, letter: &DeadLetter) -> Result<()> {
        if insert_dead_letter(&self.conn, staging.frame.start, letter, staging.now)? {
            staging.invalid += 1;
        }
        Ok(())
    }

    /// Marks the records staged so far that are stamped before `before` (UTC seconds) as of
    /// unknown fate: a frame of theirs older than `run.retain` may have delivered them and been
    /// pruned, its UIDs forgotten, so they are looked up before they are sent where the RS has a
    /// lookup (and otherwise go under their own keys, which an RS that honors keys knows).
    pub fn stage_forgotten(&mut self, staging: &Staging, before: Epoch) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE staged SET unknown = 1 WHERE frame = ?1 AND ts < ?2")?
            .execute(params![staging.frame.start, before.saturating_mul(1000)])?;
        Ok(())
    }

    /// Makes the frame `pulled` with everything staged; `counts` are what the SS client found
    /// (repeats across pages found while staging are added).
    pub fn commit_staging(&mut self, staging: Staging, counts: &PullCounts) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE frames SET records = ?2, out_of_frame = ?3, duplicates = ?4 WHERE start = ?1")?
            .execute(params![
                staging.frame.start,
                staging.staged + staging.invalid,
                counts.out_of_frame,
                counts.duplicates + staging.duplicates
            ])?;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Rolls back a staging that will not be committed (no-op when none is open): the frame is
    /// as it was before it.
    pub fn abandon_staging(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A frame being staged, page by page, in one open transaction (`Ledger::begin_staging`,
/// `stage`, `commit_staging`): the frame becomes `pulled` with every record at once; not
/// committed (a page failed, the process died), the ledger stays as it was. So a frame of any
/// size is pulled atomically with one page in memory. Finding repeated UIDs holds 16 bytes per
/// record (the seq of each UID's hash), not the UIDs.
pub struct Staging {
    frame: Frame,
    now: Epoch,
    staged: i64,
    invalid: i64,
    duplicates: i64,
    /// The seq of the first record staged with each UID hash.
    first_by_hash: HashMap<u64, i64>,
    /// UIDs whose hash an earlier, different UID had, with their seq.
    collided: HashMap<String, i64>,
    hasher: RandomState,
    /// All ones; tests clear it to make every UID's hash collide.
    pub(super) hash_mask: u64,
}

impl Staging {
    /// Records staged so far.
    pub fn staged(&self) -> i64 {
        self.staged
    }

    /// Records dead-lettered so far.
    pub fn invalid(&self) -> i64 {
        self.invalid
    }
}

/// Adds a dead letter unless the record is one already; true when added.
pub(super) fn insert_dead_letter(tx: &Connection, frame: Epoch, letter: &DeadLetter, now: Epoch) -> Result<bool> {
    let added = tx
        .prepare_cached(
            "INSERT INTO dead_letters (frame, uid, reason, status, response, detail, body, at, key, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (uid) DO NOTHING",
        )?
        .execute(params![
            frame,
            letter.uid,
            letter.reason.as_str(),
            letter.status,
            letter.response,
            letter.detail,
            letter.body,
            now,
            letter.key.as_ref().map(Key::to_sql),
            letter.attempts,
        ])?;
    // A record seen again (a re-pull, or the same record in two frames) is dead-lettered once.
    if added > 0 {
        tx.prepare_cached("UPDATE frames SET dead = dead + 1 WHERE start = ?1")?.execute([frame])?;
    }
    Ok(added > 0)
}

impl Ledger {
    /// Stages the records of a re-check that the ledger has not seen (neither delivered, nor
    /// dead-lettered, nor staged), in one transaction. With new records the frame goes back to
    /// `pulled` so they are pushed; its delivered span stays, since everything pushed before
    /// stays delivered. Returns how many records were new, or None when the frame is not
    /// delivered (a dead letter retried meanwhile reopened it): it is re-checked once it is.
    pub fn stage_recheck(
        &mut self,
        frame: Frame,
        records: &[StagedRecord],
        schedule: &[i64],
        now: Epoch,
    ) -> Result<Option<usize>> {
        let tx = self.write()?;
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
            for record in records {
                if insert.execute(params![frame.start, added as i64, record.uid, record.ts_ms, record.body])? == 1 {
                    late.execute(params![
                        record.uid,
                        frame.start,
                        record.ts_ms,
                        pulled_at.unwrap_or(delivered_at),
                        now
                    ])?;
                    added += 1;
                }
            }
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

    /// Stages records of a delivered frame to be sent again (`backfill --redeliver`, or
    /// `verify --repair` for records the RS lost or the ledger never saw): their delivered UIDs
    /// are forgotten in the same transaction and recorded again as the RS acknowledges them;
    /// the keys stay the same, so an RS that honors them stores nothing twice. Dead-lettered
    /// records stay dead letters. Returns how many records are staged.
    pub fn stage_redelivery(&mut self, frame: Frame, records: &[StagedRecord], now: Epoch) -> Result<usize> {
        let tx = self.write()?;
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
            for record in records {
                if insert.execute(params![frame.start, staged as i64, record.uid, record.ts_ms, record.body])? == 1 {
                    forgotten += forget.execute([&record.uid])?;
                    staged += 1;
                }
            }
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
