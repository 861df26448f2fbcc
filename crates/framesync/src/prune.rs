//! Retention: once a frame and its delivery are older than `run.retain`, the ledger no longer
//! needs its delivered UIDs nor its frame row; runs and late-record rows older than that go too. `framesync prune`
//! and the end of every `run` delete them in transactions of at most [`BATCH_ROWS`] rows, so a
//! big prune never holds the write lock for long and a kill loses at most one batch's work.
//!
//! Never pruned:
//! - `delivered_spans`: the planner and `missing_ranges` read them, so a pruned frame stays
//!   delivered and never looks missing;
//! - frames inside the re-check window (`next_recheck` set): a re-check must know every UID the
//!   frame delivered, or it would send them again;
//! - the row (not the UIDs) of a frame with dead letters: `dead-letters retry` returns the
//!   record to that frame, which then pushes only the retried record;
//! - frames not yet delivered, their staged records, and dead letters (a person decides);
//! - the newest run and the newest successful run of each command (the metrics read them).
//!
//! What the deleted rows counted is added to the `pruned` table in the same transaction, so the
//! totals built on them (the `totals` view, the metrics' counters) never go down.

use std::time::Duration;

use anyhow::Result;

use crate::clock::Clock;
use crate::config::Config;
use crate::frames::Epoch;
use crate::ledger::Ledger;
use crate::model::Pruned;
use crate::plural::plural;

/// Rows deleted per transaction at most.
pub const BATCH_ROWS: i64 = 10_000;

/// Prunes everything older than `now - retain`, batch after batch, until nothing is left or
/// `out_of_time` says so (at least one batch runs, so a busy pipeline still makes progress).
pub fn prune(ledger: &mut Ledger, retain: i64, now: Epoch, out_of_time: &dyn Fn() -> bool) -> Result<Pruned> {
    let cutoff = now - retain;
    let mut total = Pruned::default();
    loop {
        let batch = ledger.prune_batch(cutoff, now, BATCH_ROWS)?;
        total.add(&batch);
        if batch.finished || out_of_time() {
            return Ok(total);
        }
    }
}

/// The automatic prune at the end of a `run`: until the run's deadline (`run.max_seconds` after
/// `started`, on the clock's `elapsed`), and at least one batch, so a pipeline that always uses
/// its whole budget still prunes.
pub fn after_run(config: &Config, ledger: &mut Ledger, clock: &dyn Clock, started: Duration) -> Result<Pruned> {
    let deadline = started + config.run.max_seconds;
    let pruned = prune(ledger, config.run.retain, clock.now(), &|| clock.elapsed() >= deadline)?;
    if pruned.rows() > 0 {
        log::info!(
            "pruned {}, {}, {} and {} older than run.retain{}",
            plural(pruned.uids, "delivered UID"),
            plural(pruned.frames, "frame row"),
            plural(pruned.runs, "run"),
            plural(pruned.late_records, "late-record row"),
            if pruned.finished { "" } else { " (more are left for the next run)" }
        );
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::RunFigures;
    use crate::ledger::testing::{frame, ledger};
    use crate::model::{DeadLetter, Kept, StagedRecord};

    const DAY: i64 = 86_400;
    const T0: Epoch = 1_700_000_040; // a frame boundary

    /// Stages and delivers a frame at its own time, with `n` acknowledged records.
    fn deliver(l: &mut Ledger, start: Epoch, n: usize, recheck: Option<Epoch>) {
        let records: Vec<_> =
            (0..n).map(|i| StagedRecord { uid: format!("{start}-{i}"), ts_ms: None, body: "{}".into() }).collect();
        l.stage_frame(frame(start), &records, &[], start).unwrap();
        let uids: Vec<String> = records.iter().map(|r| r.uid.clone()).collect();
        l.acknowledge(start, &uids.iter().map(String::as_str).collect::<Vec<_>>(), start).unwrap();
        assert!(l.complete_frame(frame(start), recheck, start).unwrap());
    }

    fn count(l: &Ledger, sql: &str) -> i64 {
        l.value(sql)
    }

    #[test]
    fn old_delivered_frames_lose_their_uids_and_rows_but_stay_delivered() {
        let (_dir, mut l) = ledger();
        for m in 0..10 {
            deliver(&mut l, T0 + m * 60, 3, None);
        }
        let now = T0 + 40 * DAY;
        let pruned = prune(&mut l, 30 * DAY, now, &|| false).unwrap();
        assert_eq!((pruned.uids, pruned.frames, pruned.finished), (30, 10, true));
        assert_eq!(count(&l, "SELECT COUNT(*) FROM delivered"), 0);
        assert_eq!(count(&l, "SELECT COUNT(*) FROM frames"), 0);
        assert_eq!(l.delivered_spans(i64::MIN, i64::MAX).unwrap(), vec![(T0, T0 + 600)], "spans are never pruned");
        assert_eq!(count(&l, "SELECT uids FROM pruned"), 30);
    }

    #[test]
    fn frames_in_the_recheck_window_or_recently_delivered_are_kept_and_dead_letters_keep_their_frame_row() {
        let (_dir, mut l) = ledger();
        deliver(&mut l, T0, 2, Some(T0 + 60 * DAY)); // still to be re-checked
        deliver(&mut l, T0 + 60, 2, None);
        let letter = DeadLetter {
            uid: "bad".into(),
            reason: crate::delivery::DeadReason::Rejected,
            status: Some(400),
            response: None,
            detail: "HTTP 400".into(),
            body: "{}".into(),
            key: None,
            attempts: 0,
        };
        l.dead_letter(T0 + 60, &letter, T0).unwrap();
        l.stage_frame(frame(T0 + 120), &[], &[], T0 + 35 * DAY).unwrap();
        l.complete_frame(frame(T0 + 120), None, T0 + 35 * DAY).unwrap(); // delivered late, by a backfill
        deliver(&mut l, T0 + 180, 1, None);
        let pruned = prune(&mut l, 30 * DAY, T0 + 40 * DAY, &|| false).unwrap();
        assert_eq!((pruned.frames, pruned.uids), (1, 3), "the plain old frame, and the UIDs of the dead-lettered one");
        let kept = l.kept(T0 + 10 * DAY).unwrap();
        assert_eq!(kept, Kept { awaiting_recheck: 1, with_dead_letters: 1, not_delivered: 0 });
        assert_eq!(count(&l, "SELECT COUNT(*) FROM delivered"), 2, "the frame awaiting a re-check keeps its UIDs");
        assert_eq!(count(&l, "SELECT COUNT(*) FROM frames"), 3);
        let again = prune(&mut l, 30 * DAY, T0 + 40 * DAY, &|| false).unwrap();
        assert_eq!(
            (again.rows(), again.transactions),
            (0, 1),
            "a frame kept for its dead letters is not looked at again"
        );
    }

    #[test]
    fn a_batch_never_deletes_more_than_its_limit_and_resumes_where_it_stopped() {
        let (_dir, mut l) = ledger();
        for m in 0..5 {
            deliver(&mut l, T0 + m * 60, 4, None);
        }
        let now = T0 + 40 * DAY;
        let mut batches = Vec::new();
        loop {
            let batch = l.prune_batch(now - 30 * DAY, now, 3).unwrap();
            assert!(batch.rows() <= 3, "{batch:?}");
            batches.push(batch.rows());
            if batch.finished {
                break;
            }
        }
        assert_eq!(batches.iter().sum::<i64>(), 25, "20 UIDs and 5 frame rows: {batches:?}");
        assert_eq!(count(&l, "SELECT COUNT(*) FROM frames"), 0);
    }

    #[test]
    fn old_runs_go_but_their_pushed_records_still_count_and_the_newest_runs_stay() {
        let (_dir, mut l) = ledger();
        for (i, code) in [0, 0, 1].into_iter().enumerate() {
            let id = l.begin_run("run", T0 + i as i64).unwrap();
            let figures = RunFigures { records_pushed: 10, ..RunFigures::default() };
            l.end_run(id, &figures, code, None, T0 + i as i64).unwrap();
        }
        let before = count(&l, "SELECT records_pushed FROM totals");
        let pruned = prune(&mut l, 30 * DAY, T0 + 40 * DAY, &|| false).unwrap();
        assert_eq!(pruned.runs, 1, "the newest run (exit 1) and the newest success stay");
        assert_eq!(count(&l, "SELECT records_pushed FROM totals"), before);
        assert_eq!(count(&l, "SELECT runs FROM totals"), 3);
    }
}
