//! A window's units go to the RS with up to the in-flight limit ([`super::limit`]) in flight at
//! once ([`super::dispatch`]), and their answers are acted on here, on the job's thread, in the
//! order the units were formed — never in the order they arrived — with the same logic as one
//! request ([`super::send`]). Acknowledgements are recorded in groups as they come, while later
//! requests are in flight; no ledger transaction waits on them.
//!
//! Every key of the window is in the ledger before its first request goes (`mark_sending`,
//! `sent_through`, or a split's `set_keys`), so a crash leaves each record in flight of unknown
//! fate: looked up, or sent again under the same key. An answer that stops pushing (Broken, a
//! Retry-After, two failures in a row) or the end of the run's time starts no more requests;
//! the answers to those in flight are still acted on: each acknowledgement among them is
//! recorded (an ack the RS gave is never dropped), anything else waits as unknown fate for a
//! later run.

use anyhow::Result;

use super::Job;
use super::dispatch::{Flow, Request, Sent};
use super::outgoing::Unit;
use crate::delivery::Key;
use crate::frames::Frame;
use crate::sink::{Outgoing, Verdict};

impl Job<'_> {
    /// Sends the units (each with its frame), up to the in-flight limit at once, until they
    /// are done, pushing stops, or the run is out of time. Returns the frame of the first unit
    /// whose answer was not acted on in full before a stop — it and the frames after it are
    /// not done — or None when every answer was.
    pub(super) fn send_in_flight(&mut self, units: Vec<(Frame, Unit)>) -> Result<Option<Frame>> {
        let frames: Vec<Frame> = units.iter().map(|(frame, _)| *frame).collect();
        if units.is_empty() || self.pushing.stopped || self.out_of_time() {
            return Ok(frames.first().copied());
        }
        // A full or older group is recorded before the requests (which may take long).
        self.record_acks_if_due()?;
        let outgoing: Vec<Vec<Outgoing>> =
            units.iter().map(|(_, u)| u.items.iter().map(|i| i.outgoing.clone()).collect()).collect();
        let keys: Vec<Key> = units.iter().map(|(_, u)| u.key.clone()).collect();
        let requests: Vec<Request> =
            outgoing.iter().zip(&keys).map(|(records, key)| Request { records, key }).collect();
        let mut units: Vec<Option<Unit>> = units.into_iter().map(|(_, unit)| Some(unit)).collect();
        let (sink, limit) = (self.sink, self.limit.current());
        // The job's threads are taken out while they send, for the answers are acted on with
        // the job borrowed whole; they are put back with what they learnt of the RS.
        let threads = std::mem::take(&mut self.threads);
        let dispatch = self.dispatch.unwrap_or(&threads);
        // The units acted on in full, in order, before pushing stopped.
        let mut done = 0;
        let sent = dispatch.send(sink, &requests, limit, &mut |i, sent| {
            let unit = units[i].take().expect("each answer is handed over once");
            let flow = self.act_on(frames[i], unit, sent);
            if !self.pushing.stopped {
                done = i + 1;
            }
            flow
        });
        self.threads = threads;
        sent?;
        Ok(frames.get(done).copied())
    }

    /// Acts on one answer and says how to go on.
    fn act_on(&mut self, frame: Frame, unit: Unit, sent: Sent) -> Result<Flow> {
        self.tell_limit(&sent);
        if self.pushing.stopped {
            self.answered_after_stop(frame, unit, sent.verdict)?;
        } else {
            self.answered(frame, unit, sent.verdict, 0)?;
        }
        if self.pushing.stopped || self.out_of_time() {
            return Ok(Flow::Stop);
        }
        self.record_acks_if_due()?;
        Ok(Flow::Go(self.limit.current()))
    }

    /// An answer in flight when pushing stopped: an acknowledgement is recorded; anything else
    /// leaves the records where they are (unknown fate, within `sent_through`, their keys kept)
    /// for a later run, which looks them up or sends them again under the same keys.
    fn answered_after_stop(&mut self, frame: Frame, unit: Unit, verdict: Verdict) -> Result<()> {
        match verdict {
            Verdict::Acknowledged => self.acknowledge_unit(frame, unit),
            _ => Ok(()),
        }
    }
}
