//! Re-checks and late data: a delivered frame is pulled again on a decaying schedule after its
//! first delivery (`frames.recheck`), and only records whose UID the ledger has not seen are
//! staged and pushed. Each such late record is remembered, so `status` can say how late the SS
//! really is.

use crate::frames::Epoch;

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

impl LateFigures {
    /// The figures of late records as `(frame, ts_ms, first_pulled_at, found_at)`, for frames
    /// of `size` seconds.
    pub fn of(size: i64, rows: &[(Epoch, Option<i64>, Epoch, Epoch)]) -> Self {
        let mut lateness: Vec<i64> =
            rows.iter().filter_map(|(_, ts, _, found)| ts.map(|t| found - t.div_euclid(1000))).collect();
        let mut at_least: Vec<i64> = rows.iter().map(|(frame, _, first, _)| first - (frame + size)).collect();
        let mut at_most: Vec<i64> = rows.iter().map(|(frame, _, _, found)| found - (frame + size)).collect();
        LateFigures {
            late_records: rows.len() as i64,
            lateness_p50: percentile(&mut lateness, 50),
            lateness_p99: percentile(&mut lateness, 99),
            delay_needed_at_least: percentile(&mut at_least, 99),
            delay_needed_at_most: percentile(&mut at_most, 99),
        }
    }
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
    use crate::ledger::testing::frame;
    use crate::ledger::{Ledger, Synchronous};
    use crate::model::{FrameState, StagedRecord};

    fn rec(uid: &str, ts_ms: i64) -> StagedRecord {
        StagedRecord { uid: uid.into(), ts_ms: Some(ts_ms), body: format!("{{\"id\":\"{uid}\"}}") }
    }

    fn delivered_ledger(uids: &[&str]) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        l.sync_pipeline(60, 0, 60, 0).unwrap();
        let records: Vec<_> = uids.iter().map(|u| rec(u, 1_000)).collect();
        l.stage_frame(frame(0), &records, &[], 120).unwrap();
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
        let next: Option<i64> = l.value("SELECT next_recheck FROM frames");
        assert_eq!(next, Some(120 + 6000), "the schedule counts from the first delivery, not this one");
        let figures = l.late_figures(0).unwrap();
        assert_eq!(figures.late_records, 1);
        assert_eq!(figures.lateness_p50, Some(720 - 30));
        assert_eq!(figures.delay_needed_at_least, Some(120 - 60), "first pulled 60s after the frame closed");
        assert_eq!(figures.delay_needed_at_most, Some(720 - 60), "found 660s after the frame closed");
    }

    #[test]
    fn a_recheck_that_finds_nothing_new_only_moves_the_schedule() {
        let (_dir, l) = delivered_ledger(&["a"]);
        assert_eq!(l.stage_recheck(frame(0), &[rec("a", 1_000)], &[600], 720).unwrap(), Some(0));
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
        assert!(l.due_rechecks(i64::MAX, 86_400, 10).unwrap().is_empty(), "the last re-check is done");
        let staged: i64 = l.value("SELECT COUNT(*) FROM staged");
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
