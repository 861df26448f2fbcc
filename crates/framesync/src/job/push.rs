//! The push half of a run: a staged frame's pending records go to the RS in units — one record,
//! or one batch under its key — and every answer is classified (`sink::Verdict`).
//!
//! - **Keys.** A record is re-sent only under the key it was first sent under: the keys of new
//!   batches are written to the ledger with `sent_through` before they are sent, and a batch is
//!   re-sent whole (its members are gathered even across windows). Only an answer that says
//!   the batch was not stored — a refusal (4xx) or 413 — sends its records under new keys.
//! - **Unknown fate.** Records that may have reached the RS (a crash, a lost answer) are looked
//!   up first where the RS has a lookup that can say "absent" ([`super::lookup`]).
//! - **A record that keeps failing** (5xx, timeouts) is skipped for the run and the next
//!   records go on; only two failures in a row stop the pushes of the run. When the RS
//!   acknowledged at least as many requests as it failed in the same run, the failure counts
//!   against the record, and after `sink.max_attempts` it is dead-lettered with the reason.
//! - **An RS or config that is wrong** (a redirect, 401, 404, …) fails the frame and stops the
//!   pushes of the run; it never dead-letters a record. `sink.max_rejected_in_a_row` refusals in
//!   a row stop them too.
//! - Acknowledgements are recorded in groups ([`super::acks`]).
//!
//! Here a frame's pending records are read, completed into their batches, looked up and
//! mapped; the requests go in waves of up to the in-flight limit ([`super::wave`]), one
//! request and its answer are in [`super::send`], and which records are to blame in
//! [`super::blame`].

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::Result;

use super::Job;
use super::acks::Acks;
use super::blame::{Evidence, Refusals};
use super::lookup::Lookups;
use super::outgoing::{self, Item, Unit};
use crate::delivery::{DeadReason, Key};
use crate::frames::Frame;
use crate::model::{DeadLetter, Pending};
use crate::servers::Server;

/// Records read from the ledger at a time are a window of about this many (whole units).
const SEND_WINDOW: usize = 256;

/// The push half's state within a run.
#[derive(Debug, Default)]
pub(super) struct Pushing {
    /// No more pushes this run.
    pub stopped: bool,
    pub acks: Acks,
    pub lookups: Lookups,
    pub evidence: Evidence,
    /// Units the RS failed in a row (retry later, no Retry-After).
    pub failed_in_a_row: u32,
    pub refused: Refusals,
    /// Said once a run: records once sent in batches now go one by one.
    warned_mode: bool,
    /// The RS answered a request this run: the in-flight limit it left is worth keeping.
    pub answered: bool,
    /// Answers still to come to requests sent before the last quiet within the run ended.
    pub sent_before_quiet: usize,
}

impl Job<'_> {
    /// Pushes a staged frame's pending records; delivers the frame when none is left. Records
    /// that failed are left for a later run: the frame waits for its backoff.
    pub(super) fn push(&mut self, frame: Frame) -> Result<()> {
        let failed_before = self.pushing.evidence.failed.len();
        let sent = self.send_pending(frame);
        if !matches!(sent, Ok(true)) {
            // Whatever stopped the sending, what the RS acknowledged is recorded.
            let recorded = self.record_acks();
            sent?;
            return recorded;
        }
        let now = self.clock.now();
        if self.record_last_acks(frame, now)? {
            crate::hooks::kill_point("after-complete");
            log::info!("frame {frame}: delivered");
            self.outcome.figures.frames_delivered += 1;
        } else if let Some(last) = self.pushing.evidence.failed[failed_before..].last() {
            let (reason, count) = (last.reason.clone(), self.pushing.evidence.failed.len() - failed_before);
            let next = self.next_attempt(frame, None)?;
            self.ledger.push_failed(frame.start, &reason, next, now)?;
            self.fail(frame, format!("{count} request(s) failed, the rest went on: {reason}; tried again later"));
        }
        Ok(())
    }

    /// Sends the frame's pending records a window at a time; false when pushing stopped (the
    /// RS failed, or the run is out of time).
    fn send_pending(&mut self, frame: Frame) -> Result<bool> {
        let unit = self.sink.batch_size().max(1);
        let window = (SEND_WINDOW.div_ceil(unit) * unit) as i64;
        let mut after = -1;
        // Records read ahead of their window, as members of a batch begun in an earlier one.
        let mut taken = HashSet::new();
        loop {
            if self.pushing.stopped || self.out_of_time() {
                return Ok(false);
            }
            let (mut pending, sent_through) = self.ledger.pending_after(frame.start, after, window)?;
            let Some(last) = pending.last().map(|p| p.seq) else { return Ok(true) };
            after = last;
            pending.retain(|p| !taken.contains(&p.seq));
            self.complete_batches(frame, &mut pending, last, &mut taken)?;
            let Some(pending) = self.resolve_unknown(frame, pending)? else { return Ok(false) };
            let items = self.map(frame, pending)?;
            if self.pushing.stopped {
                return Ok(false); // the mapping refused too many in a row
            }
            let units = self.form_units(items);
            let fresh: Vec<(i64, i64, Key)> = units
                .iter()
                .filter(|u| u.fresh)
                .map(|u| (u.items[0].pending.seq, u.items[u.items.len() - 1].pending.seq, u.key.clone()))
                .collect();
            let top = units.iter().flat_map(|u| u.items.iter().map(|i| i.pending.seq)).max();
            if let Some(top) = top
                && (top > sent_through || !fresh.is_empty())
            {
                self.ledger.mark_sending(frame.start, top, &fresh, self.clock.now())?;
                crate::hooks::kill_point("after-mark-sending");
            }
            self.send_in_flight(frame, units)?;
        }
    }

    /// Adds the members of the batches begun in a window that lie after it, so a batch is
    /// always re-sent whole under its key.
    fn complete_batches(
        &mut self,
        frame: Frame,
        pending: &mut Vec<Pending>,
        last: i64,
        taken: &mut HashSet<i64>,
    ) -> Result<()> {
        let keys: BTreeSet<Key> = pending.iter().filter_map(|p| p.key.clone()).filter(Key::is_batch).collect();
        for key in keys {
            for member in self.ledger.pending_in_batch(frame.start, last, &key)? {
                taken.insert(member.seq);
                pending.push(member);
            }
        }
        pending.sort_by_key(|p| p.seq);
        Ok(())
    }

    /// Looks up the records whose fate is unknown, where the RS has a lookup that can say
    /// "absent" (many a request where it takes batched lookups): the present ones are
    /// acknowledged without sending, and those absent from a batch whose others are present
    /// leave it (they go under a new key). Without a usable lookup they go again under their
    /// keys. None when the lookup failed: pushing stops.
    fn resolve_unknown(&mut self, frame: Frame, pending: Vec<Pending>) -> Result<Option<Vec<Pending>>> {
        if !pending.iter().any(|p| p.unknown) {
            return Ok(Some(pending));
        }
        match self.lookup_usable()? {
            Ok(true) => {}
            Ok(false) => return Ok(Some(pending)),
            Err(reason) => {
                self.stop_pushing(frame, reason, None)?;
                return Ok(None);
            }
        }
        let (answers, failure) = {
            let unknown: Vec<&str> = pending.iter().filter(|p| p.unknown).map(|p| p.uid.as_str()).collect();
            self.look_up(&unknown)
        };
        let mut answers = answers.into_iter();
        let (mut present, mut left) = (Vec::new(), Vec::with_capacity(pending.len()));
        for record in pending {
            if !record.unknown {
                left.push(record);
                continue;
            }
            match answers.next() {
                Some(true) => present.push(record),
                Some(false) => left.push(record),
                None => break,
            }
        }
        if let Some(reason) = failure {
            self.acknowledge_present(frame, &present)?;
            self.stop_pushing(frame, reason, None)?;
            return Ok(None);
        }
        self.acknowledge_present(frame, &present)?;
        let split: BTreeSet<&Key> = present.iter().filter_map(|p| p.key.as_ref()).filter(|k| k.is_batch()).collect();
        let mut leave = Vec::new();
        for record in left.iter_mut().filter(|p| p.key.as_ref().is_some_and(|k| split.contains(k))) {
            record.key = None;
            leave.push((record.seq, None));
        }
        if !leave.is_empty() {
            self.ledger.set_keys(frame.start, &leave)?;
        }
        Ok(Some(left))
    }

    pub(super) fn acknowledge_present(&mut self, frame: Frame, present: &[Pending]) -> Result<()> {
        if present.is_empty() {
            return Ok(());
        }
        let uids: Vec<&str> = present.iter().map(|p| p.uid.as_str()).collect();
        self.ledger.acknowledge(frame.start, &uids, self.clock.now())?;
        self.outcome.figures.records_pushed += uids.len() as i64;
        Ok(())
    }

    /// Applies the mapping; records it cannot satisfy are dead-lettered, never sent.
    fn map(&mut self, frame: Frame, pending: Vec<Pending>) -> Result<Vec<Item>> {
        let map = self.config.sink.map.as_ref();
        let mut items = Vec::with_capacity(pending.len());
        for record in pending {
            let why = match outgoing::outgoing(map, &record.uid, &record.body) {
                Ok(outgoing) => {
                    items.push(Item { pending: record, outgoing });
                    continue;
                }
                Err(why) => why,
            };
            let mut letter = DeadLetter::invalid(record.uid.clone(), format!("sink.map: {why}"), record.body);
            (letter.key, letter.attempts) = (record.key, record.attempts);
            let added = self.ledger.dead_letter(frame.start, &letter, self.clock.now())?;
            self.dead_lettered(DeadReason::Invalid, added);
            log::info!("frame {frame}: record {:?} dead-lettered: sink.map: {why}", record.uid);
            if !self.refused(frame, "sink.map cannot fill them")? {
                break;
            }
        }
        Ok(items)
    }

    /// Groups records into requests (`outgoing::form_units`), in batches where `sink.batch_size`
    /// allows.
    fn form_units(&mut self, items: Vec<Item>) -> Vec<Unit> {
        let size = self.sink.batch_size();
        if size <= 1
            && !self.pushing.warned_mode
            && items.iter().any(|i| i.pending.key.as_ref().is_some_and(Key::is_batch))
        {
            self.pushing.warned_mode = true;
            log::warn!(
                "records sent in batches before sink.mode changed are sent one by one under their own keys; an RS that stored their batch may store them twice"
            );
        }
        outgoing::form_units(items, size)
    }

    /// The RS (or the config) failed in a way that stops the pushes of the run: the frame keeps
    /// its progress and waits (backoff, or the RS's Retry-After, remembered across runs).
    pub(super) fn stop_pushing(&mut self, frame: Frame, reason: String, retry_after: Option<Duration>) -> Result<()> {
        self.record_acks()?;
        if let Some(wait) = retry_after {
            self.set_quiet(Server::Sink, wait, &reason)?;
        }
        let next = self.next_attempt(frame, retry_after)?;
        self.ledger.push_failed(frame.start, &reason, next, self.clock.now())?;
        self.fail(frame, format!("{reason}; no more pushes this run"));
        self.pushing.stopped = true;
        Ok(())
    }
}
