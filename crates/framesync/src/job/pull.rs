//! The pull half of a run: missing frames pulled page by page and staged in one short
//! transaction each (re-checks and redeliveries are in `recheck`, the SS's clock in
//! `ss_clock`). A frame the SS's own clock says is still open waits; an SS that is busy, broken
//! three frames in a row, or slow stops the pulls of the run.

use std::time::Duration;

use anyhow::Result;

use super::Job;
use super::ss_clock::still_open;
use crate::fetch::{self, Fetched};
use crate::frames::{Epoch, Frame};
use crate::ledger::Committed;
use crate::model::PullFailure;
use crate::plural::plural;
use crate::servers::Server;
use crate::source::{PullError, Walked};

/// Failures in a row that stop the pulls (or the re-checks) of a run.
pub(super) const FAILURES_TO_STOP: u32 = 3;

/// The pull half's state within a run.
#[derive(Debug, Default)]
pub(super) struct Pulling {
    /// No more pulls this run.
    pub stopped: bool,
    /// No more re-checks this run (they failed three in a row); gap pulls go on.
    pub rechecks_stopped: bool,
    failed_in_a_row: u32,
    pub rechecks_failed_in_a_row: u32,
    /// The SS's clock minus ours, from the first `Date` header of the run.
    pub skew: Option<i64>,
    /// Frames held back, and re-checks put off, because the SS's clock says they are too early.
    pub held_back: u32,
}

impl Job<'_> {
    /// Pulls and stages one missing frame; true when it is staged.
    pub(super) fn pull(&mut self, frame: Frame, fetched: Option<Fetched>) -> Result<bool> {
        if let Some(why) = self.open_at_the_ss(frame) {
            // Learnt from an earlier answer of this run: no need to ask.
            let ss_now = self.pulling.skew.map(|skew| self.clock.now() + skew);
            self.hold_back(frame, why, ss_now)?;
            return Ok(false);
        }
        let now = self.clock.now();
        let took_ahead = fetched.as_ref().map_or(Duration::ZERO, |f| f.took);
        let started = self.clock.elapsed().saturating_sub(took_ahead);
        let (result, committed) = self.pull_and_stage(frame, now, fetched)?;
        let result = match result {
            Err(PullError::Stopped) if self.out_of_time() => return self.pull_out_of_time(frame, started),
            other => other,
        };
        let Some(walked) = self.judge(frame, result)? else { return Ok(false) };
        let Some(Committed { staged, invalid }) = committed else { return Ok(false) };
        crate::hooks::kill_point("after-stage");
        log::info!("frame {frame}: pulled {} in {}", plural(staged, "record"), plural(walked.pages, "page"));
        let figures = &mut self.outcome.figures;
        figures.frames_pulled += 1;
        figures.records_pulled += staged;
        self.dead_lettered(crate::delivery::DeadReason::Invalid, invalid);
        if staged == 0 && self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
            self.outcome.figures.frames_delivered += 1;
        }
        Ok(true)
    }

    /// Reads a frame's pages into a staging as they arrive (or stages those read ahead), stopping between pages when the
    /// run is out of time, and commits it only when the pull succeeded and the SS's clock
    /// agrees the frame is closed; otherwise it is discarded and the ledger is as it was.
    /// Returns the pull's result and, when committed, what was staged; an error only when the
    /// ledger failed.
    fn pull_and_stage(
        &mut self,
        frame: Frame,
        now: Epoch,
        fetched: Option<Fetched>,
    ) -> Result<(Result<Walked, PullError>, Option<Committed>)> {
        let (clock, deadline) = (self.clock, self.deadline);
        let mut staging = self.ledger.staging(frame)?;
        let result = match fetched {
            Some(fetched) => fetch::stage_fetched(fetched, &mut staging)?,
            None => {
                fetch::stage_pages(self.source, frame, &mut staging, || deadline.is_none_or(|d| clock.elapsed() < d))?
            }
        };
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
        let next = self.next_attempt(frame, None)?;
        self.ledger.pull_failed(frame, &message, PullFailure::Refused, next, self.clock.now())?;
        self.fail(frame, message);
        Ok(None)
    }

    /// The SS asked for quiet (429, 503): remembered across runs, the frame waits, and pulling
    /// stops for this run.
    pub(super) fn ss_busy(
        &mut self,
        frame: Frame,
        what: &str,
        message: String,
        retry_after: Option<Duration>,
    ) -> Result<bool> {
        if let Some(wait) = retry_after {
            self.set_quiet(Server::Source, wait, &message)?;
        }
        if what.is_empty() {
            let next = self.next_attempt(frame, retry_after)?;
            self.ledger.pull_failed(frame, &message, PullFailure::Passing, next, self.clock.now())?;
        }
        self.pulling.stopped = true;
        self.fail(frame, format!("{what}{message}; no more pulls this run"));
        Ok(false)
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
}
