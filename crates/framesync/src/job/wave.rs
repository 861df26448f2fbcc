//! A window's units go to the RS in waves of up to the in-flight limit ([`super::limit`]):
//! the requests of a wave are in flight together ([`super::dispatch`]), and their answers are
//! acted on here, on the job's thread, in the order the units were formed — never in the
//! order they arrived — with the same logic as one request ([`super::send`]).
//!
//! Every key of a wave is in the ledger before the wave goes (`mark_sending`, `sent_through`,
//! or a split's `set_keys`), so a crash mid-wave leaves each of its records of unknown fate:
//! looked up, or sent again under the same key. An answer that stops pushing (Broken, a
//! Retry-After, two failures in a row) stops the next waves; the answers to the rest of its
//! wave are in already: each acknowledgement among them is recorded (an ack the RS gave is
//! never dropped), anything else waits as unknown fate for a later run.

use anyhow::Result;

use super::Job;
use super::dispatch::Request;
use super::outgoing::Unit;
use crate::frames::Frame;
use crate::sink::{Outgoing, Verdict};

impl Job<'_> {
    /// Sends the units in waves until they are done, pushing stops, or the run is out of time.
    pub(super) fn send_waves(&mut self, frame: Frame, units: Vec<Unit>) -> Result<()> {
        let mut units = units.into_iter().peekable();
        while units.peek().is_some() {
            if self.pushing.stopped || self.out_of_time() {
                return Ok(());
            }
            // A full or older group is recorded before a wave (which may take long).
            self.record_acks_if_due()?;
            let wave: Vec<Unit> = units.by_ref().take(self.limit.current().max(1)).collect();
            self.send_wave(frame, wave)?;
        }
        Ok(())
    }

    fn send_wave(&mut self, frame: Frame, wave: Vec<Unit>) -> Result<()> {
        let outgoing: Vec<Vec<Outgoing>> =
            wave.iter().map(|u| u.items.iter().map(|i| i.outgoing.clone()).collect()).collect();
        let requests: Vec<Request> =
            wave.iter().zip(&outgoing).map(|(unit, records)| Request { records, key: &unit.key }).collect();
        let sent = self.dispatch.send(self.sink, &requests);
        assert_eq!(sent.len(), wave.len(), "a dispatch answers every request of its wave");
        for (unit, sent) in wave.into_iter().zip(sent) {
            self.tell_limit(&sent);
            if self.pushing.stopped {
                self.answered_after_stop(frame, unit, sent.verdict)?;
            } else {
                self.answered(frame, unit, sent.verdict, 0)?;
            }
        }
        Ok(())
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
