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
//! mapped; the requests go up to the in-flight limit at once ([`super::wave`]), in windows
//! that run on into the next staged frames where a frame ends within them; one request and
//! its answer are in [`super::send`], and which records are to blame in [`super::blame`].

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

/// A frame whose pending records are being read, a window at a time.
struct Reading {
    frame: Frame,
    /// The last record read.
    after: i64,
    /// Records read ahead of their window, as members of a batch begun in an earlier one.
    taken: HashSet<i64>,
}

/// What reading a frame's next records gave.
enum Read {
    /// Requests to send, in order.
    Units(Vec<Unit>),
    /// Nothing left to read: once its requests are answered, the frame is done.
    End,
    /// Pushing stopped while the records were prepared.
    Stopped,
    /// Records of unknown fate come next, and the window holds requests already: they go
    /// first, and the records are read again to start the next window. A lookup that fails
    /// stops the pushes, and must not hold back requests already made ready: each window's
    /// lookups are then those of one frame, at most, as if frames went one at a time.
    Later,
}

impl Reading {
    fn new(frame: Frame) -> Self {
        Reading { frame, after: -1, taken: HashSet::new() }
    }
}

impl Job<'_> {
    /// Pushes staged frames' pending records, in order; delivers each frame when none of its
    /// records is left. Records that failed are left for a later run: their frame waits for
    /// its backoff.
    ///
    /// The requests go a window at a time, up to the in-flight limit at once, and a window
    /// takes in the next frames' records where a frame ends within it: the RS keeps the
    /// limit's worth of requests in flight across frames of a few records, instead of
    /// waiting for each frame's last answers before the next frame's first request. A frame
    /// is done only once every request of its records has been answered.
    pub(super) fn push(&mut self, frames: &[Frame]) -> Result<()> {
        let unit = self.sink.batch_size().max(1);
        let window = SEND_WINDOW.div_ceil(unit) * unit;
        let mut frames = frames.iter().copied();
        let mut reading = frames.next().map(Reading::new);
        while reading.is_some() {
            if self.pushing.stopped || self.out_of_time() {
                break;
            }
            // The window: (frame, unit) in order, and the frames read to their end in it.
            let (mut units, mut ended): (Vec<(Frame, Unit)>, Vec<Frame>) = (Vec::new(), Vec::new());
            let mut records = 0;
            while let Some(r) = reading.as_mut()
                && records < window
            {
                match self.read_window(r, window - records, units.is_empty())? {
                    Read::Units(read) => {
                        records += read.iter().map(|u| u.items.len()).sum::<usize>();
                        units.extend(read.into_iter().map(|u| (r.frame, u)));
                    }
                    Read::End => {
                        ended.push(r.frame);
                        reading = frames.next().map(Reading::new);
                    }
                    Read::Stopped | Read::Later => break,
                }
            }
            // A frame is done when its requests were all answered before any stop: the frames
            // before the one whose answers were cut short (the frames ended in the window come
            // in order, and the cut one, if any, is among them or still being read).
            let cut = self.send_in_flight(units)?;
            for frame in ended {
                if cut.is_some_and(|cut| cut.start == frame.start) {
                    break;
                }
                self.frame_pushed(frame)?;
            }
        }
        // Whatever stopped the sending, what the RS acknowledged is recorded.
        self.record_acks()
    }

    /// Delivers a frame whose records were all sent and answered, or, when some failed,
    /// records its failure: it waits for its backoff.
    fn frame_pushed(&mut self, frame: Frame) -> Result<()> {
        let now = self.clock.now();
        if self.record_last_acks(frame, now)? {
            crate::hooks::kill_point("after-complete");
            log::info!("frame {frame}: delivered");
            self.outcome.figures.frames_delivered += 1;
            return Ok(());
        }
        let failed: Vec<&str> =
            self.pushing.evidence.failed.iter().filter(|f| f.frame == frame).map(|f| f.reason.as_str()).collect();
        if let Some(reason) = failed.last().map(|r| r.to_string()) {
            let count = failed.len();
            let next = self.next_attempt(frame, None)?;
            self.ledger.push_failed(frame.start, &reason, next, now)?;
            self.fail(frame, format!("{count} request(s) failed, the rest went on: {reason}; tried again later"));
        }
        Ok(())
    }

    /// Reads a frame's next pending records, up to about `room`, and makes them requests:
    /// batches completed, unknown fates looked up, the mapping applied, and every key in the
    /// ledger before any request goes. `first`: nothing is in the window yet.
    fn read_window(&mut self, r: &mut Reading, room: usize, first: bool) -> Result<Read> {
        let frame = r.frame;
        let unit = self.sink.batch_size().max(1);
        let room = room.div_ceil(unit) * unit;
        let (mut pending, sent_through) = self.ledger.pending_after(frame.start, r.after, room as i64)?;
        let Some(last) = pending.last().map(|p| p.seq) else { return Ok(Read::End) };
        if !first && self.sink.has_lookup() && pending.iter().any(|p| p.unknown) {
            return Ok(Read::Later);
        }
        r.after = last;
        pending.retain(|p| !r.taken.contains(&p.seq));
        self.complete_batches(frame, &mut pending, last, &mut r.taken)?;
        let Some(pending) = self.resolve_unknown(frame, pending)? else { return Ok(Read::Stopped) };
        let items = self.map(frame, pending)?;
        if self.pushing.stopped {
            return Ok(Read::Stopped); // the mapping refused too many in a row
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
        Ok(Read::Units(units))
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
