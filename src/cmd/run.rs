//! `run`, `pull` and `push`: lock → open ledger → plan → work → record the run.

use std::io::Write;

use anyhow::Result;

use crate::config::Config;
use crate::frames::rfc3339;
use crate::job::{Clock, Job, Outcome, SystemClock};
use crate::ledger::{Ledger, RunFigures};
use crate::lock::{self, Side};
use crate::plan::{self, Facts, Plan, Scope, Settings};
use crate::sink::HttpSink;
use crate::source::HttpSource;

pub fn run(config: &Config, scope: Scope, dry_run: bool, out: &mut dyn Write) -> Result<u8> {
    let started = std::time::Instant::now();
    let _locks = if dry_run {
        Vec::new()
    } else {
        lock::acquire_all(&config.ledger, sides(scope)).inspect_err(|e| crate::metrics::count_skip(config, e))?
    };
    crate::hooks::kill_point("after-lock");
    let mut ledger = Ledger::open_with(&config.ledger, config.run.sync, config.run.busy_timeout)?;
    let clock = SystemClock;
    let now = clock.now();
    let plan = make_plan(config, &ledger, scope, now)?;
    if dry_run {
        print_plan(out, &plan, name(scope))?;
        return Ok(0);
    }
    let frames = &config.frames;
    ledger.sync_pipeline(frames.size.seconds(), frames.start, frames.delay, now)?;
    if frames.start >= plan.horizon && scope != Scope::Push {
        log::warn!(
            "frames.start ({}) is not yet eligible (frames are pulled {}s after they close); nothing to pull until then",
            rfc3339(frames.start),
            frames.delay
        );
    }
    let source = HttpSource::new(&config.source, &config.secrets);
    let sink = HttpSink::new(&config.sink, &config.secrets);
    let outcome = recorded(config, &mut ledger, name(scope), &clock, |ledger| {
        let mut outcome = Job::new(config, ledger, &source, &sink, &clock).execute(&plan, scope == Scope::Run)?;
        let deadline = started + config.run.max_seconds;
        if scope == Scope::Run
            && let Err(e) = crate::prune::after_run(config, ledger, clock.now(), deadline)
        {
            outcome.failures.push(format!("pruning the ledger: {e:#}"));
        }
        Ok(outcome)
    })?;
    Ok(outcome.exit_code() as u8)
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
            let message = config.secrets.scrub(&format!("{error:#}"));
            let _ = ledger.end_run(run_id, &RunFigures::default(), 3, Some(&message), clock.now());
            let _ = crate::metrics::write_if_configured(config, ledger);
            return Err(error);
        }
    };
    crate::hooks::kill_point("before-end-run");
    let message = summary(&outcome.failures);
    ledger.end_run(run_id, &outcome.figures, outcome.exit_code(), message.as_deref(), clock.now())?;
    if !outcome.failures.is_empty() {
        eprintln!(
            "framesync: {} failure(s) recorded; the frames will be retried by later runs (framesync status shows them)",
            outcome.failures.len()
        );
    }
    if !crate::metrics::write_or_say_why(config, ledger) {
        outcome.failures.push("the metrics file could not be written".into());
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
    let settings = Settings {
        reference: config.frames.start,
        size: config.frames.size,
        delay: config.frames.delay,
        fresh: config.run.fresh,
        backfill_window: config.run.backfill_window,
        max_frames: config.run.max_frames,
    };
    let horizon = crate::frames::eligible_until(settings.size, now, settings.delay);
    let facts = Facts {
        spans: ledger.delivered_spans(settings.reference, horizon.max(settings.reference))?,
        open: ledger.open_frames()?,
        due_rechecks: ledger.due_rechecks(now, settings.max_frames)?,
    };
    Ok(plan::plan(&settings, &facts, now, scope))
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
