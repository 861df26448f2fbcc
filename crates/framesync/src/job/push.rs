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
//! - Acknowledgements are recorded in groups (`sink.ack_group`, `sink.ack_group_time`); a crash
//!   loses the group's acknowledgements, not its records: they are within `sent_through`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;

use super::Job;
use super::lookup::Trust;
use crate::config::SinkMode;
use crate::delivery::{DeadReason, Key};
use crate::frames::{Epoch, Frame};
use crate::model::{DeadLetter, Pending};
use crate::servers::Server;
use crate::sink::{Outgoing, Verdict, batch_key};

/// Records read from the ledger at a time are a window of about this many (whole units).
const SEND_WINDOW: usize = 256;
/// Units failing in a row (retry later, no Retry-After) that stop the pushes of a run: one is
/// a record the RS cannot take, two are an RS that is failing.
const FAILURES_TO_STOP: u32 = 2;

/// The push half's state within a run.
#[derive(Debug, Default)]
pub(super) struct Pushing {
    /// No more pushes this run.
    pub stopped: bool,
    acks: AckGroup,
    pub trust: Trust,
    pub probes: u32,
    /// Units that failed this run and were skipped; counted against their records at the end
    /// of the run where the RS is seen taking others (`settle_failed_sends`).
    failed: Vec<FailedUnit>,
    /// Requests the RS acknowledged this run.
    acked: u32,
    /// The RS acknowledged a unit this run that it had failed before.
    recovered: bool,
    failed_in_a_row: u32,
    /// How the last records were refused, and how many in a row.
    refused_in_a_row: (String, u32),
    warned_mode: bool,
}

/// Acknowledged records not yet recorded in the ledger: one transaction per group of at most
/// `sink.ack_group` records or `sink.ack_group_time`, instead of one per request. A crash loses
/// the group's acknowledgements, not its records: they lie within the frame's `sent_through`,
/// so the next run looks them up (where the RS has a lookup) or re-sends them with the same keys.
#[derive(Debug, Default)]
struct AckGroup {
    frame: Epoch,
    uids: Vec<String>,
    /// When the first of them was acknowledged, on the clock's `elapsed`.
    since: Option<Duration>,
}

/// A staged record ready to go: as staged, and as the RS receives it.
#[derive(Debug)]
struct Item {
    pending: Pending,
    outgoing: Outgoing,
}

/// One request's worth: its records and the key they go under.
#[derive(Debug)]
struct Unit {
    items: Vec<Item>,
    key: Key,
    /// A new batch, never sent: its key is written with `sent_through` before it goes.
    fresh: bool,
}

/// A unit the RS failed this run (retry later), skipped for the run.
#[derive(Debug)]
struct FailedUnit {
    frame: Frame,
    items: Vec<Item>,
    key: Key,
    reason: String,
    /// The RS answered with this status (no status: a timeout or a connection error, after
    /// which the RS may have stored the records).
    status: Option<u16>,
}

impl FailedUnit {
    fn seqs(&self) -> Vec<i64> {
        self.items.iter().map(|i| i.pending.seq).collect()
    }
}

impl Job<'_> {
    /// Pushes a staged frame's pending records; delivers the frame when none is left. Records
    /// that failed are left for a later run: the frame waits for its backoff.
    pub(super) fn push(&mut self, frame: Frame) -> Result<()> {
        let failed_before = self.pushing.failed.len();
        let sent = self.send_pending(frame);
        if !matches!(sent, Ok(true)) {
            // Whatever stopped the sending, what the RS acknowledged is recorded.
            let recorded = self.record_acks();
            sent?;
            return recorded;
        }
        // The last group and the frame's delivery: one transaction.
        if self.pushing.acks.frame != frame.start {
            self.record_acks()?;
        }
        let now = self.clock.now();
        let uids = std::mem::take(&mut self.pushing.acks.uids);
        self.pushing.acks.since = None;
        let last: Vec<&str> = uids.iter().map(String::as_str).collect();
        let delivered = self.ledger.acknowledge_and_complete(frame, &last, self.first_recheck(now), now)?;
        self.outcome.figures.records_pushed += last.len() as i64;
        if delivered {
            crate::hooks::kill_point("after-complete");
            log::info!("frame {frame}: delivered");
            self.outcome.figures.frames_delivered += 1;
        } else if let Some(failed) = self.pushing.failed[failed_before..].last() {
            let (reason, count) = (failed.reason.clone(), self.pushing.failed.len() - failed_before);
            let next = self.next_attempt(frame, None)?;
            self.ledger.push_failed(frame.start, &self.config.secrets.scrub(&reason), next, now)?;
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
            for unit in units {
                if self.pushing.stopped || self.out_of_time() {
                    return Ok(false);
                }
                self.send_unit(frame, unit)?;
            }
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
    /// "absent": the present ones are acknowledged without sending, and those absent from a
    /// batch whose others are present leave it (they go under a new key). Without a usable
    /// lookup they go again under their keys. None when the lookup failed: pushing stops.
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
        let (mut present, mut left) = (Vec::new(), Vec::with_capacity(pending.len()));
        for record in pending {
            if !record.unknown {
                left.push(record);
                continue;
            }
            match self.sink.lookup(&record.uid) {
                Ok(true) => present.push(record),
                Ok(false) => left.push(record),
                Err(reason) => {
                    self.acknowledge_present(frame, &present)?;
                    self.stop_pushing(frame, reason, None)?;
                    return Ok(None);
                }
            }
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

    fn acknowledge_present(&mut self, frame: Frame, present: &[Pending]) -> Result<()> {
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
        let config = self.config;
        let mut items = Vec::with_capacity(pending.len());
        for record in pending {
            let Some(mapping) = &config.sink.map else {
                let outgoing = Outgoing { uid: record.uid.clone(), body: record.body.clone() };
                items.push(Item { pending: record, outgoing });
                continue;
            };
            let mapped = serde_json::from_str(&record.body)
                .map_err(|e| format!("the staged record is not JSON: {e}"))
                .and_then(|value| mapping.apply(&value).map_err(|why| why.to_string()));
            match mapped {
                Ok(value) => {
                    let outgoing = Outgoing { uid: record.uid.clone(), body: value.to_string() };
                    items.push(Item { pending: record, outgoing });
                }
                Err(why) => {
                    let mut letter = DeadLetter::invalid(record.uid.clone(), format!("sink.map: {why}"), record.body);
                    (letter.key, letter.attempts) = (record.key, record.attempts);
                    let added = self.ledger.dead_letter(frame.start, &letter, self.clock.now())?;
                    self.dead_lettered(DeadReason::Invalid, added);
                    log::info!("frame {frame}: record {:?} dead-lettered: sink.map: {why}", record.uid);
                    if !self.refused(frame, "sink.map cannot fill them")? {
                        break;
                    }
                }
            }
        }
        Ok(items)
    }

    /// Groups records into requests: one each in record mode; in batch mode, records already
    /// sent go again in their batch (or alone, if they were sent alone), and the others form
    /// new batches of up to `sink.batch_size`, in order.
    fn form_units(&mut self, items: Vec<Item>) -> Vec<Unit> {
        let batches = self.sink.mode() == SinkMode::Batch && self.sink.batch_size() > 1;
        if !batches {
            if !self.pushing.warned_mode && items.iter().any(|i| i.pending.key.as_ref().is_some_and(Key::is_batch)) {
                self.pushing.warned_mode = true;
                log::warn!(
                    "records sent in batches before sink.mode changed are sent one by one under their own keys; an RS that stored their batch may store them twice"
                );
            }
            return items.into_iter().map(|item| Unit { items: vec![item], key: Key::Own, fresh: false }).collect();
        }
        let size = self.sink.batch_size();
        let mut units: Vec<Unit> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut run: Vec<Item> = Vec::new();
        for item in items {
            match item.pending.key.clone() {
                None => run.push(item),
                Some(key) => {
                    new_batches(&mut run, size, &mut units);
                    match key {
                        Key::Batch(k) if by_key.contains_key(&k) => units[by_key[&k]].items.push(item),
                        Key::Batch(k) => {
                            by_key.insert(k.clone(), units.len());
                            units.push(Unit { items: vec![item], key: Key::Batch(k), fresh: false });
                        }
                        Key::Own => units.push(Unit { items: vec![item], key: Key::Own, fresh: false }),
                    }
                }
            }
        }
        new_batches(&mut run, size, &mut units);
        units
    }

    /// Sends one unit and acts on the answer.
    fn send_unit(&mut self, frame: Frame, unit: Unit) -> Result<()> {
        // A full or older group is recorded before a request (which may take long).
        self.record_acks_if_due()?;
        let outgoing: Vec<Outgoing> = unit.items.iter().map(|i| i.outgoing.clone()).collect();
        match self.send_with_retries(&outgoing, &unit.key)? {
            Verdict::Acknowledged => {
                crate::hooks::kill_point("after-ack");
                self.pushing.acked += 1;
                self.pushing.recovered |= unit.items.iter().any(|i| i.pending.failed_before);
                self.pushing.failed_in_a_row = 0;
                self.pushing.refused_in_a_row = (String::new(), 0);
                self.acknowledged(frame, outgoing.into_iter().map(|o| o.uid))
            }
            Verdict::Rejected { status, response } if unit.items.len() == 1 => {
                let item = unit.items.into_iter().next().expect("one item");
                self.reject(frame, item, unit.key, status, response)
            }
            Verdict::Rejected { status, .. } => {
                // One bad record must not sink its batch: the RS stored none of it, so each
                // record goes alone, under its own key, to find the bad one.
                log::info!(
                    "frame {frame}: a batch of {} was refused (HTTP {status}); its records go one by one",
                    outgoing.len()
                );
                self.split(frame, unit.items, 1)
            }
            Verdict::TooLarge { .. } if unit.items.len() > 1 => {
                let half = unit.items.len().div_ceil(2);
                log::info!(
                    "frame {frame}: a batch of {} was too large (HTTP 413); sending it in halves",
                    outgoing.len()
                );
                self.split(frame, unit.items, half)
            }
            Verdict::TooLarge { response } => {
                let item = unit.items.into_iter().next().expect("one item");
                self.reject(frame, item, unit.key, 413, response)
            }
            Verdict::Broken { reason } => {
                self.doubt_lookup();
                self.stop_pushing(frame, format!("{reason} (the RS or the config is wrong, not a record)"), None)
            }
            Verdict::RetryLater { reason, retry_after, status } => {
                self.doubt_lookup();
                if retry_after.is_some() {
                    return self.stop_pushing(frame, reason, retry_after);
                }
                self.pushing.failed_in_a_row += 1;
                let stop = self.pushing.failed_in_a_row >= FAILURES_TO_STOP;
                let uids: Vec<&str> = unit.items.iter().map(|i| i.pending.uid.as_str()).collect();
                log::warn!("frame {frame}: the RS failed {uids:?}: {reason}");
                self.pushing.failed.push(FailedUnit {
                    frame,
                    items: unit.items,
                    key: unit.key,
                    reason: reason.clone(),
                    status,
                });
                if stop { self.stop_pushing(frame, format!("{reason} (twice in a row)"), None) } else { Ok(()) }
            }
        }
    }

    /// Sends records again in pieces of `size` under new keys (one record: its own), written
    /// to the ledger before any is sent.
    fn split(&mut self, frame: Frame, items: Vec<Item>, size: usize) -> Result<()> {
        let mut pieces: Vec<Vec<Item>> = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            pieces.push(items.by_ref().take(size).collect());
        }
        let keyed: Vec<(Vec<Item>, Key)> = pieces
            .into_iter()
            .map(|piece| {
                let key = key_of(&piece);
                (piece, key)
            })
            .collect();
        let keys: Vec<(i64, Option<Key>)> =
            keyed.iter().flat_map(|(piece, key)| piece.iter().map(|i| (i.pending.seq, Some(key.clone())))).collect();
        self.ledger.set_keys(frame.start, &keys)?;
        for (items, key) in keyed {
            if self.pushing.stopped {
                break;
            }
            self.send_unit(frame, Unit { items, key, fresh: false })?;
        }
        Ok(())
    }

    /// The RS refused a record for good: it becomes a dead letter and the frame goes on.
    fn reject(&mut self, frame: Frame, item: Item, key: Key, status: u16, response: String) -> Result<()> {
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
    fn refused(&mut self, frame: Frame, how: &str) -> Result<bool> {
        let (last, count) = &mut self.pushing.refused_in_a_row;
        if last != how {
            (*last, *count) = (how.to_owned(), 0);
        }
        *count += 1;
        let count = *count;
        if count < self.config.sink.max_rejected_in_a_row {
            return Ok(true);
        }
        self.stop_pushing(
            frame,
            format!(
                "{count} records in a row were refused ({how}) and dead-lettered: the RS or sink.map is probably wrong, not every record (sink.max_rejected_in_a_row)"
            ),
            None,
        )?;
        Ok(false)
    }

    /// Sends, retrying a retryable failure a few times within the run with a short pause. Not
    /// when the RS asked for a longer quiet than the pause: then the run leaves it alone.
    fn send_with_retries(&mut self, outgoing: &[Outgoing], key: &Key) -> Result<Verdict> {
        let mut attempt = 0;
        loop {
            let verdict = self.sink.send(outgoing, key);
            let Verdict::RetryLater { retry_after, .. } = &verdict else { return Ok(verdict) };
            let pause = Duration::from_millis(200 << attempt.min(6));
            if attempt >= self.config.sink.retries || retry_after.is_some_and(|d| d > pause) || self.out_of_time() {
                return Ok(verdict);
            }
            self.clock.sleep(pause);
            attempt += 1;
            // The failed request may have been processed: where the RS can say so, ask first.
            self.doubt_lookup();
            match self.lookup_usable()? {
                Ok(true) => {
                    let answers: Vec<_> = outgoing.iter().map(|o| self.sink.lookup(&o.uid)).collect();
                    if answers.iter().all(|a| *a == Ok(true)) {
                        return Ok(Verdict::Acknowledged);
                    }
                    if answers.iter().any(|a| *a != Ok(false)) {
                        // Partly stored, or the lookup failed: the next run looks each record up.
                        return Ok(verdict);
                    }
                }
                // No lookup, or one that cannot say "absent": sent again under the same key.
                Ok(false) => {}
                // The lookup could not be asked: not sent again blind; the next run asks.
                Err(_) => return Ok(verdict),
            }
        }
    }

    /// The RS (or the config) failed in a way that stops the pushes of the run: the frame keeps
    /// its progress and waits (backoff, or the RS's Retry-After, remembered across runs).
    fn stop_pushing(&mut self, frame: Frame, reason: String, retry_after: Option<Duration>) -> Result<()> {
        self.record_acks()?;
        if let Some(wait) = retry_after {
            self.set_quiet(Server::Sink, wait, &reason)?;
        }
        let reason = self.config.secrets.scrub(&reason);
        let next = self.next_attempt(frame, retry_after)?;
        self.ledger.push_failed(frame.start, &reason, next, self.clock.now())?;
        self.fail(frame, format!("{reason}; no more pushes this run"));
        self.pushing.stopped = true;
        Ok(())
    }

    /// Holds acknowledged records for the next group commit.
    fn acknowledged(&mut self, frame: Frame, uids: impl Iterator<Item = String>) -> Result<()> {
        if self.pushing.acks.frame != frame.start {
            self.record_acks()?;
            self.pushing.acks.frame = frame.start;
        }
        let now = self.clock.elapsed();
        self.pushing.acks.since.get_or_insert(now);
        self.pushing.acks.uids.extend(uids);
        Ok(())
    }

    /// Records the group if it is full or old enough: before each request, so the frame's last
    /// group waits for the frame's delivery and is recorded with it.
    fn record_acks_if_due(&mut self) -> Result<()> {
        let acks = &self.pushing.acks;
        let full = acks.uids.len() >= self.config.sink.ack_group;
        let old = acks.since.is_some_and(|since| self.clock.elapsed() >= since + self.config.sink.ack_group_time);
        if full || old { self.record_acks() } else { Ok(()) }
    }

    /// Records the group's UIDs as delivered, in one transaction.
    pub(super) fn record_acks(&mut self) -> Result<()> {
        if self.pushing.acks.uids.is_empty() {
            return Ok(());
        }
        let uids: Vec<&str> = self.pushing.acks.uids.iter().map(String::as_str).collect();
        self.ledger.acknowledge(self.pushing.acks.frame, &uids, self.clock.now())?;
        self.outcome.figures.records_pushed += uids.len() as i64;
        self.pushing.acks.uids.clear();
        self.pushing.acks.since = None;
        Ok(())
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
        let acked = self.pushing.acked as usize;
        let recovered = std::mem::take(&mut self.pushing.recovered);
        let failed = std::mem::take(&mut self.pushing.failed);
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
            let reason = self.config.secrets.scrub(&unit.reason);
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
                "the RS failed it {attempts} times (sink.max_attempts) while acknowledging other records; last: {reason}"
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
                "frame {frame}: batch {} failed {attempts} times ({reason}); its records go one by one",
                key.to_sql()
            );
            let alone: Vec<(i64, Option<Key>)> = items.iter().map(|i| (i.pending.seq, Some(Key::Own))).collect();
            return self.ledger.set_keys(frame.start, &alone);
        }
        let detail = format!(
            "its batch {} failed {attempts} times (sink.max_attempts) without an answer while the RS acknowledged other records; the RS may have stored it, so its records are not sent under other keys: `dead-letters retry` sends the batch again under its key; last: {reason}",
            key.to_sql()
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

/// The key of a piece of records about to go for the first time: a batch's hash, or a single
/// record's own.
fn key_of(items: &[Item]) -> Key {
    match items {
        [_] => Key::Own,
        _ => Key::Batch(batch_key(&items.iter().map(|i| i.outgoing.clone()).collect::<Vec<_>>())),
    }
}

/// Turns a run of never-sent records into new batches of up to `size`.
fn new_batches(run: &mut Vec<Item>, size: usize, units: &mut Vec<Unit>) {
    let mut rest = std::mem::take(run).into_iter().peekable();
    while rest.peek().is_some() {
        let items: Vec<Item> = rest.by_ref().take(size).collect();
        let key = key_of(&items);
        units.push(Unit { items, key, fresh: true });
    }
}
