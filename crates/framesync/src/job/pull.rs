//! The pull half of a run: missing frames pulled and staged in one transaction each,
//! delivered frames re-checked for late records or pulled again for a redelivery. A frame the
//! SS's own clock says is still open waits; an SS that is busy, broken three frames in a row,
//! or slow stops the pulls of the run; failing re-checks back off on their own and never stop
//! the gap pulls.

use std::time::Duration;

use anyhow::Result;

use super::Job;
use crate::fetch;
use crate::frames::{Epoch, Frame, rfc3339};
use crate::ledger::Committed;
use crate::model::PullFailure;
use crate::recheck::RecheckFailure;
use crate::servers::{SKEW_WARNING, Server};
use crate::source::{PullError, Walked};

/// Failures in a row that stop the pulls (or the re-checks) of a run.
const FAILURES_TO_STOP: u32 = 3;

/// The pull half's state within a run.
#[derive(Debug, Default)]
pub(super) struct Pulling {
    /// No more pulls this run.
    pub stopped: bool,
    /// No more re-checks this run (they failed three in a row); gap pulls go on.
    pub rechecks_stopped: bool,
    failed_in_a_row: u32,
    rechecks_failed_in_a_row: u32,
    /// The SS's clock minus ours, from the first `Date` header of the run.
    skew: Option<i64>,
    /// Frames held back, and re-checks put off, because the SS's clock says they are too early.
    held_back: u32,
}

impl Job<'_> {
    /// Pulls and stages one missing frame; true when it is staged.
    pub(super) fn pull(&mut self, frame: Frame) -> Result<bool> {
        if let Some(why) = self.open_at_the_ss(frame) {
            // Learnt from an earlier answer of this run: no need to ask.
            let ss_now = self.pulling.skew.map(|skew| self.clock.now() + skew);
            self.hold_back(frame, why, ss_now)?;
            return Ok(false);
        }
        let now = self.clock.now();
        let started = self.clock.elapsed();
        let (result, committed) = self.pull_and_stage(frame, now)?;
        let result = match result {
            Err(PullError::Stopped) if self.out_of_time() => return self.pull_out_of_time(frame, started),
            other => other,
        };
        let Some(walked) = self.judge(frame, result)? else { return Ok(false) };
        let Some(Committed { staged, invalid }) = committed else { return Ok(false) };
        crate::hooks::kill_point("after-stage");
        log::info!("frame {frame}: pulled {staged} records in {} pages", walked.pages);
        let figures = &mut self.outcome.figures;
        figures.frames_pulled += 1;
        figures.records_pulled += staged;
        self.dead_lettered(crate::delivery::DeadReason::Invalid, invalid);
        if staged == 0 && self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
            self.outcome.figures.frames_delivered += 1;
        }
        Ok(true)
    }

    /// Reads a frame's pages into a staging as they arrive, stopping between pages when the
    /// run is out of time, and commits it only when the pull succeeded and the SS's clock
    /// agrees the frame is closed; otherwise it is discarded and the ledger is as it was.
    /// Returns the pull's result and, when committed, what was staged; an error only when the
    /// ledger failed.
    fn pull_and_stage(&mut self, frame: Frame, now: Epoch) -> Result<(Result<Walked, PullError>, Option<Committed>)> {
        let (clock, deadline) = (self.clock, self.deadline);
        let mut staging = self.ledger.staging(frame)?;
        let result =
            fetch::stage_pages(self.source, frame, &mut staging, || deadline.is_none_or(|d| clock.elapsed() < d))?;
        let committed = match &result {
            Ok(walked) if still_open(frame, self.config.frames.delay, walked.server_date, now).is_none() => {
                let forgotten_before = now - self.config.run.retain;
                Some(staging.commit_pull(walked.out_of_frame, Some(forgotten_before), now)?)
            }
            _ => None,
        };
        Ok((result, committed))
    }

    /// A walk through a frame's pages stopped at `run.max_seconds`: rolled back. Only a frame
    /// whose own pull took half the budget is a failure (it may never fit in a run); any other
    /// is left for the next run like the rest of the plan.
    fn pull_out_of_time(&mut self, frame: Frame, started: Duration) -> Result<bool> {
        let took = self.clock.elapsed().saturating_sub(started);
        if took * 2 < self.config.run.max_seconds {
            log::info!("frame {frame}: run.max_seconds reached while pulling it; the next run pulls it again");
            return Ok(false);
        }
        let message = format!(
            "pulling it took more than {}s, half of run.max_seconds, and was stopped: it may never fit in a run; raise run.max_seconds, use smaller frames, or pull it with `framesync backfill` (no time limit)",
            took.as_secs()
        );
        let next = self.next_attempt(frame, None)?;
        self.ledger.pull_failed(frame, &message, PullFailure::Passing, next, self.clock.now())?;
        self.fail(frame, message);
        Ok(false)
    }

    /// Pulls a delivered frame again and stages the records the ledger has not seen; true when
    /// there are some to push. A re-check that fails backs off on its own schedule and is given
    /// up after `run.max_recheck_attempts` (recorded on the frame); re-checks failing three in a
    /// row stop the re-checks of the run, never the gap pulls.
    pub(super) fn recheck(&mut self, frame: Frame) -> Result<bool> {
        if self.open_at_the_ss(frame).is_some() {
            return Ok(false);
        }
        let due = self.ledger.recheck_due_at(frame.start)?;
        let ss_now = self.pulling.skew.map(|skew| self.clock.now() + skew);
        if let Some(why) = recheck_too_early(due, ss_now, self.clock.now()) {
            // Learnt from an earlier answer of this run: no need to ask.
            return self.put_off_recheck(frame, why);
        }
        let now = self.clock.now();
        let mut staging = self.ledger.staging(frame)?;
        let walked = match fetch::stage_pages(self.source, frame, &mut staging, || true)? {
            Ok(walked) => walked,
            Err(error) => {
                drop(staging);
                return match error {
                    PullError::Busy { message, retry_after } => self.ss_busy(frame, "re-check: ", message, retry_after),
                    error @ PullError::Refused { .. } => self.recheck_failed(frame, error.to_string(), true),
                    error => self.recheck_failed(frame, error.to_string(), false),
                };
            }
        };
        let open = still_open(frame, self.config.frames.delay, walked.server_date, now);
        let too_early = recheck_too_early(due, walked.server_date, now);
        // With this machine's clock ahead of the SS's, the schedule goes on in the SS's time: a
        // clock far ahead would otherwise pass over every re-check still to come.
        let at = walked.server_date.map_or(now, |date| date.min(now));
        let committed = if open.is_none() && too_early.is_none() {
            staging.commit_recheck(&self.config.frames.recheck, at)?
        } else {
            drop(staging);
            None
        };
        self.learn_skew(walked.server_date)?;
        if let Some(why) = open {
            log::info!("frame {frame}: re-check put off: {why}");
            return Ok(false);
        }
        if let Some(why) = too_early {
            return self.put_off_recheck(frame, why);
        }
        self.pulling.rechecks_failed_in_a_row = 0;
        let Some(late) = committed else {
            return Ok(false);
        };
        crate::hooks::kill_point("after-stage");
        self.outcome.figures.frames_pulled += 1;
        self.outcome.figures.records_pulled += late as i64;
        if late > 0 {
            log::info!("frame {frame}: a re-check found {late} late records");
        }
        Ok(late > 0)
    }

    /// A re-check too early by the SS's clock stays due, as it was; the run reports the clocks.
    fn put_off_recheck(&mut self, frame: Frame, why: String) -> Result<bool> {
        log::info!("frame {frame}: re-check put off: {why}");
        self.pulling.held_back += 1;
        Ok(false)
    }

    /// A failed re-check backs off; one the SS refused (`refused`) counts toward the give-up,
    /// one that met an SS that is down or broken does not: it waits for the SS.
    fn recheck_failed(&mut self, frame: Frame, message: String, refused: bool) -> Result<bool> {
        let message = self.config.secrets.scrub(&message);
        let now = self.clock.now();
        let attempts = self.ledger.recheck_attempts(frame.start)?.clamp(0, 30) as u32;
        let next = now + self.backoff(attempts, None);
        let limit = self.config.run.max_recheck_attempts;
        let failure =
            self.ledger.recheck_failed(frame, &message, refused, next, limit, &self.config.frames.recheck, now)?;
        self.pulling.rechecks_failed_in_a_row += 1;
        let stop = self.pulling.rechecks_failed_in_a_row >= FAILURES_TO_STOP;
        self.pulling.rechecks_stopped |= stop;
        let what = match failure {
            RecheckFailure::Retried => format!("re-check: {message}; tried again at {}", rfc3339(next)),
            RecheckFailure::GaveUp => format!(
                "re-check: {message}; given up after the SS refused it {limit} times in a row (run.max_recheck_attempts): late records it would have found are not looked for"
            ),
        };
        let then = if stop { "; no more re-checks this run" } else { "" };
        self.fail(frame, format!("{what}{then}"));
        Ok(false)
    }

    /// Pulls a delivered frame again and stages every record for sending again; true when
    /// there are records to push. Their fate at the RS is unknown: where it has a lookup, they
    /// are looked up first and only those it lacks are sent, under the same keys.
    pub(super) fn redeliver(&mut self, frame: Frame) -> Result<bool> {
        let now = self.clock.now();
        let mut staging = self.ledger.staging(frame)?;
        let staged = match fetch::stage_pages(self.source, frame, &mut staging, || true)? {
            Ok(_) => staging.commit_redelivery(now)?,
            Err(error) => {
                drop(staging);
                return match error {
                    PullError::Busy { message, retry_after } => {
                        self.ss_busy(frame, "redelivery: ", message, retry_after)
                    }
                    error => {
                        self.fail(frame, format!("redelivery: {error}"));
                        Ok(false)
                    }
                };
            }
        };
        self.outcome.figures.frames_pulled += 1;
        self.outcome.figures.records_pulled += staged as i64;
        Ok(staged > 0)
    }

    /// What a pull's result means: the pulled frame, or a failure recorded on the frame (with
    /// backoff, or the SS's Retry-After) that stops the pulls of the run when the SS is busy or
    /// broken three frames in a row.
    fn judge(&mut self, frame: Frame, result: Result<Walked, PullError>) -> Result<Option<Walked>> {
        let message = match result {
            Ok(walked) => {
                self.pulling.failed_in_a_row = 0;
                self.learn_skew(walked.server_date)?;
                if let Some(why) = still_open(frame, self.config.frames.delay, walked.server_date, self.clock.now()) {
                    self.hold_back(frame, why, walked.server_date)?;
                    return Ok(None);
                }
                self.check_slow(walked.slowest);
                return Ok(Some(walked));
            }
            Err(PullError::Busy { message, retry_after }) => {
                self.ss_busy(frame, "", message, retry_after)?;
                return Ok(None);
            }
            // The SS refused this frame (a 4xx): it says nothing of the SS's health, so it
            // does not count toward stopping the pulls of the run.
            Err(error @ PullError::Refused { .. }) => return self.pull_refused(frame, error.to_string()),
            Err(error) => error.to_string(),
        };
        self.pulling.failed_in_a_row += 1;
        let message = self.config.secrets.scrub(&message);
        let next = self.next_attempt(frame, None)?;
        self.ledger.pull_failed(frame, &message, PullFailure::Passing, next, self.clock.now())?;
        if self.pulling.failed_in_a_row >= FAILURES_TO_STOP {
            self.pulling.stopped = true;
            self.fail(frame, format!("{message}; no more pulls this run"));
        } else {
            self.fail(frame, message);
        }
        Ok(None)
    }

    /// The SS refused a frame: it stays missing with the answer and backs off; the other
    /// frames go on.
    fn pull_refused(&mut self, frame: Frame, message: String) -> Result<Option<Walked>> {
        let message = self.config.secrets.scrub(&message);
        let next = self.next_attempt(frame, None)?;
        self.ledger.pull_failed(frame, &message, PullFailure::Refused, next, self.clock.now())?;
        self.fail(frame, message);
        Ok(None)
    }

    /// The SS asked for quiet (429, 503): remembered across runs, the frame waits, and pulling
    /// stops for this run.
    fn ss_busy(&mut self, frame: Frame, what: &str, message: String, retry_after: Option<Duration>) -> Result<bool> {
        if let Some(wait) = retry_after {
            self.set_quiet(Server::Source, wait, &message)?;
        }
        let message = self.config.secrets.scrub(&message);
        if what.is_empty() {
            let next = self.next_attempt(frame, retry_after)?;
            self.ledger.pull_failed(frame, &message, PullFailure::Passing, next, self.clock.now())?;
        }
        self.pulling.stopped = true;
        self.fail(frame, format!("{what}{message}; no more pulls this run"));
        Ok(false)
    }

    /// Keeps the SS clock's skew for `status` (once per run), and for planning what to ask.
    fn learn_skew(&mut self, server_date: Option<Epoch>) -> Result<()> {
        let Some(date) = server_date else { return Ok(()) };
        if self.pulling.skew.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let skew = date - now;
        self.pulling.skew = Some(skew);
        if skew.abs() > SKEW_WARNING {
            log::warn!(
                "the SS clock is {skew}s off this machine's clock; frames the SS says are still open wait for it"
            );
        }
        self.ledger.record_skew(Server::Source, skew, now)
    }

    /// Why a frame is still open at the SS, by its clock as learnt this run.
    fn open_at_the_ss(&self, frame: Frame) -> Option<String> {
        let ss_now = self.clock.now() + self.pulling.skew?;
        still_open(frame, self.config.frames.delay, Some(ss_now), self.clock.now())
    }

    /// A frame the SS's clock says is still open waits until that clock says it closed (at
    /// most `run.retry_max`), with the reason on its row; frames before it go on.
    fn hold_back(&mut self, frame: Frame, why: String, server_date: Option<Epoch>) -> Result<()> {
        self.pulling.held_back += 1;
        let now = self.clock.now();
        let open_for = server_date.map_or(0, |date| frame.end() + self.config.frames.delay - date);
        let until = now + open_for.clamp(1, self.config.run.retry_max);
        log::info!("frame {frame}: {why}");
        self.ledger.pull_waiting(frame, &why, until, now)
    }

    /// Frames that waited for the SS's clock are a failure of the run when the clocks differ by
    /// more than a few seconds: the operator has a clock to fix.
    pub(super) fn report_held_back(&mut self) {
        let (held, Some(skew)) = (self.pulling.held_back, self.pulling.skew) else { return };
        if held == 0 || skew.abs() <= SKEW_WARNING {
            return;
        }
        let line = format!(
            "this machine's clock is {}s {} the SS's (its Date header): {held} pull{} or re-check{} the SS's clock says {} too early wait{} for it; fix the clock that is wrong (NTP)",
            skew.abs(),
            if skew < 0 { "ahead of" } else { "behind" },
            if held == 1 { "" } else { "s" },
            if held == 1 { "" } else { "s" },
            if held == 1 { "is" } else { "are" },
            if held == 1 { "s" } else { "" },
        );
        log::error!("{line}");
        self.outcome.failures.push(line);
    }

    /// A page slower than `source.slow_after` means the SS is under load: this frame is kept,
    /// and pulling stops for the run so the SS can recover.
    fn check_slow(&mut self, slowest: Duration) {
        if let Some(limit) = self.config.source.slow_after
            && slowest > limit
        {
            log::warn!(
                "an SS page took {:.1}s (source.slow_after is {:.1}s); no more pulls this run",
                slowest.as_secs_f64(),
                limit.as_secs_f64()
            );
            self.pulling.stopped = true;
        }
    }

    pub(super) fn first_recheck(&self, now: Epoch) -> Option<Epoch> {
        self.config.frames.recheck.first().map(|after| now + after)
    }
}

/// Why a frame is still open by the SS's clock (`date`), if it is: staging it now would deliver
/// it before its records exist at the SS.
fn still_open(frame: Frame, delay: i64, date: Option<Epoch>, now: Epoch) -> Option<String> {
    let date = date?;
    (frame.end() + delay > date).then(|| {
        format!(
            "the SS clock says {} — too early for this frame (delay {delay}s); this machine's clock is {}s ahead of the SS, so it waits",
            rfc3339(date),
            now - date
        )
    })
}

/// Why a re-check due by this machine's clock (`now`) is not yet due by the SS's (`date`):
/// done now, it would look for late records before they had the time the schedule gives them,
/// and use up the schedule. A re-check set by a clock that has jumped back since (due after
/// now) is due whatever the clocks say.
fn recheck_too_early(due: Option<Epoch>, date: Option<Epoch>, now: Epoch) -> Option<String> {
    let (due, date) = (due?, date?);
    (due <= now && date < due).then(|| {
        format!(
            "the SS clock says {}, before this re-check is due ({}); this machine's clock is {}s ahead of the SS, so it waits",
            rfc3339(date),
            rfc3339(due),
            now - date
        )
    })
}
