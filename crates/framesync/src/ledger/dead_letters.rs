//! Dead letters by hand: listing them, giving them back to their frames, setting records aside,
//! deleting them (the rules are in [`crate::dead_letters`]).

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, Transaction, params};

use super::Ledger;
use crate::dead_letters::{Added, Dropped, Filter, Letter, Retried};
use crate::delivery::DeadReason;
use crate::frames::{Epoch, rfc3339};

const MATCHES: &str = "(:from IS NULL OR frame >= :from) AND (:to IS NULL OR frame < :to)
    AND (:reason IS NULL OR reason = :reason) AND (:status IS NULL OR status = :status)
    AND (:uid IS NULL OR uid = :uid)";

fn bind(stmt: &mut rusqlite::Statement, f: &Filter) -> rusqlite::Result<()> {
    for (name, value) in [
        (":from", f.frame_from.map(rusqlite::types::Value::Integer)),
        (":to", f.frame_to.map(rusqlite::types::Value::Integer)),
        (":reason", f.reason.map(|r| rusqlite::types::Value::Text(r.as_str().into()))),
        (":status", f.status.map(|s| rusqlite::types::Value::Integer(s.into()))),
        (":uid", f.uid.clone().map(rusqlite::types::Value::Text)),
    ] {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, value.unwrap_or(rusqlite::types::Value::Null))?;
        }
    }
    Ok(())
}

/// A selected dead letter, as retry and drop need it.
struct Row {
    id: i64,
    frame: Epoch,
    uid: String,
    body: String,
    reason: DeadReason,
    key: Option<String>,
}

fn reason(text: &str) -> rusqlite::Result<DeadReason> {
    DeadReason::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown reason {text:?}").into(),
        )
    })
}

/// A row of `id, frame, uid, reason, status, detail, response, body, at`.
fn letter(r: &rusqlite::Row) -> rusqlite::Result<Letter> {
    Ok(Letter {
        id: r.get(0)?,
        frame: rfc3339(r.get(1)?),
        uid: r.get(2)?,
        reason: reason(r.get_ref(3)?.as_str()?)?,
        status: r.get(4)?,
        detail: r.get(5)?,
        response: r.get(6)?,
        body: r.get(7)?,
        at: rfc3339(r.get(8)?),
    })
}

impl Ledger {
    /// The dead letters matching `filter`, newest first, at most `limit`.
    pub fn dead_letters(&self, filter: &Filter, limit: i64) -> Result<Vec<Letter>> {
        let sql = format!(
            "SELECT id, frame, uid, reason, status, detail, response, body, at FROM dead_letters
             WHERE {MATCHES} ORDER BY id DESC LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        bind(&mut stmt, filter)?;
        let mut rows = stmt.raw_query();
        let mut letters = Vec::new();
        while let Some(r) = rows.next()? {
            letters.push(letter(r)?);
        }
        Ok(letters)
    }

    /// The dead letter with this id, if there is one.
    pub fn dead_letter_by_id(&self, id: i64) -> Result<Option<Letter>> {
        let sql = "SELECT id, frame, uid, reason, status, detail, response, body, at FROM dead_letters WHERE id = ?1";
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([id])?;
        rows.next()?.map(letter).transpose().map_err(Into::into)
    }

    /// Gives the matching dead letters back to their frames (rule in the module doc).
    pub fn retry_dead_letters(&mut self, filter: &Filter, now: Epoch) -> Result<Retried> {
        let tx = self.write()?;
        let mut retried = Retried::default();
        for letter in with_their_batches(&tx, select(&tx, filter)?)? {
            let state = frame_state(&tx, letter.frame)?;
            if !matches!(state.as_deref(), Some("pulled" | "pushing" | "delivered")) {
                bail!(
                    "dead letter {} ({}): its frame {} is {}, with nothing staged to return it to; nothing was changed",
                    letter.id,
                    letter.uid,
                    rfc3339(letter.frame),
                    state.as_deref().unwrap_or("gone from the ledger")
                );
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [letter.id])?;
            tx.execute(
                "UPDATE frames SET dead = MAX(dead - 1, 0), updated_at = ?2 WHERE start = ?1",
                params![letter.frame, now],
            )?;
            if is_delivered(&tx, &letter.uid)? {
                retried.already_delivered += 1;
                continue;
            }
            if state.as_deref() == Some("delivered") {
                reopen(&tx, letter.frame, now)?;
                retried.frames_reopened += 1;
            }
            restage(&tx, &letter)?;
            retried.staged += 1;
        }
        tx.commit()?;
        Ok(retried)
    }

    /// Sets aside by hand the pending staged records with `uid` (in the frame starting at
    /// `frame`, if given): each becomes a dead letter with reason `manual` and the operator's
    /// note, under the key it was sent under, and its frame goes on without it.
    pub fn dead_letter_by_hand(&mut self, uid: &str, frame: Option<Epoch>, note: &str, now: Epoch) -> Result<Added> {
        let tx = self.write()?;
        let mut added = Added::default();
        let rows: Vec<(Epoch, i64, String, Option<String>, i64, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT s.frame, s.seq, s.body, s.key, s.attempts, f.sent_through FROM staged s JOIN frames f ON f.start = s.frame
                 WHERE s.uid = ?1 AND (?2 IS NULL OR s.frame = ?2)",
            )?;
            stmt.query_map(params![uid, frame], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (start, seq, body, key, attempts, sent_through) in rows {
            let pending: bool = tx.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM delivered WHERE uid = ?1) AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE uid = ?1)",
                [uid],
                |r| r.get(0),
            )?;
            if !pending {
                added.not_pending += 1;
                continue;
            }
            // Sent (it may be at the RS) but with no key noted: it went under its own.
            let key = key.or((seq <= sent_through).then(String::new));
            tx.execute(
                "INSERT INTO dead_letters (frame, uid, reason, status, response, detail, body, at, key, attempts)
                 VALUES (?1, ?2, 'manual', NULL, NULL, ?3, ?4, ?5, ?6, ?7)",
                params![start, uid, format!("set aside by hand: {note}"), body, now, key, attempts],
            )?;
            tx.execute("UPDATE frames SET dead = dead + 1, updated_at = ?2 WHERE start = ?1", params![start, now])?;
            added.added += 1;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Deletes the matching dead letters (rule in the module doc).
    pub fn drop_dead_letters(&mut self, filter: &Filter) -> Result<Dropped> {
        let tx = self.write()?;
        let mut dropped = Dropped::default();
        for letter in select(&tx, filter)? {
            let awaiting_recheck: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM frames WHERE start = ?1 AND next_recheck IS NOT NULL)",
                [letter.frame],
                |r| r.get(0),
            )?;
            if awaiting_recheck {
                dropped.kept_for_recheck += 1;
                continue;
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [letter.id])?;
            tx.execute("DELETE FROM staged WHERE uid = ?1", [&letter.uid])?;
            dropped.dropped += 1;
        }
        tx.commit()?;
        Ok(dropped)
    }
}

fn select(tx: &Transaction, filter: &Filter) -> Result<Vec<Row>> {
    let mut stmt =
        tx.prepare(&format!("SELECT id, frame, uid, body, reason, key FROM dead_letters WHERE {MATCHES} ORDER BY id"))?;
    bind(&mut stmt, filter)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        frame: r.get(1)?,
        uid: r.get(2)?,
        body: r.get(3)?,
        reason: reason(r.get_ref(4)?.as_str()?)?,
        key: r.get(5)?,
    })
}

/// The selected dead letters and every other one sent in the same batch: a batch goes again
/// whole under its key, or an RS that stored part of it under that key would answer the rest
/// with the stored answer and store nothing.
fn with_their_batches(tx: &Transaction, mut letters: Vec<Row>) -> Result<Vec<Row>> {
    let keys: std::collections::BTreeSet<String> =
        letters.iter().filter_map(|l| l.key.clone()).filter(|k| !k.is_empty()).collect();
    let ids: std::collections::HashSet<i64> = letters.iter().map(|l| l.id).collect();
    let mut stmt =
        tx.prepare_cached("SELECT id, frame, uid, body, reason, key FROM dead_letters WHERE key = ?1 ORDER BY id")?;
    for key in keys {
        let mut rows = stmt.query([&key])?;
        while let Some(r) = rows.next()? {
            let letter = row(r)?;
            if !ids.contains(&letter.id) {
                letters.push(letter);
            }
        }
    }
    letters.sort_by_key(|l| l.id);
    Ok(letters)
}

fn frame_state(tx: &Transaction, start: Epoch) -> Result<Option<String>> {
    Ok(tx.query_row("SELECT state FROM frames WHERE start = ?1", [start], |r| r.get(0)).optional()?)
}

fn is_delivered(tx: &Transaction, uid: &str) -> Result<bool> {
    Ok(tx.query_row("SELECT EXISTS (SELECT 1 FROM delivered WHERE uid = ?1)", [uid], |r| r.get(0))?)
}

/// Stages the dead letter's record at the end of its frame, after anything that may have been
/// sent, unless the frame still holds it — under the key it was sent under, and, when the RS may
/// have stored it (it failed without an answer, or was set aside by hand), to be looked up first.
fn restage(tx: &Transaction, letter: &Row) -> Result<()> {
    let unknown = matches!(letter.reason, DeadReason::Exhausted | DeadReason::Manual);
    tx.execute(
        "INSERT INTO staged (frame, seq, uid, ts, body, key, unknown)
         SELECT ?1, MAX(f.sent_through, (SELECT COALESCE(MAX(seq), -1) FROM staged WHERE frame = ?1)) + 1, ?2, NULL, ?3, ?4, ?5
         FROM frames f
         WHERE f.start = ?1 AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.frame = ?1 AND s.uid = ?2)",
        params![letter.frame, letter.uid, letter.body, letter.key, unknown],
    )?;
    Ok(())
}

/// Moves a delivered frame back to `pulled`, with nothing staged sent yet, due now.
fn reopen(tx: &Transaction, start: Epoch, now: Epoch) -> Result<()> {
    tx.execute(
        "UPDATE frames SET state = 'pulled', sent_through = -1, attempts = 0, last_error = NULL, next_attempt = NULL,
             updated_at = ?2
         WHERE start = ?1 AND state = 'delivered'",
        params![start, now],
    )?;
    Ok(())
}
