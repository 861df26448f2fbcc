//! `status`: one screen on a pipeline's health — the last run, lag, missing ranges, failing
//! frames, dead letters, late data and a timeline of the last 24 hours — read from the
//! ledger's operator views. `--json` prints the same as a stable, documented object (README).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::frames::{Epoch, rfc3339};
use crate::job::{Clock, SystemClock};
use crate::ledger::Ledger;
use crate::ledger::views::{FailingFrame, Lag, LastRun, MissingRange, ServerState};
use crate::plural::plural;
use crate::timeline::{self, Mark, Timeline, Window};

/// Lists in the summary stop here; the counts say how many there are in all.
const LIST_LIMIT: i64 = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Colour the timeline: auto = on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    pub color: Colour,
    /// One table over every pipeline of DIR (each `*.toml` in it), instead of --config.
    #[arg(long, value_name = "DIR")]
    pub all: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Colour {
    Auto,
    Always,
    Never,
}

/// The `--json` shape. Version 1: fields may be added, none is renamed or removed.
#[derive(Debug, Serialize)]
struct Status {
    version: u32,
    now: String,
    ledger: String,
    last_run: Option<LastRun>,
    lag: Option<Lag>,
    /// When `frames.start` is not yet eligible: when its frame is first pulled.
    first_pull_at: Option<String>,
    missing_ranges: i64,
    missing: Vec<MissingRange>,
    failing_frames: i64,
    failing: Vec<FailingFrame>,
    dead_letters: i64,
    /// Staged records the RS failed while it acknowledged others: dead-lettered once they reach
    /// `sink.max_attempts`.
    records_failing: i64,
    /// Frames with a re-check given up after `run.max_recheck_attempts` failures: late records
    /// there are not looked for again.
    rechecks_given_up: i64,
    late: Late,
    servers: Vec<ServerState>,
    timeline: Timeline,
}

/// Records that re-checks found after their frame was first delivered (late data).
#[derive(Debug, Serialize)]
struct Late {
    /// Late records found in the last 24 hours.
    records_24h: i64,
    /// How late they were: from their timestamp to the re-check that found them.
    lateness_p50_seconds: Option<i64>,
    lateness_p99_seconds: Option<i64>,
    /// The `frames.delay` that would have caught 99% of them on the first pull lies in this
    /// range (seconds after the frame's end).
    delay_needed_at_least_seconds: Option<i64>,
    delay_needed_at_most_seconds: Option<i64>,
    /// Delivered frames still waiting for a re-check.
    frames_awaiting_recheck: i64,
}

pub fn status(config: &Config, args: &Args, out: &mut dyn Write) -> Result<u8> {
    let ledger = super::open_ledger(config, super::Access::Read)?;
    let status = read(&ledger, &window(config, SystemClock.now()), &config.ledger.display().to_string())?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        print_text(out, &status, use_colour(args.color))?;
    }
    Ok(0)
}

/// The object `status --json` prints, read from an open ledger at `now`.
pub fn json(config: &Config, ledger: &Ledger, now: Epoch) -> Result<serde_json::Value> {
    let status = read(ledger, &window(config, now), &config.ledger.display().to_string())?;
    Ok(serde_json::to_value(status)?)
}

fn window(config: &Config, now: Epoch) -> Window {
    Window { reference: config.frames.start, size: config.frames.size, delay: config.frames.delay, now }
}

fn use_colour(choice: Colour) -> bool {
    match choice {
        Colour::Always => true,
        Colour::Never => false,
        // https://no-color.org: a NO_COLOR that is set and not empty turns colour off.
        Colour::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

fn read(ledger: &Ledger, window: &Window, path: &str) -> Result<Status> {
    let counts = ledger.status_counts()?;
    Ok(Status {
        version: 1,
        now: rfc3339(window.now),
        ledger: path.to_owned(),
        last_run: ledger.last_run()?,
        lag: ledger.lag()?,
        first_pull_at: waiting(window).map(rfc3339),
        missing_ranges: counts.missing_ranges,
        missing: ledger.missing_ranges(LIST_LIMIT)?,
        failing_frames: counts.failing_frames,
        failing: ledger.failing_frames(LIST_LIMIT)?,
        dead_letters: counts.dead_letters,
        records_failing: counts.records_failing,
        rechecks_given_up: counts.rechecks_given_up,
        late: late(ledger, window.now, counts.frames_awaiting_recheck)?,
        servers: ledger.server_states()?,
        timeline: timeline::read(ledger, window)?,
    })
}

/// When the first frame is pulled, while `frames.start` is not yet eligible.
fn waiting(window: &Window) -> Option<Epoch> {
    let first = crate::frames::first_pull_at(window.size, window.reference, window.delay);
    (window.now < first).then_some(first)
}

fn late(ledger: &Ledger, now: Epoch, frames_awaiting_recheck: i64) -> Result<Late> {
    let figures = ledger.late_figures(now - 86_400)?;
    Ok(Late {
        records_24h: figures.late_records,
        lateness_p50_seconds: figures.lateness_p50,
        lateness_p99_seconds: figures.lateness_p99,
        delay_needed_at_least_seconds: figures.delay_needed_at_least,
        delay_needed_at_most_seconds: figures.delay_needed_at_most,
        frames_awaiting_recheck,
    })
}

// ---- text ----------------------------------------------------------------------------------

fn print_text(out: &mut dyn Write, s: &Status, colour: bool) -> std::io::Result<()> {
    print_runs_and_lag(out, s)?;
    print_problems(out, s)?;
    print_late(out, &s.late)?;
    print_servers(out, s)?;
    print_timeline(out, &s.timeline, colour)
}

fn print_late(out: &mut dyn Write, late: &Late) -> std::io::Result<()> {
    let mut line = format!("late:      {} found by re-checks in the last 24h", plural(late.records_24h, "record"));
    if let (Some(p50), Some(p99)) = (late.lateness_p50_seconds, late.lateness_p99_seconds) {
        line += &format!(", {p50}s late at the median, {p99}s at p99");
    }
    if let (Some(low), Some(high)) = (late.delay_needed_at_least_seconds, late.delay_needed_at_most_seconds) {
        line += &format!("; frames.delay between {low}s and {high}s would have caught 99%");
    }
    writeln!(
        out,
        "{line}; {} {} a re-check",
        plural(late.frames_awaiting_recheck, "frame"),
        if late.frames_awaiting_recheck == 1 { "awaits" } else { "await" }
    )
}

/// Only what needs a look: a server asking for quiet now, or a clock off by more than 5 s; and
/// the RS's in-flight limit.
fn print_servers(out: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    for server in &s.servers {
        if let Some(until) = server.quiet_until.as_deref().filter(|u| *u > s.now.as_str()) {
            let reason = server.quiet_reason.as_deref().unwrap_or("");
            writeln!(out, "{:<11}asked for quiet until {until}: {reason}", format!("{}:", server.name))?;
        }
        if let Some(skew) = server.clock_skew_seconds.filter(|k| k.abs() > 5) {
            let side = if skew > 0 { "ahead of" } else { "behind" };
            writeln!(out, "{:<11}its clock is {}s {side} this machine's", format!("{}:", server.name), skew.abs())?;
        }
        if let Some(limit) = server.in_flight_limit {
            writeln!(
                out,
                "{:<11}{} in flight when the last push ended",
                format!("{}:", server.name),
                plural(limit, "request")
            )?;
        }
        if let (Some(at), Some(why)) = (&server.lookup_checked, &server.lookup_off_reason) {
            writeln!(out, "{:<11}lookups were off in the run at {at}: {why}", format!("{}:", server.name))?;
        }
    }
    Ok(())
}

fn print_runs_and_lag(out: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    match &s.last_run {
        Some(r) => writeln!(
            out,
            "last run:  {} at {}, exit {}, {} pushed",
            r.command,
            r.started,
            r.exit_code.map_or("running or killed".to_owned(), |code| code.to_string()),
            plural(r.records_pushed, "record")
        )?,
        None => writeln!(out, "last run:  none yet")?,
    }
    if let Some(first) = &s.first_pull_at {
        writeln!(out, "waiting:   frames.start is not yet eligible; its first frame is pulled from {first}")?;
    }
    if let Some(lag) = &s.lag {
        writeln!(
            out,
            "complete:  until {} (lag {}s); eligible until {}; {} missing",
            lag.complete_until,
            lag.lag_seconds,
            lag.eligible_until,
            plural(lag.missing_frames, "frame")
        )?;
    }
    Ok(())
}

fn print_problems(out: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    for range in &s.missing {
        writeln!(out, "missing:   {} .. {} ({})", range.from, range.to, plural(range.frames, "frame"))?;
    }
    if s.missing_ranges > s.missing.len() as i64 {
        writeln!(
            out,
            "missing:   ... {} more (SELECT * FROM missing_ranges)",
            plural(s.missing_ranges - s.missing.len() as i64, "range")
        )?;
    }
    for f in &s.failing {
        writeln!(
            out,
            "failing:   {} {} after {}, next at {}: {}",
            f.frame,
            f.state,
            plural(f.attempts, "attempt"),
            f.next_attempt.as_deref().unwrap_or("the next run"),
            f.last_error.as_deref().unwrap_or("")
        )?;
    }
    if s.failing_frames > s.failing.len() as i64 {
        writeln!(
            out,
            "failing:   ... {} more frames (SELECT * FROM failing_frames)",
            s.failing_frames - s.failing.len() as i64
        )?;
    }
    match s.dead_letters {
        0 => writeln!(out, "dead letters: 0")?,
        n => writeln!(out, "dead letters: {n} (framesync dead-letters list)")?,
    }
    if s.records_failing > 0 {
        writeln!(
            out,
            "failing:   {} staged records the RS failed while acknowledging others; dead-lettered after sink.max_attempts (SELECT frame, uid, attempts, last_error FROM staged WHERE attempts > 0)",
            s.records_failing
        )?;
    }
    if s.rechecks_given_up > 0 {
        writeln!(
            out,
            "re-checks: given up on {} after run.max_recheck_attempts failures; late records there are not looked for (SELECT start, recheck_error FROM frames WHERE rechecks_given_up > 0)",
            plural(s.rechecks_given_up, "frame")
        )?;
    }
    Ok(())
}

const INDENT: &str = "           ";

fn print_timeline(out: &mut dyn Write, t: &Timeline, colour: bool) -> std::io::Result<()> {
    let per = humantime::format_duration(std::time::Duration::from_secs(t.cell_seconds as u64));
    let from = t.cells.first().map_or("", |c| c.start.as_str());
    writeln!(out, "timeline:  24h from {from}, one cell per {per} (UTC), oldest first")?;
    if t.cell_seconds == 3600 {
        writeln!(out, "{INDENT}{}", ruler(t))?;
    }
    let cells: String = t.cells.iter().map(|c| paint(c.mark(), c.glyph(), colour)).collect();
    writeln!(out, "{INDENT}{cells}")?;
    let legend: Vec<String> =
        Mark::ALL.iter().map(|m| format!("{} {}", paint(*m, m.glyph(), colour), m.name())).collect();
    writeln!(out, "{INDENT}{}; {}", legend.join("  "), timeline::PARTLY)
}

/// The hour above every sixth hourly cell.
fn ruler(t: &Timeline) -> String {
    let mut line = vec![' '; t.cells.len() + 1];
    for (i, cell) in t.cells.iter().enumerate() {
        let hour = &cell.start[11..13];
        if hour.parse::<u32>().is_ok_and(|h| h % 6 == 0) {
            line.splice(i..i + 2, hour.chars());
        }
    }
    line.into_iter().collect::<String>().trim_end().to_owned()
}

fn paint(mark: Mark, glyph: char, colour: bool) -> String {
    if !colour {
        return glyph.to_string();
    }
    let code = match mark {
        Mark::Delivered => "32",
        Mark::Pending => "36",
        Mark::Missing => "33",
        Mark::Failing => "1;31",
        Mark::NotYetDue => "2",
    };
    format!("\x1b[{code}m{glyph}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Cell;

    fn cell(start: &str, delivered: i64) -> Cell {
        Cell { start: start.into(), delivered, pending: 0, failing: 0, missing: 0, not_yet_due: 0 }
    }

    #[test]
    fn the_ruler_names_every_sixth_hour_above_its_cell() {
        let cells = (0..24).map(|h| cell(&format!("2026-11-24T{:02}:00:00Z", (h + 11) % 24), 60)).collect();
        let t = Timeline { cell_seconds: 3600, cells };
        assert_eq!(ruler(&t), " 12    18    00    06");
    }

    #[test]
    fn colour_wraps_each_glyph_and_plain_text_has_no_escapes() {
        assert_eq!(paint(Mark::Failing, 'F', false), "F");
        assert_eq!(paint(Mark::Failing, 'F', true), "\x1b[1;31mF\x1b[0m");
        assert!(!paint(Mark::Delivered, '#', false).contains('\x1b'));
    }

    #[test]
    fn the_timeline_draws_a_partly_delivered_cell_in_lower_case_and_says_so() {
        let mut partly = cell("2026-11-24T11:00:00Z", 58);
        partly.missing = 2;
        let mut none = cell("2026-11-24T12:00:00Z", 0);
        none.missing = 60;
        let t = Timeline { cell_seconds: 3600, cells: vec![partly, none] };
        let mut out = Vec::new();
        print_timeline(&mut out, &t, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("{INDENT}mM\n")), "{text}");
        assert!(text.contains("lower case (p m f): some of the cell's frames delivered"), "{text}");
    }
}
