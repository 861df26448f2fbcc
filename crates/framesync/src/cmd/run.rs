//! `run`, `pull` and `push`: lock → open ledger → plan → work → record the run.

use std::io::{IsTerminal, Write};

use anyhow::Result;

use crate::config::Config;
use crate::frames::{first_pull_at, rfc3339};
use crate::job::{Clock, Dispatch, Job, Outcome, SystemClock};
use crate::ledger::{Ledger, RunFigures};
use crate::lock::{self, Side};
use crate::plan::{self, Facts, Plan, Scope, Settings};
use crate::sink::{HttpSink, Sink};
use crate::source::{HttpSource, Source};

pub fn run(config: &Config, scope: Scope, dry_run: bool, out: &mut dyn Write) -> Result<u8> {
    let clock = SystemClock;
    let started = clock.elapsed();
    let _locks = if dry_run {
        Vec::new()
    } else {
        lock::acquire_all(&config.ledger, sides(scope)).inspect_err(|e| crate::metrics::count_skip(config, e))?
    };
    crate::hooks::kill_point("after-lock");
    let mut ledger = super::open_ledger(config, super::Access::create_if(!dry_run))?;
    let plan = make_plan(config, &ledger, scope, clock.now())?;
    if dry_run {
        print_plan(out, &plan, name(scope))?;
        return Ok(0);
    }
    let source = HttpSource::new(&config.source);
    let sink = HttpSink::new(&config.sink);
    let outcome = execute(
        config,
        &mut ledger,
        scope,
        &plan,
        &Parts { source: &source, read_ahead: Some(&source), sink: &sink, clock: &clock, dispatch: None },
        started,
    )?;
    Ok(outcome.exit_code() as u8)
}

/// What a run works with: the two servers, the clock, and how the requests in flight reach the
/// RS (the simulation passes its own of each).
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub source: &'a dyn Source,
    /// The SS again, to read the next frame while one is pushed; none in the simulation.
    pub read_ahead: Option<&'a (dyn Source + Sync)>,
    pub sink: &'a dyn Sink,
    pub clock: &'a dyn Clock,
    /// How the requests in flight reach the RS; none: the job's own threads.
    pub dispatch: Option<&'a dyn Dispatch>,
}

/// A run's work once the locks are held, the ledger open and the plan made: record the
/// pipeline, carry out the plan, prune (after `run` and `push`), record the run. `started` is
/// when the run began on the clock's `elapsed`: the budget and the prune deadline count from it.
pub fn execute(
    config: &Config,
    ledger: &mut Ledger,
    scope: Scope,
    plan: &Plan,
    parts: &Parts,
    started: std::time::Duration,
) -> Result<Outcome> {
    let frames = &config.frames;
    let clock = parts.clock;
    ledger.sync_pipeline(frames.size.seconds(), frames.start, frames.delay, clock.now())?;
    if frames.start >= plan.horizon && scope != Scope::Push {
        // Not a failure: cron hears nothing of it (`status` and `check` say it); a person who
        // ran this by hand on a terminal is told why nothing happened.
        let target = if std::io::stderr().is_terminal() { crate::logging::ALWAYS } else { module_path!() };
        log::warn!(
            target: target,
            "frames.start ({}) is not yet eligible (frames are pulled {}s after they close); nothing to pull until {}",
            rfc3339(frames.start),
            frames.delay,
            rfc3339(first_pull_at(frames.size, frames.start, frames.delay))
        );
    }
    recorded(config, ledger, name(scope), clock, |ledger| {
        let mut job =
            Job::new(config, ledger, parts.source, parts.sink, clock).with_deadline(started + config.run.max_seconds);
        if let Some(dispatch) = parts.dispatch {
            job = job.with_dispatch(dispatch);
        }
        if let Some(ahead) = parts.read_ahead {
            job = job.with_read_ahead(ahead);
        }
        let mut outcome = job.execute(plan, scope == Scope::Run)?;
        // `pull` and `push` may run as two cron lines: the push side, which delivers, prunes.
        if scope != Scope::Pull
            && let Err(e) = crate::prune::after_run(config, ledger, clock, started)
        {
            outcome.failures.push(format!("pruning the ledger: {e:#}"));
        }
        Ok(outcome)
    })
}

/// Records a piece of work in the `runs` table around it — begun, then ended with its figures,
/// exit code and first failure, or with exit code 3 when the ledger itself failed under the
/// work — and writes the metrics file. A metrics file that cannot be written fails the run.
pub(super) fn recorded(
    config: &Config,
    ledger: &mut Ledger,
    name: &str,
    clock: &dyn Clock,
    work: impl FnOnce(&mut Ledger) -> Result<Outcome>,
) -> Result<Outcome> {
    let run_id = ledger.begin_run(name, clock.now())?;
    let mut outcome = match work(ledger) {
        Ok(outcome) => outcome,
        Err(error) => {
            // Recording the failure may fail too; the original error is the one to report.
            let message = format!("{error:#}");
            let _ = ledger.end_run(run_id, &RunFigures::default(), 3, Some(&message), clock.now());
            let _ = crate::metrics::publish(config, ledger);
            return Err(error);
        }
    };
    crate::hooks::kill_point("before-end-run");
    let message = summary(&outcome.failures);
    ledger.end_run(run_id, &outcome.figures, outcome.exit_code(), message.as_deref(), clock.now())?;
    if !outcome.failures.is_empty() {
        log::warn!(
            "{} failure(s) recorded; the frames will be retried by later runs (framesync status shows them)",
            outcome.failures.len()
        );
    }
    if !crate::metrics::publish_or_say_why(config, ledger) {
        outcome.failures.push("the metrics could not be written or pushed".into());
    }
    Ok(outcome)
}

fn sides(scope: Scope) -> &'static [Side] {
    match scope {
        Scope::Run => &[Side::Pull, Side::Push],
        Scope::Pull => &[Side::Pull],
        Scope::Push => &[Side::Push],
    }
}

fn name(scope: Scope) -> &'static str {
    match scope {
        Scope::Run => "run",
        Scope::Pull => "pull",
        Scope::Push => "push",
    }
}

pub fn make_plan(config: &Config, ledger: &Ledger, scope: Scope, now: i64) -> Result<Plan> {
    let settings = Settings::from_config(config);
    let horizon = crate::frames::eligible_until(settings.size, now, settings.delay);
    let facts = Facts {
        spans: ledger.delivered_spans(settings.reference, horizon.max(settings.reference))?,
        open: ledger.open_frames()?,
        due_rechecks: ledger.due_rechecks(now, recheck_bound(config), settings.max_frames)?,
        // New frames are planned by the SS's clock when it is a little behind ours.
        ss_behind: ledger.ss_tolerably_behind(now)?,
    };
    Ok(plan::plan(&settings, &facts, now, scope))
}

/// How far ahead a re-check can be scheduled: the last one, plus the longest backoff.
pub fn recheck_bound(config: &Config) -> i64 {
    config.frames.recheck.last().copied().unwrap_or(0) + config.run.retry_max.max(config.run.max_retry_after)
}

pub fn print_plan(out: &mut dyn Write, plan: &Plan, name: &str) -> std::io::Result<()> {
    writeln!(out, "{name} plan, eligible until {}:", rfc3339(plan.horizon))?;
    for step in &plan.steps {
        writeln!(out, "  {step}")?;
    }
    if plan.steps.is_empty() {
        writeln!(out, "  nothing to do")?;
    }
    if plan.deferred > 0 {
        writeln!(out, "  {} more missing frames are left for later runs", plan.deferred)?;
    }
    if plan.outside_window {
        writeln!(out, "  old gaps wait for run.backfill_window")?;
    }
    Ok(())
}

fn summary(failures: &[String]) -> Option<String> {
    match failures {
        [] => None,
        [one] => Some(one.clone()),
        [first, rest @ ..] => Some(format!("{first} (and {} more)", rest.len())),
    }
}
