//! Which records are to blame for what the RS does, and what becomes of them.
//!
//! - **A refusal** (`sink.reject`, 413 for one record) dead-letters the record at once;
//!   `sink.max_rejected_in_a_row` refusals of the same kind in a row stop the pushes of the run
//!   instead (the RS or `sink.map` is wrong, not every record).
//! - **A failure** (5xx, timeouts) is settled at the end of the run, on the evidence of what
//!   the RS took and failed: only an RS seen taking other records blames the record, and after
//!   `sink.max_attempts` such failures it is dead-lettered (a batch first goes one by one).

use std::collections::BTreeSet;

use anyhow::Result;

use super::Job;
use super::outgoing::Item;
use crate::delivery::{DeadReason, Key};
use crate::frames::Frame;
use crate::model::DeadLetter;
use crate::plural::plural;

/// What this run saw the RS take and fail: what the units it failed are blamed on.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    /// Units that failed this run and were skipped; counted against their records at the end
    /// of the run where the RS is seen taking others (`settle_failed_sends`).
    pub failed: Vec<FailedUnit>,
    /// Requests the RS acknowledged this run.
    acked: u32,
    /// The RS acknowledged a unit this run that it had failed before.
    recovered: bool,
}

impl Evidence {
    /// The RS acknowledged a request; `failed_before`: one of its records had failed before.
    pub fn acknowledged(&mut self, failed_before: bool) {
        self.acked += 1;
        self.recovered |= failed_before;
    }
}

/// A unit the RS failed this run (retry later), skipped for the run.
#[derive(Debug)]
pub(super) struct FailedUnit {
    pub frame: Frame,
    pub items: Vec<Item>,
    pub key: Key,
    pub reason: String,
    /// The RS answered with this status (no status: a timeout or a connection error, after
    /// which the RS may have stored the records).
    pub status: Option<u16>,
}

impl FailedUnit {
    fn seqs(&self) -> Vec<i64> {
        self.items.iter().map(|i| i.pending.seq).collect()
    }
}

/// How the last records were refused, and how many in a row.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    how: String,
    count: u32,
}

impl Refusals {
    /// Counts a refusal of kind `how`: the refusals of that kind in a row, this one included.
    fn count(&mut self, how: &str) -> u32 {
        if self.how != how {
            (self.how, self.count) = (how.to_owned(), 0);
        }
        self.count += 1;
        self.count
    }

    /// A record went through: the next refusal is the first in a row.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Job<'_> {
    /// The RS refused a record for good: it becomes a dead letter and the frame goes on.
    pub(super) fn reject(&mut self, frame: Frame, item: Item, key: Key, status: u16, response: String) -> Result<()> {
        let record = item.pending;
        let letter = DeadLetter {
            uid: record.uid.clone(),
            reason: DeadReason::Rejected,
            status: Some(status),
            response: Some(response.clone()),
            detail: format!("the RS answered HTTP {status}"),
            body: record.body,
            key: Some(key),
            attempts: record.attempts,
        };
        let added = self.ledger.dead_letter(frame.start, &letter, self.clock.now())?;
        crate::hooks::kill_point("after-dead-letter");
        self.dead_lettered(DeadReason::Rejected, added);
        self.pushing.failed_in_a_row = 0;
        log::info!("frame {frame}: record {:?} dead-lettered: HTTP {status}: {response}", record.uid);
        self.refused(frame, &format!("HTTP {status}")).map(|_| ())
    }

    /// Counts a refusal; `sink.max_rejected_in_a_row` of the same kind in a row stop the pushes
    /// of the run (the RS or the mapping is wrong, not every record). False when they did.
    pub(super) fn refused(&mut self, frame: Frame, how: &str) -> Result<bool> {
        let count = self.pushing.refused.count(how);
        if count < self.config.sink.max_rejected_in_a_row {
            return Ok(true);
        }
        self.stop_pushing(
            frame,
            format!(
                "{} in a row were refused ({how}) and dead-lettered: the RS or sink.map is probably wrong, not every record (sink.max_rejected_in_a_row)",
                plural(count, "record")
            ),
            None,
        )?;
        Ok(false)
    }

    /// At the end of the run, the units the RS failed count against their records — only while
    /// the RS is seen taking other records: it acknowledged at least as many requests as it
    /// failed in this run; or, for a unit that failed before, since that failure the RS took
    /// other requests, failed nothing sent for the first time and took nothing it had failed
    /// before (it takes what is new and keeps failing the same records: a quiet feed, or
    /// several bad records tried in one run). An RS that fails everything is down, one that
    /// fails new records too or lets failed ones through later is degraded, and no record is
    /// to blame; a first failure alone proves nothing, so an RS that goes down after its last
    /// acknowledgement blames no record however often the runs retry it. A record that reached
    /// `sink.max_attempts` is dead-lettered.
    pub(super) fn settle_failed_sends(&mut self) -> Result<()> {
        let now = self.clock.now();
        let Evidence { failed, acked, recovered } = std::mem::take(&mut self.pushing.evidence);
        let acked = acked as usize;
        let mut previous = Vec::with_capacity(failed.len());
        for unit in &failed {
            previous.push(self.ledger.last_failed_send(unit.frame.start, &unit.seqs())?);
        }
        let newcomer_failed = previous.iter().any(Option::is_none);
        self.ledger.sink_evidence(now, acked > 0, recovered, newcomer_failed)?;
        let majority = acked > 0 && acked >= failed.len();
        let mut exhausted = BTreeSet::new();
        for (unit, previous) in failed.into_iter().zip(previous) {
            let blame = majority
                || match previous {
                    Some(before) => self.ledger.sink_fails_only_the_same(before, now)?,
                    None => false,
                };
            if !blame {
                self.ledger.note_failed_send(unit.frame.start, &unit.seqs(), now)?;
                continue;
            }
            let reason = unit.reason.clone();
            let attempts = self.ledger.count_failed_send(unit.frame.start, &unit.seqs(), &reason, now)?;
            let most = attempts.into_iter().max().unwrap_or(0);
            if most >= i64::from(self.config.sink.max_attempts) {
                exhausted.insert(unit.frame);
                self.exhaust(unit, most)?;
            }
        }
        // A frame whose last records were just dead-lettered is delivered without them.
        for frame in exhausted {
            if self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
                log::info!("frame {frame}: delivered");
                self.outcome.figures.frames_delivered += 1;
            }
        }
        Ok(())
    }

    /// A unit the RS failed `sink.max_attempts` times while acknowledging others. One record is
    /// dead-lettered. A batch's records go one by one next time, to find the one the RS fails —
    /// where that cannot double a record: the lookup says which are absent, or the RS answered
    /// each time (an RS that honors keys and had stored the batch would have replayed its
    /// success). Otherwise (timeouts: it may have stored it) the batch is dead-lettered whole,
    /// under its key.
    fn exhaust(&mut self, unit: FailedUnit, attempts: i64) -> Result<()> {
        let FailedUnit { frame, items, key, reason, status } = unit;
        if items.len() == 1 || !key.is_batch() {
            let detail = format!(
                "the RS failed it {} (sink.max_attempts) while acknowledging other records; last: {reason}",
                plural(attempts, "time")
            );
            return self.dead_letter_exhausted(frame, items, key, status, detail, attempts);
        }
        let usable = self.lookup_usable()?;
        if usable == Ok(true) {
            let mut present = Vec::new();
            let mut alone = Vec::new();
            for item in items {
                match self.sink.lookup(&item.pending.uid) {
                    Ok(true) => present.push(item.pending),
                    Ok(false) => alone.push((item.pending.seq, Some(Key::Own))),
                    Err(_) => return Ok(()), // the RS is failing now: the next run decides
                }
            }
            self.acknowledge_present(frame, &present)?;
            return self.ledger.set_keys(frame.start, &alone);
        }
        if status.is_some() {
            log::info!(
                "frame {frame}: batch {} failed {} ({reason}); its records go one by one",
                key.to_sql(),
                plural(attempts, "time")
            );
            let alone: Vec<(i64, Option<Key>)> = items.iter().map(|i| (i.pending.seq, Some(Key::Own))).collect();
            return self.ledger.set_keys(frame.start, &alone);
        }
        let detail = format!(
            "its batch {} failed {} (sink.max_attempts) without an answer while the RS acknowledged other records; the RS may have stored it, so its records are not sent under other keys: `dead-letters retry` sends the batch again under its key; last: {reason}",
            key.to_sql(),
            plural(attempts, "time")
        );
        self.dead_letter_exhausted(frame, items, key, status, detail, attempts)
    }

    fn dead_letter_exhausted(
        &mut self,
        frame: Frame,
        items: Vec<Item>,
        key: Key,
        status: Option<u16>,
        detail: String,
        attempts: i64,
    ) -> Result<()> {
        let letters: Vec<DeadLetter> = items
            .into_iter()
            .map(|item| DeadLetter {
                uid: item.pending.uid,
                reason: DeadReason::Exhausted,
                status,
                response: None,
                detail: detail.clone(),
                body: item.pending.body,
                key: Some(key.clone()),
                attempts,
            })
            .collect();
        log::info!("frame {frame}: {} record(s) dead-lettered: {detail}", letters.len());
        let added = self.ledger.dead_letter_all(frame.start, &letters, self.clock.now())?;
        self.dead_lettered(DeadReason::Exhausted, added);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_in_a_row_of_one_kind() {
        let mut refusals = Refusals::default();
        let counts: Vec<u32> =
            ["HTTP 400", "HTTP 400", "HTTP 422", "HTTP 422", "HTTP 422"].iter().map(|h| refusals.count(h)).collect();
        assert_eq!(counts, [1, 2, 1, 2, 3], "another kind starts again");
        refusals.clear();
        assert_eq!(refusals.count("HTTP 422"), 1, "a record that went through ends the row");
    }
}
