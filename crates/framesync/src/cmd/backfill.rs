//! `backfill --from --to`: a one-shot pull and push of a time range by hand, with a progress
//! bar on a terminal; the same locks as a run, no time budget, no backfill window. Delivered
//! frames are skipped unless `--redeliver` asks for them again.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::Usage;
use crate::config::Config;
use crate::frames::{Epoch, parse_time, rfc3339};
use crate::job::{Clock, Job, SystemClock};
use crate::lock::Side;
use crate::plan::{self, Facts};
use crate::plural::plural;
use crate::sink::HttpSink;
use crate::source::HttpSource;

/// A time range of frames, given by hand.
#[derive(Debug, clap::Args)]
pub struct Range {
    /// The first frame (RFC 3339 or epoch seconds; aligned down to a frame).
    #[arg(long)]
    pub from: String,
    /// The end of the range, exclusive.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: Range,
    /// Pull and send delivered frames again too, with the same Idempotency-Keys.
    #[arg(long)]
    pub redeliver: bool,
    /// Print the plan and exit without doing anything.
    #[arg(long)]
    pub dry_run: bool,
}

impl Range {
    /// The range as frame-aligned, half-open epoch bounds.
    pub fn frames(&self, config: &Config) -> Result<(Epoch, Epoch)> {
        aligned(config, &self.from, &self.to)
    }
}

fn aligned(config: &Config, from: &str, to: &str) -> Result<(Epoch, Epoch)> {
    let size = config.frames.size;
    let from = parse_time(from).map_err(|e| Usage(format!("--from: {e}")))?;
    let to = parse_time(to).map_err(|e| Usage(format!("--to: {e}")))?;
    if to <= from {
        return Err(Usage(format!("--to ({}) must be after --from ({})", rfc3339(to), rfc3339(from))).into());
    }
    Ok((size.align_down(from), size.align_down(to - 1) + size.seconds()))
}

pub fn backfill(config: &Config, args: &Args, out: &mut dyn Write) -> Result<u8> {
    let (from, to) = args.range.frames(config)?;
    let _locks = if args.dry_run { Vec::new() } else { super::lock_by_hand(config, &[Side::Pull, Side::Push])? };
    let mut ledger = super::open_ledger(config, super::Access::create_if(!args.dry_run))?;
    let clock = SystemClock;
    let now = clock.now();
    let facts = Facts { spans: ledger.delivered_spans(from, to)?, open: ledger.open_frames()?, ..Facts::default() };
    let frames = &config.frames;
    let plan = plan::backfill(frames.size, &facts, from, to, now, frames.delay, args.redeliver);
    if to > plan.horizon {
        log::warn!("frames from {} on are not eligible yet (frames.delay); they are left out", rfc3339(plan.horizon));
    }
    if args.dry_run {
        super::run::print_plan(out, &plan, "backfill")?;
        return Ok(0);
    }
    if plan.steps.is_empty() && to <= plan.horizon {
        writeln!(out, "nothing to do: every frame in {}..{} is delivered", rfc3339(from), rfc3339(to))?;
        return Ok(0);
    }
    let started = std::time::Instant::now();
    ledger.sync_pipeline(frames.size.seconds(), frames.start, frames.delay, now)?;
    let bar = progress_bar(plan.steps.len() as u64);
    let show = |done: usize, _total: usize| bar.set_position(done as u64);
    let source = HttpSource::new(&config.source);
    let sink = HttpSink::new(&config.sink);
    let outcome = super::run::recorded(config, &mut ledger, "backfill", &clock, |ledger| {
        Job::new(config, ledger, &source, &sink, &clock)
            .without_time_limit()
            .with_read_ahead(&source)
            .with_progress(&show)
            .execute(&plan, true)
    })?;
    bar.finish_and_clear();
    let f = &outcome.figures;
    // By hand or from a script, the operator is told what the backfill did, in one line.
    writeln!(
        out,
        "backfill {}..{}: {} pulled, {} delivered, {} pushed, {}, {}, in {:.1}s",
        rfc3339(from),
        rfc3339(to.min(plan.horizon)),
        plural(f.frames_pulled, "frame"),
        f.frames_delivered,
        plural(f.records_pushed, "record"),
        plural(f.dead_letters, "dead letter"),
        plural(outcome.failures.len(), "failure"),
        started.elapsed().as_secs_f64()
    )?;
    Ok(outcome.exit_code() as u8)
}

/// A bar on a terminal; nothing at all otherwise (under cron or in a pipe).
fn progress_bar(frames: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(frames);
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} frames, eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
