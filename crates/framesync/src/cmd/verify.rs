//! `verify --from --to [--repair]`: pulls the range from the SS again and compares its UIDs
//! with the ledger (and, where the RS has a lookup, with the RS, many UIDs a request where the
//! lookup is batched); prints every difference.
//! `--repair` sends what is missing. Exit 0 only when nothing differs (or, with `--repair`,
//! when every difference was repaired).

use std::io::Write;

use anyhow::Result;

use super::run::Parts;
use crate::config::Config;
use crate::fetch;
use crate::frames::{Epoch, Frame, rfc3339};
use crate::job::{Clock, Job, SystemClock};
use crate::ledger::Ledger;
use crate::lock::Side;
use crate::model::{FrameState, StagedRecord};
use crate::plan::{Plan, Step};
use crate::plural::plural;
use crate::sink::{HttpSink, Sink};
use crate::source::{HttpSource, Source};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: super::backfill::Range,
    /// Send what is missing: records the ledger never saw, and records the RS lookup says it lacks.
    #[arg(long)]
    pub repair: bool,
}

/// What one frame's comparison found.
#[derive(Debug, Default)]
struct FrameReport {
    /// Served by the SS, unknown to the ledger (never delivered, staged or dead-lettered).
    not_in_ledger: Vec<StagedRecord>,
    /// Recorded as delivered, but the RS lookup says it does not have them.
    not_at_rs: Vec<StagedRecord>,
    /// Delivered for this frame, but the SS no longer serves them for it.
    not_served: Vec<String>,
    /// The frame was never delivered.
    undelivered: Option<&'static str>,
    error: Option<String>,
}

impl FrameReport {
    fn differs(&self) -> bool {
        self.error.is_some()
            || self.undelivered.is_some()
            || !(self.not_in_ledger.is_empty() && self.not_at_rs.is_empty() && self.not_served.is_empty())
    }
}

pub fn verify(config: &Config, args: &Args, out: &mut dyn Write) -> Result<u8> {
    let (from, to) = args.range.frames(config)?;
    let _locks = if args.repair { super::lock_by_hand(config, &[Side::Pull, Side::Push])? } else { Vec::new() };
    let mut ledger = super::open_ledger(config, super::Access::create_if(args.repair))?;
    let clock = SystemClock;
    let size = config.frames.size;
    let horizon = crate::frames::eligible_until(size, clock.now(), config.frames.delay);
    let source = HttpSource::new(&config.source);
    let sink = HttpSink::new(&config.sink);
    let rs = rs_lookup(config, &sink, clock.now());
    let mut differing = Vec::new();
    let mut checked = 0;
    for start in (from..to.min(horizon)).step_by(size.seconds() as usize) {
        let frame = size.frame_at(start);
        let report = compare(&ledger, &source, rs.usable().then_some(&sink as &dyn Sink), frame)?;
        checked += 1;
        print_report(out, frame, &report)?;
        if report.differs() {
            differing.push((frame, report));
        }
    }
    let records: usize = differing.iter().map(|(_, r)| r.not_in_ledger.len() + r.not_at_rs.len()).sum();
    writeln!(
        out,
        "verify {}..{}: {} checked, {} differ, {} missing{}",
        rfc3339(from),
        rfc3339(to.min(horizon)),
        plural(checked, "frame"),
        differing.len(),
        plural(records, "record"),
        rs.note()
    )?;
    let unverified = matches!(rs, RsLookup::Untrustworthy(_));
    if differing.is_empty() {
        return Ok(if unverified { 1 } else { 0 });
    }
    if !args.repair {
        return Ok(1);
    }
    let parts = Parts { source: &source, read_ahead: None, sink: &sink, clock: &clock, dispatch: None };
    let code = repair(config, &mut ledger, &parts, differing, rs.usable(), out)?;
    Ok(if unverified { 1 } else { code })
}

/// Whether the RS can be asked what it holds: a lookup is evidence only when it answers
/// "absent" for a UID that cannot exist.
enum RsLookup {
    None,
    Usable,
    Untrustworthy(String),
}

impl RsLookup {
    fn usable(&self) -> bool {
        matches!(self, RsLookup::Usable)
    }

    fn note(&self) -> String {
        match self {
            RsLookup::Usable => String::new(),
            RsLookup::None => " (no sink.lookup_url or [sink.lookup]: the RS itself was not asked)".into(),
            RsLookup::Untrustworthy(why) => format!(" (the RS was not asked: {why})"),
        }
    }
}

fn rs_lookup(config: &Config, sink: &HttpSink, now: Epoch) -> RsLookup {
    let Some(key) = config.sink.lookup.as_ref().map(|l| l.key) else {
        return RsLookup::None;
    };
    // A batched lookup is asked for two in one request, as it will be asked for many.
    let mut probes = vec![format!("framesync-no-such-record-{now}-verify")];
    if sink.lookup_batch_size() > 1 {
        probes.push(format!("{}-b", probes[0]));
    }
    let uids: Vec<&str> = probes.iter().map(String::as_str).collect();
    match sink.lookup_many(&uids) {
        Ok(present) if !present.contains(&true) => RsLookup::Usable,
        Ok(_) => RsLookup::Untrustworthy(format!(
            "{key} answered \"present\" for {uids:?}, UIDs that cannot exist, so its answers are no evidence"
        )),
        Err(e) => RsLookup::Untrustworthy(format!("{key} failed: {e}")),
    }
}

/// Asks the RS about `uids`, `lookup_batch_size` a request: one answer each, in order (a
/// request that failed gives its error for each of its UIDs).
fn look_up(rs: &dyn Sink, uids: &[&str]) -> Vec<Result<bool, String>> {
    let mut answers = Vec::with_capacity(uids.len());
    for chunk in uids.chunks(rs.lookup_batch_size().max(1)) {
        match rs.lookup_many(chunk) {
            Ok(present) if present.len() == chunk.len() => answers.extend(present.into_iter().map(Ok)),
            Ok(present) => {
                let why =
                    format!("the lookup gave {} for {}", plural(present.len(), "answer"), plural(chunk.len(), "UID"));
                answers.extend(chunk.iter().map(|_| Err(why.clone())));
            }
            Err(why) => answers.extend(chunk.iter().map(|_| Err(why.clone()))),
        }
    }
    answers
}

/// Compares one frame; `rs` is the RS to ask, when its lookup can be believed.
fn compare(ledger: &Ledger, source: &dyn Source, rs: Option<&dyn Sink>, frame: Frame) -> Result<FrameReport> {
    let mut report = FrameReport::default();
    let state = ledger.frame_state(frame.start)?;
    // Delivered, and its rows pruned after run.retain: only the RS can be asked.
    let pruned = state.is_none() && !ledger.delivered_spans(frame.start, frame.end())?.is_empty();
    report.undelivered = match state {
        Some(FrameState::Delivered) => None,
        Some(FrameState::Pulled | FrameState::Pushing) => Some("staged, not yet delivered"),
        Some(FrameState::Missing) => Some("missing: its pull failed"),
        None if pruned => None,
        None => Some("missing: never pulled"),
    };
    let mut staging = ledger.staging(frame)?;
    if let Err(e) = fetch::stage_pages(source, frame, &mut staging, || true)? {
        report.error = Some(format!("cannot pull it from the SS: {e}"));
        return Ok(report);
    }
    let mut ask = Vec::new();
    staging.for_each(|record| {
        match known(ledger, &record.uid)? {
            Known::Unknown if !pruned => report.not_in_ledger.push(record.clone()),
            Known::Delivered | Known::Unknown if rs.is_some() => ask.push(record.clone()),
            _ => {}
        }
        Ok(())
    })?;
    if let Some(rs) = rs {
        let answers = look_up(rs, &ask.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>());
        for (record, answer) in ask.into_iter().zip(answers) {
            match answer {
                Ok(false) => report.not_at_rs.push(record),
                Ok(true) => {}
                Err(e) => report.error = Some(format!("cannot ask the RS whether it holds {:?}: {e}", record.uid)),
            }
        }
    }
    for uid in ledger.delivered_uids(frame.start)? {
        if !staging.contains(&uid)? {
            report.not_served.push(uid);
        }
    }
    Ok(report)
}

enum Known {
    Delivered,
    Elsewhere,
    Unknown,
}

/// Where the ledger knows a UID from: delivered, staged or dead-lettered, in any frame.
fn known(ledger: &Ledger, uid: &str) -> Result<Known> {
    let seen = ledger.uid_seen(uid)?;
    Ok(match (seen.delivered, seen.elsewhere) {
        (true, _) => Known::Delivered,
        (false, true) => Known::Elsewhere,
        (false, false) => Known::Unknown,
    })
}

fn print_report(out: &mut dyn Write, frame: Frame, report: &FrameReport) -> std::io::Result<()> {
    let uids = |records: &[StagedRecord]| {
        records.iter().take(5).map(|r| format!("{:?}", r.uid)).collect::<Vec<_>>().join(", ")
    };
    if let Some(error) = &report.error {
        writeln!(out, "frame {frame}: {error}")?;
    }
    if let Some(why) = report.undelivered {
        writeln!(out, "frame {frame}: {why}")?;
    }
    if !report.not_in_ledger.is_empty() {
        writeln!(
            out,
            "frame {frame}: {} the ledger never saw: {}",
            plural(report.not_in_ledger.len(), "record"),
            uids(&report.not_in_ledger)
        )?;
    }
    if !report.not_at_rs.is_empty() {
        writeln!(
            out,
            "frame {frame}: {} delivered records the RS does not have: {}",
            report.not_at_rs.len(),
            uids(&report.not_at_rs)
        )?;
    }
    if !report.not_served.is_empty() {
        let shown: Vec<_> = report.not_served.iter().take(5).map(|u| format!("{u:?}")).collect();
        writeln!(
            out,
            "frame {frame}: {} delivered records the SS no longer serves: {}",
            report.not_served.len(),
            shown.join(", ")
        )?;
    }
    Ok(())
}

/// Stages what is missing and pushes it; frames never delivered are pulled as in a backfill.
/// Then asks the RS again, where its lookup can be believed, whether it now holds what was
/// sent: an RS that replays the answer it stored for an Idempotency-Key acknowledges without
/// storing, and a repair that did not happen is not reported as one.
fn repair(
    config: &Config,
    ledger: &mut Ledger,
    parts: &Parts,
    differing: Vec<(Frame, FrameReport)>,
    ask_rs: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let Parts { source, sink, clock, dispatch, .. } = *parts;
    let mut steps = Vec::new();
    let mut sent = Vec::new();
    for (frame, report) in differing {
        if report.error.is_some() {
            continue;
        }
        match ledger.frame_state(frame.start)? {
            Some(FrameState::Pulled | FrameState::Pushing) => steps.push(Step::Push(frame.start)),
            Some(FrameState::Missing) => steps.push(Step::Pull(frame.start)),
            None if report.undelivered.is_some() => steps.push(Step::Pull(frame.start)),
            _ => {
                let records: Vec<StagedRecord> = report.not_in_ledger.into_iter().chain(report.not_at_rs).collect();
                if !records.is_empty() && ledger.stage_redelivery(frame, &records, clock.now())? > 0 {
                    sent.extend(records.into_iter().map(|r| r.uid));
                    steps.push(Step::Push(frame.start));
                }
            }
        }
    }
    let plan = Plan { steps, horizon: Epoch::MAX, deferred: 0, outside_window: false };
    let outcome = super::run::recorded(config, ledger, "verify --repair", clock, |ledger| {
        let job = Job::new(config, ledger, source, sink, clock).without_time_limit();
        match dispatch {
            Some(dispatch) => job.with_dispatch(dispatch),
            None => job,
        }
        .execute(&plan, true)
    })?;
    writeln!(
        out,
        "repair: {} acknowledged by the RS, {} delivered, {}",
        plural(outcome.figures.records_pushed, "record"),
        plural(outcome.figures.frames_delivered, "frame"),
        plural(outcome.failures.len(), "failure")
    )?;
    for failure in &outcome.failures {
        writeln!(out, "repair: {failure}")?;
    }
    if !ask_rs {
        if !sent.is_empty() {
            writeln!(
                out,
                "repair: the RS was not asked afterwards whether it holds the {} sent again (no lookup it can be believed)",
                plural(sent.len(), "record")
            )?;
        }
        return Ok(outcome.exit_code() as u8);
    }
    let answers = look_up(sink, &sent.iter().map(String::as_str).collect::<Vec<_>>());
    let still_missing: Vec<&String> =
        sent.iter().zip(answers).filter(|(_, a)| *a != Ok(true)).map(|(u, _)| u).collect();
    if still_missing.is_empty() {
        writeln!(out, "repair: the RS now holds all {} sent again (asked by lookup)", plural(sent.len(), "record"))?;
        return Ok(outcome.exit_code() as u8);
    }
    let shown: Vec<String> = still_missing.iter().take(5).map(|u| format!("{u:?}")).collect();
    writeln!(
        out,
        "repair: {} of {} sent again are still missing at the RS although it acknowledged them (it may be replaying the answer it stored for their Idempotency-Key): {}",
        still_missing.len(),
        plural(sent.len(), "record"),
        shown.join(", ")
    )?;
    Ok(1)
}
