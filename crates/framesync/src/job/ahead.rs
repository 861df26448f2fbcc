//! Reading ahead: while a frame is pushed, the next missing frames' pages are fetched from the
//! SS on threads of their own, into memory, so a run's rate approaches the slower of its two
//! servers rather than the sum of both. The ledger stays on the run's own thread: the pages are
//! staged there, in the plan's order, once the steps before them are done, exactly as a pull
//! would have staged them; a kill loses only pages not yet staged.
//!
//! How many frames are read at once is `source.concurrency` (N). With N = 1 the next step, when
//! it is a pull, is read while a frame is pushed, and the SS sees one request at a time. With
//! N > 1 up to N pull steps are read at once, also in `pull` (nothing pushed): the N next pulls
//! of the plan, never across a step of another kind, so N bounds the SS requests in flight; each
//! frame's pages are still walked in order by one thread, and the `max_rps` pacing is the one
//! source's, shared by every thread. An SS that asks for quiet halts the frames read after it
//! (those before it go on, as a pull in turn would have read them first); once the pulls of the
//! run stop, every walk stops after its page, and what it read is dropped, never staged.
//!
//! Memory: the frames read at once share [`AHEAD_BUDGET`], each holding at most its share
//! ([`AHEAD_BYTES`] at most); a frame past its share is dropped from memory and pulled the usual
//! way, page by page into the staging. A walk cut short by a stop is pulled the usual way too,
//! if its step still comes. Without a source to read ahead with ([`Job::with_read_ahead`]: the
//! simulation and the unit tests), frames are pulled in turn.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use anyhow::Result;

use super::Job;
use crate::fetch::{self, Fetched};
use crate::frames::Frame;
use crate::plan::{Plan, Step};
use crate::source::Source;

/// The most one frame read ahead may hold in memory (UIDs and bodies).
pub const AHEAD_BYTES: usize = 8 << 20;
/// The most all frames read at once may hold in memory together.
pub const AHEAD_BUDGET: usize = 64 << 20;

/// The memory a frame read ahead may hold when `concurrency` frames are read at once.
pub fn share(concurrency: usize) -> usize {
    AHEAD_BYTES.min(AHEAD_BUDGET / concurrency.max(1))
}

/// A frame being read ahead, for the plan's step at `step`.
struct Reading<'scope> {
    step: usize,
    handle: ScopedJoinHandle<'scope, Option<Fetched>>,
}

/// What the reading threads share with the run's thread.
struct Signals {
    /// Set when the steps end (done, out of time, or an error): every walk stops.
    over: AtomicBool,
    /// Walks for steps after this one stop: the SS asked for quiet there, or (0) the pulls of
    /// the run stopped.
    halt_after: AtomicUsize,
}

impl Signals {
    fn halt_after(&self, step: usize) {
        self.halt_after.fetch_min(step, Ordering::SeqCst);
    }

    fn go_on(&self, step: usize) -> bool {
        !self.over.load(Ordering::Relaxed) && step <= self.halt_after.load(Ordering::SeqCst)
    }
}

/// The frames being read, in the plan's order, and the next step not yet looked at.
struct Window<'scope> {
    /// The SS, to read with; none: frames are pulled in turn.
    source: Option<&'scope (dyn Source + Sync)>,
    readings: VecDeque<Reading<'scope>>,
    looked_at: usize,
}

impl Job<'_> {
    /// Carries out the plan's steps in order, reading the next pulls' pages while a frame is
    /// pushed (and, with `source.concurrency` above 1, while one is pulled).
    pub(super) fn run_steps(&mut self, plan: &Plan, push_after_pull: bool) -> Result<()> {
        let signals = Signals { over: AtomicBool::new(false), halt_after: AtomicUsize::new(usize::MAX) };
        let source = self.ahead;
        std::thread::scope(|scope| {
            let window = Window { source, readings: VecDeque::new(), looked_at: 0 };
            let result = self.steps_reading_ahead(plan, push_after_pull, window, scope, &signals);
            signals.over.store(true, Ordering::Relaxed);
            result
        })
    }

    fn steps_reading_ahead<'scope>(
        &mut self,
        plan: &Plan,
        push_after_pull: bool,
        mut window: Window<'scope>,
        scope: &'scope Scope<'scope, '_>,
        signals: &'scope Signals,
    ) -> Result<()> {
        let concurrency = self.config.source.concurrency;
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
            if concurrency > 1 {
                self.read_ahead(plan, done, &mut window, scope, signals);
            }
            // A walk a stop cut short is read again in turn, unless the run is out of time.
            let fetched = window.take(done).filter(|f| !f.stopped() || self.out_of_time());
            let staged = self.stage(*step, fetched)?;
            if self.pulling.stopped {
                signals.halt_after(0);
            }
            let push = matches!(step, Step::Push(_)) || push_after_pull;
            if staged && push && !self.pushing.stopped {
                self.read_ahead(plan, next, &mut window, scope, signals);
                let frames: Vec<Frame> = plan.steps[done..next].iter().map(|s| self.frame(s.start())).collect();
                self.push(&frames)?;
            }
            if let Some(progress) = self.progress {
                progress(next, plan.steps.len());
            }
        }
        signals.over.store(true, Ordering::Relaxed);
        window.readings.into_iter().for_each(|read| drop(join(read)));
        Ok(())
    }

    /// Starts reading the pull steps from `from` on, up to `source.concurrency` frames in all
    /// and never across a step of another kind; a frame the SS's clock says is still open is
    /// left to its step.
    fn read_ahead<'scope>(
        &mut self,
        plan: &Plan,
        from: usize,
        window: &mut Window<'scope>,
        scope: &'scope Scope<'scope, '_>,
        signals: &'scope Signals,
    ) {
        let Some(source) = window.source else { return };
        let concurrency = self.config.source.concurrency;
        // The run's budget, as an instant a reading thread can read without the run's clock.
        let deadline = self.deadline.map(|d| Instant::now() + d.saturating_sub(self.clock.elapsed()));
        let max_bytes = share(concurrency);
        let mut step = window.looked_at.max(from);
        while step < from + concurrency && window.readings.len() < concurrency {
            let Some(Step::Pull(start)) = plan.steps.get(step) else { break };
            if self.pulling.stopped || !signals.go_on(step) {
                break;
            }
            let frame = self.frame(*start);
            if self.open_at_the_ss(frame).is_none() {
                let go_on = move || signals.go_on(step) && deadline.is_none_or(|d| Instant::now() < d);
                let handle = scope.spawn(move || {
                    let fetched = fetch::fetch_pages(source, frame, max_bytes, go_on);
                    if fetched.as_ref().is_some_and(Fetched::ss_busy) {
                        signals.halt_after(step);
                    }
                    fetched
                });
                window.readings.push_back(Reading { step, handle });
            }
            step += 1;
            window.looked_at = step;
        }
    }
}

impl Window<'_> {
    /// The pages read for the plan's step at `step`, if it was read.
    fn take(&mut self, step: usize) -> Option<Fetched> {
        match self.readings.front() {
            Some(read) if read.step == step => join(self.readings.pop_front()?),
            _ => None,
        }
    }
}

/// The pages read ahead; a panic on the reading thread is a bug, and goes on here.
fn join(read: Reading<'_>) -> Option<Fetched> {
    read.handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
