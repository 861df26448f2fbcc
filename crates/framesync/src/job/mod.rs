//! The work of one run: push what is staged, pull what is missing, push it, within the budget.
//! Given a plan, the ledger, the two clients and a clock, it is tested without sockets. Every
//! failure is recorded on its frame (error, attempts, next attempt) and in the outcome, so
//! the exit code says whether all attempted work succeeded: a run that leaves anything
//! undelivered without a recorded reason, or that dead-letters a record, does not exit 0.
//!
//! The pull half is in [`pull`]. The push half: a frame's pending records in [`push`], what
//! the RS receives for them in [`outgoing`], the requests in flight at once in [`wave`] (how
//! many: [`limit`]; how they are sent: [`dispatch`]), one request and its answer in [`send`], an answer
//! with a result per record in [`items`], the acknowledgements recorded in groups in [`acks`],
//! which records are to blame and become dead letters in [`blame`], and whether the RS's
//! lookup can be believed in [`lookup`]. How long a failed frame waits is [`backoff`]. How
//! many requests may be in flight at the RS, adapting to its round trips, is [`adaptive`]. The
//! next frames' pages are read while a frame is pushed, `source.concurrency` of them at once
//! ([`ahead`]).

mod acks;
pub mod adaptive;
mod ahead;
#[cfg(test)]
mod ahead_tests;
mod backoff;
mod blame;
mod causes;
mod dispatch;
mod items;
mod limit;
mod lookup;
mod outgoing;
mod pull;
mod push;
mod recheck;
mod send;
mod ss_clock;
#[cfg(test)]
mod tests;
mod wave;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use self::backoff::Backoff;
use crate::config::Config;
use crate::delivery::DeadReason;
use crate::frames::{Epoch, Frame};
use crate::ledger::{Ledger, RunFigures};
use crate::plan::{Plan, Step};
use crate::servers::Server;
use crate::sink::Sink;
use crate::source::Source;

pub use self::dispatch::{Answered, Dispatch, Flow, Pipeline, Request, Sent, Threads, send_timed};
pub use self::limit::{AnswerKind, Fixed, Limit};
pub use crate::clock::{Clock, SystemClock};

/// How a run ended: its figures and the failures recorded for later runs.
#[derive(Debug, Default)]
pub struct Outcome {
    pub figures: RunFigures,
    pub failures: Vec<String>,
    /// The run stopped at `max_seconds` with planned work left.
    pub out_of_time: bool,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        if self.failures.is_empty() { 0 } else { 1 }
    }
}

pub struct Job<'a> {
    config: &'a Config,
    ledger: &'a mut Ledger,
    source: &'a dyn Source,
    /// The SS again, for reading the next frames ahead on threads of their own.
    ahead: Option<&'a (dyn Source + Sync)>,
    sink: &'a dyn Sink,
    clock: &'a dyn Clock,
    /// How the requests in flight reach the RS: the job's own threads, or the one given.
    dispatch: Option<&'a dyn Dispatch>,
    threads: Threads,
    /// How many requests may be in flight to the RS.
    limit: Box<dyn Limit + 'a>,
    /// `run.max_seconds` on the clock's `elapsed`; none for work started by hand.
    deadline: Option<Duration>,
    progress: Option<&'a dyn Fn(usize, usize)>,
    outcome: Outcome,
    pulling: pull::Pulling,
    pushing: push::Pushing,
    /// Records dead-lettered this run, by reason: one summary line at the end.
    dead: BTreeMap<DeadReason, i64>,
    /// The frames failed this run, by cause: one line per cause at the end.
    causes: causes::Causes,
}

impl<'a> Job<'a> {
    pub fn new(
        config: &'a Config,
        ledger: &'a mut Ledger,
        source: &'a dyn Source,
        sink: &'a dyn Sink,
        clock: &'a dyn Clock,
    ) -> Self {
        Self {
            config,
            ledger,
            source,
            ahead: None,
            sink,
            clock,
            dispatch: None,
            threads: Threads::default(),
            limit: limit::of(&config.sink),
            deadline: Some(clock.elapsed() + config.run.max_seconds),
            progress: None,
            outcome: Outcome::default(),
            pulling: pull::Pulling::default(),
            pushing: push::Pushing::default(),
            dead: BTreeMap::new(),
            causes: causes::Causes::default(),
        }
    }

    /// The budget ends at `deadline` on the clock's `elapsed` (by default `run.max_seconds` from now).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The requests in flight go through `dispatch` (by default [`Threads`]).
    pub fn with_dispatch(mut self, dispatch: &'a dyn Dispatch) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// The in-flight limit (by default the one the config asks for: [`limit::of`]).
    pub fn with_limit(mut self, limit: Box<dyn Limit + 'a>) -> Self {
        self.limit = limit;
        self
    }

    /// Reads the next frame's pages from `source` (the SS, as `source` is) while a frame is
    /// pushed ([`ahead`]).
    pub fn with_read_ahead(mut self, source: &'a (dyn Source + Sync)) -> Self {
        self.ahead = Some(source);
        self
    }

    /// No `max_seconds`: for work started by hand, which runs until it is done.
    pub fn without_time_limit(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Calls `progress(done, total)` after each step of the plan.
    pub fn with_progress(mut self, progress: &'a dyn Fn(usize, usize)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Carries out the plan in order; `push_after_pull` is false for the `pull` command.
    pub fn execute(mut self, plan: &Plan, push_after_pull: bool) -> Result<Outcome> {
        self.respect_quiet()?;
        if let Some(from) = self.ledger.in_flight_limit()? {
            self.limit.resume(from);
        }
        self.run_steps(plan, push_after_pull)?;
        self.finish()
    }

    /// The pull side of a step; true when the frame is staged, ready to push. `fetched`: the
    /// pages of a pull, read ahead.
    fn stage(&mut self, step: Step, fetched: Option<crate::fetch::Fetched>) -> Result<bool> {
        let frame = self.frame(step.start());
        Ok(match step {
            Step::Push(_) => true,
            Step::Pull(_) if !self.pulling.stopped => self.pull(frame, fetched)?,
            Step::Recheck(_) if !self.pulling.stopped && !self.pulling.rechecks_stopped => self.recheck(frame)?,
            Step::Redeliver(_) if !self.pulling.stopped => self.redeliver(frame)?,
            _ => false,
        })
    }

    /// What is left once the plan is done: failed sends counted, the reasons for what was not
    /// delivered said once each.
    fn finish(mut self) -> Result<Outcome> {
        self.settle_failed_sends()?;
        self.record_acks()?;
        if self.pushing.answered {
            self.ledger.set_in_flight_limit(self.limit.current(), self.clock.now())?;
        }
        self.report_failed_frames();
        self.report_held_back();
        self.report_dead_letters();
        Ok(self.outcome)
    }

    /// A server that asked for quiet in an earlier run gets no request until then — unless the
    /// wait is longer than any framesync grants (`run.max_retry_after`): only a clock that jumped
    /// back since can have written it, and it is over.
    fn respect_quiet(&mut self) -> Result<()> {
        let now = self.clock.now();
        let bound = self.config.run.max_retry_after;
        if let Some((until, why)) = self.ledger.quiet_until(Server::Source, now, bound)? {
            log::info!("the SS asked for quiet until {} ({why}); no pulls this run", crate::frames::rfc3339(until));
            self.pulling.stopped = true;
        }
        if let Some((until, why)) = self.ledger.quiet_until(Server::Sink, now, bound)? {
            log::info!("the RS asked for quiet until {} ({why}); no pushes this run", crate::frames::rfc3339(until));
            self.pushing.stopped = true;
        }
        Ok(())
    }

    /// Remembers that a server asked for quiet, for at most `run.max_retry_after`.
    fn set_quiet(&mut self, server: Server, wait: Duration, reason: &str) -> Result<()> {
        let now = self.clock.now();
        let bound = self.config.run.max_retry_after;
        let wait = (wait.as_secs() as i64).min(bound);
        self.ledger.set_quiet(server, now + wait, reason, now, bound)
    }

    fn frame(&self, start: Epoch) -> Frame {
        self.config.frames.size.frame_at(start)
    }

    fn out_of_time(&mut self) -> bool {
        let over = self.deadline.is_some_and(|deadline| self.clock.elapsed() >= deadline);
        self.outcome.out_of_time |= over;
        over
    }

    /// Records a frame's failure for the run's exit code and the ledger's run row; the log
    /// says it once per cause at the end ([`Job::report_failed_frames`]).
    fn fail(&mut self, frame: Frame, message: String) {
        log::info!("frame {frame}: {message}");
        self.causes.add(frame, &message);
        self.outcome.failures.push(format!("frame {frame}: {message}"));
        self.outcome.figures.errors += 1;
    }

    fn report_failed_frames(&self) {
        for line in self.causes.lines() {
            log::error!("{line}");
        }
    }

    /// Exponential backoff from the frame's attempts so far, or the server's `Retry-After`,
    /// never longer than `run.retry_max` (or the server's, than `run.max_retry_after`).
    fn next_attempt(&self, frame: Frame, retry_after: Option<Duration>) -> Result<Epoch> {
        let attempts = self.ledger.attempts(frame.start)?;
        Ok(Backoff::of(&self.config.run).next_attempt(self.clock.now(), attempts, retry_after))
    }

    /// The wait after `attempts` failures: `run.retry_base` doubled each time, or what the
    /// server asked, at most `run.max_retry_after`.
    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> i64 {
        Backoff::of(&self.config.run).wait(attempts, retry_after)
    }

    /// Counts a record dead-lettered this run.
    fn dead_lettered(&mut self, reason: DeadReason, count: i64) {
        if count == 0 {
            return;
        }
        self.outcome.figures.dead_letters += count;
        *self.dead.entry(reason).or_default() += count;
    }

    /// A run that dead-letters anything exits 1, with one line for all of them.
    fn report_dead_letters(&mut self) {
        let total: i64 = self.dead.values().sum();
        if total == 0 {
            return;
        }
        let kinds: Vec<String> = self.dead.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        let line = format!(
            "{total} record{} dead-lettered this run ({}); `framesync dead-letters list` shows them, `dead-letters retry` sends them again",
            if total == 1 { " was" } else { "s were" },
            kinds.join(", ")
        );
        log::error!("{line}");
        self.outcome.failures.push(line);
    }
}
