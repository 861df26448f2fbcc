//! One request to the RS and what its answer does to its records: acknowledged, refused
//! (dead-lettered, or a batch split to find the bad record), too large (split in halves), a
//! sign that the RS or the config is wrong (pushing stops), a failure to try again — a few
//! times within the run with a short pause, then later runs — or a result per record
//! ([`super::items`]).

use std::time::Duration;

use anyhow::Result;

use super::Job;
use super::backoff;
use super::blame::FailedUnit;
use super::dispatch;
use super::outgoing::{self, Item, Unit};
use crate::delivery::Key;
use crate::frames::Frame;
use crate::sink::{Outgoing, Verdict};

/// Units failing in a row (retry later, no Retry-After) that stop the pushes of a run: one is
/// a record the RS cannot take, two are an RS that is failing.
const FAILURES_TO_STOP: u32 = 2;

/// The longest Retry-After waited out within a run; a longer one stops the pushes of the run,
/// and the RS is left alone until it is over.
pub const SHORT_QUIET: Duration = Duration::from_secs(5);

impl Job<'_> {
    /// Sends one unit and acts on the answer.
    pub(super) fn send_unit(&mut self, frame: Frame, unit: Unit) -> Result<()> {
        self.send_unit_try(frame, unit, 0)
    }

    /// `send_unit` for records a per-item answer sent back `tries` times within this run.
    pub(super) fn send_unit_try(&mut self, frame: Frame, unit: Unit, tries: u32) -> Result<()> {
        // A full or older group is recorded before a request (which may take long).
        self.record_acks_if_due()?;
        let outgoing: Vec<Outgoing> = unit.items.iter().map(|i| i.outgoing.clone()).collect();
        let first = self.send_one(&outgoing, &unit.key);
        self.answered(frame, unit, first, tries)
    }

    /// Acts on the first answer to a unit's request: retried within the run where that is
    /// allowed, then acknowledged, refused, split, or counted as failed.
    pub(super) fn answered(&mut self, frame: Frame, unit: Unit, first: Verdict, tries: u32) -> Result<()> {
        self.pushing.sent_before_quiet = self.pushing.sent_before_quiet.saturating_sub(1);
        match self.send_with_retries(&unit, first)? {
            Verdict::Acknowledged => self.acknowledge_unit(frame, unit),
            Verdict::Rejected { status, response } if unit.items.len() == 1 => {
                let item = unit.items.into_iter().next().expect("one item");
                self.reject(frame, item, unit.key, status, response)
            }
            Verdict::Rejected { status, .. } => {
                // One bad record must not sink its batch: the RS stored none of it, so each
                // record goes alone, under its own key, to find the bad one.
                log::info!(
                    "frame {frame}: a batch of {} was refused (HTTP {status}); its records go one by one",
                    unit.items.len()
                );
                self.split(frame, unit.items, 1)
            }
            Verdict::TooLarge { .. } if unit.items.len() > 1 => {
                let half = unit.items.len().div_ceil(2);
                log::info!(
                    "frame {frame}: a batch of {} was too large (HTTP 413); sending it in halves",
                    unit.items.len()
                );
                self.split(frame, unit.items, half)
            }
            Verdict::TooLarge { response } => {
                let item = unit.items.into_iter().next().expect("one item");
                self.reject(frame, item, unit.key, 413, response)
            }
            Verdict::PerItem(verdicts) => self.per_item(frame, unit, verdicts, tries),
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
                log::info!("frame {frame}: the RS failed {uids:?}: {reason}");
                self.pushing.evidence.failed.push(FailedUnit {
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

    /// Records an acknowledged unit: held for the next group commit.
    pub(super) fn acknowledge_unit(&mut self, frame: Frame, unit: Unit) -> Result<()> {
        crate::hooks::kill_point("after-ack");
        self.pushing.evidence.acknowledged(unit.items.iter().any(|i| i.pending.failed_before));
        self.pushing.failed_in_a_row = 0;
        self.pushing.refused.clear();
        self.acknowledged(frame, unit.items.into_iter().map(|i| i.outgoing.uid))
    }

    /// One request on this thread, its answer told to the in-flight limit.
    fn send_one(&mut self, records: &[Outgoing], key: &Key) -> Verdict {
        let sent = dispatch::send_timed(self.sink, dispatch::Request { records, key });
        self.tell_limit(&sent);
        sent.verdict
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
                let key = outgoing::key_of(&piece);
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

    /// Sends, retrying a retryable failure a few times within the run with a short pause, or
    /// after the RS's Retry-After where that is short ([`Job::wait_in_run`]).
    fn send_with_retries(&mut self, unit: &Unit, first: Verdict) -> Result<Verdict> {
        if !matches!(first, Verdict::RetryLater { .. }) {
            return Ok(first);
        }
        let outgoing: Vec<Outgoing> = unit.items.iter().map(|i| i.outgoing.clone()).collect();
        let (outgoing, key) = (outgoing.as_slice(), &unit.key);
        let mut attempt = 0;
        let mut first = Some(first);
        loop {
            let verdict = match first.take() {
                Some(verdict) => verdict,
                None => self.send_one(outgoing, key),
            };
            let Verdict::RetryLater { retry_after, .. } = &verdict else { return Ok(verdict) };
            if attempt >= self.config.sink.retries || self.out_of_time() {
                return Ok(verdict);
            }
            let Some(wait) = self.wait_in_run(attempt, *retry_after) else { return Ok(verdict) };
            self.clock.sleep(wait);
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

    /// How long to wait before a failed request goes again within the run: its attempt's
    /// pause, or the RS's Retry-After where it asked for longer — when that is at most
    /// [`SHORT_QUIET`] and ends within the run's time; None leaves the record to a later run
    /// (and the Retry-After stops the pushes of this one). An overloaded RS answers the other
    /// requests in flight the same way: their quiet is the one already waited out, as they
    /// were sent before it ended — no more than `sink.concurrency` answers after a quiet can
    /// be such — so a burst of answers costs one quiet, not one each, and each goes again at
    /// once: their retries follow one another on this thread, and a pause each would cost a
    /// burst of 64 thirteen seconds with nothing in flight.
    fn wait_in_run(&mut self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let pause = backoff::retry_pause(attempt);
        let Some(asked) = retry_after.filter(|asked| *asked > pause) else { return Some(pause) };
        if self.pushing.sent_before_quiet > 0 {
            return Some(if attempt == 0 { Duration::ZERO } else { pause });
        }
        let fits = self.deadline.is_none_or(|deadline| self.clock.elapsed() + asked < deadline);
        if asked > SHORT_QUIET || !fits {
            return None;
        }
        log::info!("the RS asked for {}s of quiet; pushes go on after it", asked.as_secs_f64());
        self.pushing.sent_before_quiet = self.config.sink.in_flight().max(1);
        Some(asked)
    }
}
