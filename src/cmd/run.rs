//! `run`, `pull` and `push`: lock → open ledger → plan → work → record the run.

use anyhow::Result;

use crate::config::Config;
use crate::frames::rfc3339;
use crate::job::{Clock, Job, SystemClock};
use crate::ledger::{Ledger, RunFigures};
use crate::lock::{self, Side};
use crate::plan::{self, Facts, Plan, Scope, Settings, Step};
use crate::sink::HttpSink;
use crate::source::HttpSource;

pub fn run(config: &Config, scope: Scope, dry_run: bool) -> Result<u8> {
    let _locks = if dry_run { Vec::new() } else { lock::acquire_all(&config.ledger, sides(scope))? };
    crate::hooks::kill_point("after-lock");
    let mut ledger = Ledger::open_with(&config.ledger, config.run.sync, config.run.busy_timeout)?;
    let clock = SystemClock;
    let now = clock.now();
    let plan = make_plan(config, &ledger, scope, now)?;
    if dry_run {
        print_plan(&plan, scope);
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
    let run_id = ledger.begin_run(name(scope), now)?;
    let source = HttpSource::new(&config.source, &config.secrets);
    let sink = HttpSink::new(&config.sink, &config.secrets);
    let outcome = Job::new(config, &mut ledger, &source, &sink, &clock).execute(&plan, scope == Scope::Run);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            // The ledger failed under the run; recording that may fail too, and the original
            // error is the one to report.
            let message = config.secrets.scrub(&format!("{error:#}"));
            let _ = ledger.end_run(run_id, &RunFigures::default(), 3, Some(&message), clock.now());
            return Err(error);
        }
    };
    let code = outcome.exit_code();
    let message = summary(&outcome.failures);
    crate::hooks::kill_point("before-end-run");
    ledger.end_run(run_id, &outcome.figures, code, message.as_deref(), clock.now())?;
    if code != 0 {
        eprintln!(
            "framesync: {} failure(s) recorded; the frames will be retried by later runs (framesync status shows them)",
            outcome.failures.len()
        );
    }
    Ok(code as u8)
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
    };
    Ok(plan::plan(&settings, &facts, now, scope))
}

fn print_plan(plan: &Plan, scope: Scope) {
    println!("{} plan, eligible until {}:", name(scope), rfc3339(plan.horizon));
    for step in &plan.steps {
        match step {
            Step::Push(start) => println!("  push  {}", rfc3339(*start)),
            Step::Pull(start) => println!("  pull  {}", rfc3339(*start)),
        }
    }
    if plan.steps.is_empty() {
        println!("  nothing to do");
    }
    if plan.deferred > 0 {
        println!("  {} more missing frames are left for later runs", plan.deferred);
    }
    if plan.outside_window {
        println!("  old gaps wait for run.backfill_window");
    }
}

fn summary(failures: &[String]) -> Option<String> {
    match failures {
        [] => None,
        [one] => Some(one.clone()),
        [first, rest @ ..] => Some(format!("{first} (and {} more)", rest.len())),
    }
}
