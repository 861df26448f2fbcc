//! Re-checks and late data: a delivered frame is pulled again on a decaying schedule after its
//! first delivery (`frames.recheck`), and only records whose UID the ledger has not seen are
//! staged and pushed. Each such late record is remembered, so `status` can say how late the SS
//! really is.

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, params};

use crate::frames::{Epoch, Frame};
use crate::ledger::Ledger;
use crate::model::StagedRecord;

/// Late-data figures over a period.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LateFigures {
    pub late_records: i64,
    /// Seconds from a late record's timestamp to the re-check that found it: p50 and p99.
    pub lateness_p50: Option<i64>,
    pub lateness_p99: Option<i64>,
    /// The `delay` that would have caught 99% of them on the first pull lies in this range
    /// (seconds after the frame's end): more than the first pull's delay, at most the re-check's.
    pub delay_needed_at_least: Option<i64>,
    pub delay_needed_at_most: Option<i64>,
}

/// What became of a failed re-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecheckFailure {
    /// It is due again after a backoff.
    Retried,
    /// It failed `run.max_recheck_attempts` times in a row: given up (recorded on the frame),
    /// and the next scheduled re-check, if any, is due at its time.
    GaveUp,
}

/// When the next re-check is due: the first scheduled time after `now`, or none.
pub fn next_recheck(delivered_at: Epoch, schedule: &[i64], now: Epoch) -> Option<Epoch> {
    schedule.iter().map(|after| delivered_at + after).find(|t| *t > now)
}

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

    /// Late-data figures for records found since `since`.
    pub fn late_figures(&self, since: Epoch) -> Result<LateFigures> {
        let size: i64 = self.conn.query_row("SELECT COALESCE(MAX(frame_size), 60) FROM pipeline", [], |r| r.get(0))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT frame, ts, first_pulled_at, found_at FROM late_records WHERE found_at >= ?1")?;
        let rows: Vec<(Epoch, Option<i64>, Epoch, Epoch)> =
            stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        let mut lateness: Vec<i64> =
            rows.iter().filter_map(|(_, ts, _, found)| ts.map(|t| found - t.div_euclid(1000))).collect();
        let mut at_least: Vec<i64> = rows.iter().map(|(frame, _, first, _)| first - (frame + size)).collect();
        let mut at_most: Vec<i64> = rows.iter().map(|(frame, _, _, found)| found - (frame + size)).collect();
        Ok(LateFigures {
            late_records: rows.len() as i64,
            lateness_p50: percentile(&mut lateness, 50),
            lateness_p99: percentile(&mut lateness, 99),
            delay_needed_at_least: percentile(&mut at_least, 99),
            delay_needed_at_most: percentile(&mut at_most, 99),
        })
    }
}

/// The nearest-rank percentile.
fn percentile(values: &mut [i64], p: usize) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Synchronous;
    use crate::ledger::testing::frame;
    use crate::model::{FrameState, PullCounts};

    fn rec(uid: &str, ts_ms: i64) -> StagedRecord {
        StagedRecord { uid: uid.into(), ts_ms: Some(ts_ms), body: format!("{{\"id\":\"{uid}\"}}") }
    }

    fn delivered_ledger(uids: &[&str]) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        l.sync_pipeline(60, 0, 60, 0).unwrap();
        let records: Vec<_> = uids.iter().map(|u| rec(u, 1_000)).collect();
        l.stage_frame(frame(0), &records, &[], &PullCounts::default(), 120).unwrap();
        l.acknowledge(0, uids, 120).unwrap();
        assert!(l.complete_frame(frame(0), Some(720), 120).unwrap());
        (dir, l)
    }

    #[test]
    fn the_schedule_decays_from_the_first_delivery() {
        assert_eq!(next_recheck(100, &[600, 21_600], 100), Some(700));
        assert_eq!(next_recheck(100, &[600, 21_600], 700), Some(21_700));
        assert_eq!(next_recheck(100, &[600, 21_600], 30_000), None);
        assert_eq!(next_recheck(100, &[], 100), None);
    }

    #[test]
    fn a_recheck_stages_only_unseen_uids_and_remembers_them_as_late() {
        let (_dir, mut l) = delivered_ledger(&["a", "b"]);
        assert_eq!(l.due_rechecks(719, 86_400, 10).unwrap(), Vec::<i64>::new());
        assert_eq!(l.due_rechecks(720, 86_400, 10).unwrap(), vec![0]);
        let added = l
            .stage_recheck(frame(0), &[rec("a", 1_000), rec("late", 30_000), rec("b", 2_000)], &[600, 6000], 720)
            .unwrap();
        assert_eq!(added, Some(1));
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
        let (pending, sent_through) = l.pending(0).unwrap();
        assert_eq!((pending.len(), pending[0].uid.as_str(), sent_through), (1, "late", -1));
        l.acknowledge(0, &["late"], 730).unwrap();
        assert!(l.complete_frame(frame(0), Some(99_999), 730).unwrap());
        let next: Option<i64> = l.conn.query_row("SELECT next_recheck FROM frames", [], |r| r.get(0)).unwrap();
        assert_eq!(next, Some(120 + 6000), "the schedule counts from the first delivery, not this one");
        let figures = l.late_figures(0).unwrap();
        assert_eq!(figures.late_records, 1);
        assert_eq!(figures.lateness_p50, Some(720 - 30));
        assert_eq!(figures.delay_needed_at_least, Some(120 - 60), "first pulled 60s after the frame closed");
        assert_eq!(figures.delay_needed_at_most, Some(720 - 60), "found 660s after the frame closed");
    }

    #[test]
    fn a_recheck_that_finds_nothing_new_only_moves_the_schedule() {
        let (_dir, mut l) = delivered_ledger(&["a"]);
        assert_eq!(l.stage_recheck(frame(0), &[rec("a", 1_000)], &[600], 720).unwrap(), Some(0));
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
        assert!(l.due_rechecks(i64::MAX, 86_400, 10).unwrap().is_empty(), "the last re-check is done");
        let staged: i64 = l.conn.query_row("SELECT COUNT(*) FROM staged", [], |r| r.get(0)).unwrap();
        assert_eq!(staged, 0);
    }

    /// Confirms a race is safe: `dead-letters retry` (push lock) reopening a delivered frame while
    /// a `pull` (pull lock) re-checks it. The re-check stages nothing and stays due; it runs once
    /// the frame is delivered again.
    #[test]
    fn a_recheck_of_a_frame_a_retried_dead_letter_reopened_waits_for_its_delivery() {
        let (_dir, mut l) = delivered_ledger(&["a", "b"]);
        let letter = crate::model::DeadLetter {
            uid: "bad".into(),
            reason: crate::delivery::DeadReason::Rejected,
            status: Some(400),
            response: None,
            detail: "HTTP 400".into(),
            body: "{}".into(),
            key: Some(crate::delivery::Key::Own),
            attempts: 0,
        };
        l.dead_letter(0, &letter, 130).unwrap();
        let filter = crate::dead_letters::Filter { uid: Some("bad".into()), ..Default::default() };
        assert_eq!(l.retry_dead_letters(&filter, 700).unwrap().frames_reopened, 1);
        assert_eq!(l.stage_recheck(frame(0), &[rec("late", 5_000)], &[600], 720).unwrap(), None);
        assert!(l.due_rechecks(720, 86_400, 10).unwrap().is_empty(), "not while the frame is open");
        l.acknowledge(0, &["bad"], 730).unwrap();
        assert!(l.complete_frame(frame(0), None, 730).unwrap());
        assert_eq!(l.due_rechecks(740, 86_400, 10).unwrap(), vec![0], "due again once delivered");
        assert_eq!(l.stage_recheck(frame(0), &[rec("late", 5_000)], &[600], 740).unwrap(), Some(1));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 99), Some(99));
        assert_eq!(percentile(&mut [7], 99), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }
}
