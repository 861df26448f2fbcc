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

use serde::Serialize;

use crate::delivery::DeadReason;
use crate::frames::Epoch;

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

/// What `add` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Added {
    pub added: i64,
    /// Matching records already acknowledged or dead-lettered: nothing to set aside.
    pub not_pending: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::ledger::testing::{frame, ledger};
    use crate::model::{DeadLetter, FrameState, StagedRecord};

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
        l.stage_frame(frame(start), &records, &[], start).unwrap();
        l.mark_sending(start, uids.len() as i64 - 1, &[], start).unwrap();
        l.dead_letter(start, &letter(uids[0], DeadReason::Rejected, Some(400)), start).unwrap();
        l.acknowledge(start, &uids[1..], start).unwrap();
        if complete {
            assert!(l.complete_frame(frame(start), None, start).unwrap());
        }
    }

    fn count(l: &Ledger, sql: &str) -> i64 {
        l.value(sql)
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
        l.stage_frame(frame(60), &[], &[], 60).unwrap();
        l.acknowledge(60, &["a"], 60).unwrap();
        let retried = l.retry_dead_letters(&only("a"), 100).unwrap();
        assert_eq!(retried, Retried { staged: 0, already_delivered: 1, frames_reopened: 0 });
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
        assert_eq!(count(&l, "SELECT COUNT(*) FROM staged"), 0, "a delivered frame has no staged records");
    }

    #[test]
    fn the_dead_letters_total_counts_every_one_written_and_neither_retry_nor_drop_lowers_it() {
        let (_dir, mut l) = ledger();
        let figures = |l: &Ledger| {
            let f = l.metric_figures().unwrap();
            (f.dead_letters, f.dead_letters_written)
        };
        deliver_with_a_dead_letter(&mut l, 0, &["a", "b"], false);
        deliver_with_a_dead_letter(&mut l, 60, &["c", "d"], false);
        assert_eq!(figures(&l), (2.0, 2.0));
        l.drop_dead_letters(&only("a")).unwrap();
        assert_eq!(figures(&l), (1.0, 2.0), "a drop lowers the gauge, not the total");
        l.retry_dead_letters(&only("c"), 100).unwrap();
        assert_eq!(figures(&l), (0.0, 2.0), "a retry lowers the gauge, not the total");
        l.dead_letter_by_hand("c", None, "by hand", 200).unwrap();
        assert_eq!(figures(&l), (1.0, 3.0), "one set aside by hand is counted too");
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
        l.stage_frame(frame(120), &[], &[letter("e", DeadReason::Invalid, None)], 120).unwrap();
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
