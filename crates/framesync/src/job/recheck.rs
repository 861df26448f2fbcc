//! Re-checks and redeliveries within a run: a delivered frame pulled again, for the late
//! records it did not have (on the `frames.recheck` schedule), or to be sent again. A re-check
//! that fails backs off on its own and is given up after `run.max_recheck_attempts`; re-checks
//! failing three in a row stop the re-checks of the run, never the gap pulls.

use anyhow::Result;

use super::Job;
use super::pull::FAILURES_TO_STOP;
use super::ss_clock::still_open;
use crate::fetch;
use crate::frames::{Epoch, Frame, rfc3339};
use crate::plural::plural;
use crate::recheck::RecheckFailure;
use crate::source::PullError;

impl Job<'_> {
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
                "re-check: {message}; given up after the SS refused it {} in a row (run.max_recheck_attempts): late records it would have found are not looked for",
                plural(limit, "time")
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

    pub(super) fn first_recheck(&self, now: Epoch) -> Option<Epoch> {
        self.config.frames.recheck.first().map(|after| now + after)
    }
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
