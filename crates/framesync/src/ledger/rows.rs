//! Writing many rows at once, and the dead letters every writer shares.

use anyhow::Result;
use rusqlite::{Connection, ToSql, params};

use crate::delivery::Key;
use crate::frames::Epoch;
use crate::model::DeadLetter;

/// Rows per INSERT statement where many are written at once (a power of two): for rows this
/// small, running a statement costs more than writing a row.
const ROWS_PER_INSERT: usize = 32;
pub(super) const INSERT_DELIVERED: &str = "INSERT OR IGNORE INTO delivered (uid, frame, at) VALUES ";
pub(super) const INSERT_STAGED: &str = "INSERT INTO staged (frame, seq, uid, ts, body) VALUES ";

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
