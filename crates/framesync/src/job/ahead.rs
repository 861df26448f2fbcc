//! Reading ahead: while a frame is pushed, the next missing frame's pages are fetched from the SS
//! on a thread of their own, into memory, so a run's rate approaches the slower of its two
//! servers rather than the sum of both. The ledger stays on the run's own thread: the pages are
//! staged there, in the plan's order, once the push before them is done, exactly as a pull
//! would have staged them; a kill loses only pages not yet staged. Only the SS's walk runs
//! ahead, one frame at a time, so the SS still sees one request at a time (its `max_rps`
//! pacing is shared). A frame larger than [`AHEAD_BYTES`] is dropped from memory and pulled the
//! usual way, page by page into the staging. Without a source to read ahead with
//! ([`Job::with_read_ahead`]: the simulation and the unit tests), frames are pulled in turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use anyhow::Result;

use super::Job;
use crate::fetch::{self, Fetched};
use crate::frames::{Epoch, Frame};
use crate::plan::{Plan, Step};
use crate::source::Source;

/// The most a frame read ahead may hold in memory (UIDs and bodies).
pub const AHEAD_BYTES: usize = 8 << 20;

/// A frame being read ahead.
struct Reading<'scope> {
    start: Epoch,
    handle: ScopedJoinHandle<'scope, Option<Fetched>>,
}

impl Job<'_> {
    /// Carries out the plan's steps in order, reading the next pull's pages while a frame is
    /// pushed.
    pub(super) fn run_steps(&mut self, plan: &Plan, push_after_pull: bool) -> Result<()> {
        let ahead = self.ahead;
        // Set when the steps end (done, out of time, or an error): a walk still reading stops.
        let over = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let result = self.steps_reading_ahead(plan, push_after_pull, ahead, scope, &over);
            over.store(true, Ordering::Relaxed);
            result
        })
    }

    fn steps_reading_ahead<'scope>(
        &mut self,
        plan: &Plan,
        push_after_pull: bool,
        ahead: Option<&'scope (dyn Source + Sync)>,
        scope: &'scope Scope<'scope, '_>,
        over: &'scope AtomicBool,
    ) -> Result<()> {
        let mut reading: Option<Reading<'scope>> = None;
        let mut next = 0;
        while let Some(step) = plan.steps.get(next) {
            let done = next;
            // The staged frames to push next, one after another in the plan: pushed together,
            // so requests stay in flight across their boundaries.
            next = match step {
                Step::Push(_) => done + plan.steps[done..].iter().take_while(|s| matches!(s, Step::Push(_))).count(),
                _ => done + 1,
            };
            if self.out_of_time() {
                log::info!("max_seconds reached; {} planned frames are left for the next run", plan.steps.len() - done);
                break;
            }
            let fetched = match reading.take() {
                Some(read) if *step == Step::Pull(read.start) => join(read),
                // Not the step it was read for (cannot happen: it is read for the next step).
                Some(read) => {
                    drop(join(read));
                    None
                }
                None => None,
            };
            let staged = self.stage(*step, fetched)?;
            let push = matches!(step, Step::Push(_)) || push_after_pull;
            if staged && push && !self.pushing.stopped {
                if let (Some(source), Some(Step::Pull(after))) = (ahead, plan.steps.get(next)) {
                    reading = self.read_ahead(source, *after, scope, over);
                }
                let frames: Vec<Frame> = plan.steps[done..next].iter().map(|s| self.frame(s.start())).collect();
                self.push(&frames)?;
            }
            if let Some(progress) = self.progress {
                progress(next, plan.steps.len());
            }
        }
        if let Some(read) = reading {
            over.store(true, Ordering::Relaxed);
            drop(join(read));
        }
        Ok(())
    }

    /// Starts reading the frame at `start` on a thread of its own, unless pulling has stopped
    /// or the SS's clock says the frame is still open.
    fn read_ahead<'scope>(
        &mut self,
        source: &'scope (dyn Source + Sync),
        start: Epoch,
        scope: &'scope Scope<'scope, '_>,
        over: &'scope AtomicBool,
    ) -> Option<Reading<'scope>> {
        let frame = self.frame(start);
        if self.pulling.stopped || self.open_at_the_ss(frame).is_some() {
            return None;
        }
        // The run's budget, as an instant this thread can read without the run's clock.
        let deadline = self.deadline.map(|d| Instant::now() + d.saturating_sub(self.clock.elapsed()));
        let go_on = move || !over.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d);
        let handle = scope.spawn(move || fetch::fetch_pages(source, frame, AHEAD_BYTES, go_on));
        Some(Reading { start, handle })
    }
}

/// The pages read ahead; a panic on the reading thread is a bug, and goes on here.
fn join(read: Reading<'_>) -> Option<Fetched> {
    read.handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
