//! Dead letters by hand: selecting them with a filter, giving them back to their frame to be
//! pushed again (retry), and deleting them (drop). Both changes are one transaction each and
//! keep the ledger's invariants (design §2).
//!
//! **Retry.** A retried record goes back to its frame as if it had never been refused:
//! - its `dead_letters` row goes, and the frame's `dead` count with it;
//! - it is staged again (unless its staged row is still there because the frame was not
//!   delivered yet), after every seq that may already have reached the RS, so it is never taken
//!   for a record whose fate is unknown;
//! - a delivered frame goes back to `pulled`, as when a re-check finds late records
//!   (`recheck.rs`): its error and backoff are cleared so the next `push` or `run` takes it, and
//!   its re-check schedule is kept. It stays in `delivered_spans`, since everything it delivered
//!   stays delivered; the timeline shows it pending until the record is acknowledged or refused
//!   again, and the design's invariant holds: a frame in state `delivered` has no staged record;
//! - a UID the RS acknowledged meanwhile (the same record in another frame) is not staged: its
//!   dead letter just goes, and the frame is left as it is.
//!
//! Pruning keeps the row of a frame with dead letters (it deletes its UIDs), so a retry always
//! finds the frame to return the record to; the push then sends only the retried record, since
//! it sends only staged records.
//!
//! **Drop.** The `dead_letters` row goes; the frame's `dead` count stays (the record was
//! refused, and nothing will deliver it). A staged copy of the record goes too, or the next push
//! would send it. A dead letter whose frame still awaits a re-check is kept: the re-check
//! would find the record unknown and send it again.

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::delivery::DeadReason;
use crate::frames::{Epoch, rfc3339};
use crate::ledger::Ledger;

/// Which dead letters: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The frame starts at or after this time.
    pub frame_from: Option<Epoch>,
    /// The frame starts before this time.
    pub frame_to: Option<Epoch>,
    pub reason: Option<DeadReason>,
    pub status: Option<u16>,
    pub uid: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

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

/// A dead letter as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Letter {
    pub id: i64,
    pub frame: String,
    pub uid: String,
    pub reason: DeadReason,
    pub status: Option<u16>,
    pub detail: String,
    pub response: Option<String>,
    pub body: String,
    pub at: String,
}

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// Records staged again, to be pushed by the next `push` or `run`.
    pub staged: i64,
    /// Records the RS had acknowledged meanwhile: their dead letter just went.
    pub already_delivered: i64,
    /// Delivered frames moved back to `pulled`.
    pub frames_reopened: i64,
}

/// What a drop did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub dropped: i64,
    /// Kept because their frame still awaits a re-check.
    pub kept_for_recheck: i64,
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

/// What `add` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Added {
    pub added: i64,
    /// Matching records already acknowledged or dead-lettered: nothing to set aside.
    pub not_pending: i64,
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
            letters.push(Letter {
                id: r.get(0)?,
                frame: rfc3339(r.get(1)?),
                uid: r.get(2)?,
                reason: reason(r.get_ref(3)?.as_str()?)?,
                status: r.get(4)?,
                detail: r.get(5)?,
                response: r.get(6)?,
                body: r.get(7)?,
                at: rfc3339(r.get(8)?),
            });
        }
        Ok(letters)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::{frame, ledger};
    use crate::model::{DeadLetter, FrameState, PullCounts, StagedRecord};

    fn letter(uid: &str, reason: DeadReason, status: Option<u16>) -> DeadLetter {
        DeadLetter {
            uid: uid.into(),
            reason,
            status,
            response: status.map(|s| format!("HTTP {s}")),
            detail: "refused".into(),
            body: format!(r#"{{"id":"{uid}"}}"#),
            key: None,
            attempts: 0,
        }
    }

    /// A frame of `uids` whose first is refused by the RS and the rest acknowledged.
    fn deliver_with_a_dead_letter(l: &mut Ledger, start: Epoch, uids: &[&str], complete: bool) {
        let records: Vec<_> = uids
            .iter()
            .map(|u| StagedRecord { uid: u.to_string(), ts_ms: None, body: format!(r#"{{"id":"{u}"}}"#) })
            .collect();
        l.stage_frame(frame(start), &records, &[], &PullCounts::default(), start).unwrap();
        l.mark_sending(start, uids.len() as i64 - 1, &[], start).unwrap();
        l.dead_letter(start, &letter(uids[0], DeadReason::Rejected, Some(400)), start).unwrap();
        l.acknowledge(start, &uids[1..], start).unwrap();
        if complete {
            assert!(l.complete_frame(frame(start), None, start).unwrap());
        }
    }

    fn count(l: &Ledger, sql: &str) -> i64 {
        l.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn only(uid: &str) -> Filter {
        Filter { uid: Some(uid.into()), ..Filter::default() }
    }

    #[test]
    fn a_retried_record_is_staged_again_and_its_delivered_frame_reopens_without_leaving_its_span() {
        let (_dir, mut l) = ledger();
        for start in [0, 60, 120] {
            deliver_with_a_dead_letter(&mut l, start, &[&format!("x{start}"), &format!("y{start}")], true);
        }
        let retried = l.retry_dead_letters(&only("x60"), 500).unwrap();
        assert_eq!(retried, Retried { staged: 1, already_delivered: 0, frames_reopened: 1 });
        assert_eq!(l.frame_state(60).unwrap(), Some(FrameState::Pulled));
        assert_eq!(l.delivered_spans(0, 1000).unwrap(), vec![(0, 180)], "what it delivered stays delivered");
        let (pending, sent_through) = l.pending(60).unwrap();
        assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["x60"]);
        assert!(pending[0].seq > sent_through, "never taken for a record whose fate is unknown");
        assert_eq!(count(&l, "SELECT dead FROM frames WHERE start = 60"), 0);
        assert_eq!(count(&l, "SELECT COUNT(*) FROM dead_letters"), 2);

        l.acknowledge(60, &["x60"], 600).unwrap();
        assert!(l.complete_frame(frame(60), None, 600).unwrap());
        assert_eq!(l.frame_state(60).unwrap(), Some(FrameState::Delivered));
        assert_eq!(count(&l, "SELECT COUNT(*) FROM staged"), 0, "a delivered frame has no staged records");
    }

    #[test]
    fn retrying_in_a_frame_not_yet_delivered_does_not_stage_the_record_twice() {
        let (_dir, mut l) = ledger();
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b", "c"], false);
        let retried = l.retry_dead_letters(&only("a"), 10).unwrap();
        assert_eq!(retried, Retried { staged: 1, already_delivered: 0, frames_reopened: 0 });
        assert_eq!(count(&l, "SELECT COUNT(*) FROM staged WHERE uid = 'a'"), 1);
        assert_eq!(l.pending(0).unwrap().0.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_dead_letter_acknowledged_meanwhile_elsewhere_just_goes() {
        let (_dir, mut l) = ledger();
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b"], true);
        l.stage_frame(frame(60), &[], &[], &PullCounts::default(), 60).unwrap();
        l.acknowledge(60, &["a"], 60).unwrap();
        let retried = l.retry_dead_letters(&only("a"), 100).unwrap();
        assert_eq!(retried, Retried { staged: 0, already_delivered: 1, frames_reopened: 0 });
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
        assert_eq!(count(&l, "SELECT COUNT(*) FROM staged"), 0, "a delivered frame has no staged records");
    }

    #[test]
    fn a_dropped_record_is_never_sent_and_stays_counted() {
        let (_dir, mut l) = ledger();
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b", "c"], false);
        let dropped = l.drop_dead_letters(&only("a")).unwrap();
        assert_eq!(dropped, Dropped { dropped: 1, kept_for_recheck: 0 });
        assert_eq!(count(&l, "SELECT COUNT(*) FROM dead_letters"), 0);
        assert_eq!(count(&l, "SELECT dead FROM frames WHERE start = 0"), 1, "still counted");
        assert!(l.pending(0).unwrap().0.is_empty(), "not sent after all");
        assert!(l.complete_frame(frame(0), None, 5).unwrap());
    }

    #[test]
    fn a_dead_letter_whose_frame_awaits_a_recheck_is_kept() {
        let (_dir, mut l) = ledger();
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b"], false);
        assert!(l.complete_frame(frame(0), Some(1000), 5).unwrap());
        assert_eq!(l.drop_dead_letters(&Filter::default()).unwrap(), Dropped { dropped: 0, kept_for_recheck: 1 });
    }

    #[test]
    fn filters_select_by_frame_range_reason_status_and_uid() {
        let (_dir, mut l) = ledger();
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b"], true);
        deliver_with_a_dead_letter(&mut l, 60, &["c", "d"], true);
        l.stage_frame(frame(120), &[], &[letter("e", DeadReason::Invalid, None)], &PullCounts::default(), 120).unwrap();
        let uids = |f: Filter| -> Vec<String> { l.dead_letters(&f, 100).unwrap().into_iter().map(|d| d.uid).collect() };
        assert_eq!(uids(Filter::default()), ["e", "c", "a"], "newest first");
        assert_eq!(uids(Filter { frame_from: Some(60), ..Filter::default() }), ["e", "c"]);
        assert_eq!(uids(Filter { frame_from: Some(0), frame_to: Some(60), ..Filter::default() }), ["a"]);
        assert_eq!(uids(Filter { reason: Some(DeadReason::Invalid), ..Filter::default() }), ["e"]);
        assert_eq!(uids(Filter { status: Some(400), ..Filter::default() }), ["c", "a"]);
        assert_eq!(uids(only("c")), ["c"]);
        assert_eq!(uids(Filter { status: Some(500), ..Filter::default() }), Vec::<String>::new());
    }
}
