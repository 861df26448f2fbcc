//! The SS's clock, as its `Date` header tells it: a frame the SS says is still open waits for
//! it (its records may not exist there yet), and clocks that differ by more than a few seconds
//! are the operator's to fix.

use anyhow::Result;

use super::Job;
use crate::frames::{Epoch, Frame, rfc3339};
use crate::servers::{SKEW_WARNING, Server};

impl Job<'_> {
    /// Keeps the SS clock's skew for `status` (once per run), and for planning what to ask.
    pub(super) fn learn_skew(&mut self, server_date: Option<Epoch>) -> Result<()> {
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
    pub(super) fn open_at_the_ss(&self, frame: Frame) -> Option<String> {
        let ss_now = self.clock.now() + self.pulling.skew?;
        still_open(frame, self.config.frames.delay, Some(ss_now), self.clock.now())
    }

    /// A frame the SS's clock says is still open waits until that clock says it closed (at
    /// most `run.retry_max`), with the reason on its row; frames before it go on.
    pub(super) fn hold_back(&mut self, frame: Frame, why: String, server_date: Option<Epoch>) -> Result<()> {
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
}

/// Why a frame is still open by the SS's clock (`date`), if it is: staging it now would deliver
/// it before its records exist at the SS.
pub(super) fn still_open(frame: Frame, delay: i64, date: Option<Epoch>, now: Epoch) -> Option<String> {
    let date = date?;
    (frame.end() + delay > date).then(|| {
        format!(
            "the SS clock says {} — too early for this frame (delay {delay}s); this machine's clock is {}s ahead of the SS, so it waits",
            rfc3339(date),
            now - date
        )
    })
}
