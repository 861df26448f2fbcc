//! `dead-letters list | retry | drop`: the records the RS refused for good or that failed
//! validation, selected by filters. `retry` gives them back to their frames for the next
//! `push` or `run`; `drop` deletes them. Both take the push lock; the rules they follow are in
//! [`crate::dead_letters`].

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;

use crate::Usage;
use crate::config::Config;
use crate::dead_letters::{Filter, Letter};
use crate::delivery::DeadReason;
use crate::frames::{Epoch, parse_time};
use crate::job::{Clock, SystemClock};
use crate::lock::Side;
use crate::plural::plural;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// List dead letters, newest first.
    List(ListArgs),
    /// Stage the selected dead letters again: the next `push` or `run` sends them.
    Retry(BulkArgs),
    /// Delete the selected dead letters: they are not sent (they stay counted in frames.dead).
    Drop(BulkArgs),
    /// Set a staged record aside by hand (e.g. one the RS keeps failing): it becomes a dead
    /// letter with reason `manual`, and its frame is delivered without it.
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The record's UID.
    #[arg(long)]
    pub uid: String,
    /// Only in the frame starting at this time (RFC 3339 or epoch seconds).
    #[arg(long, value_name = "TIME", value_parser = time)]
    pub frame: Option<Epoch>,
    /// Why, kept with the dead letter.
    #[arg(long, default_value = "no reason given")]
    pub why: String,
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only dead letters of frames starting at or after this time (RFC 3339 or epoch seconds).
    #[arg(long, value_name = "TIME", value_parser = time)]
    pub frame_from: Option<Epoch>,
    /// Only dead letters of frames starting before this time (RFC 3339 or epoch seconds).
    #[arg(long, value_name = "TIME", value_parser = time)]
    pub frame_to: Option<Epoch>,
    /// Only this reason: rejected (refused by the RS), invalid (failed validation, never sent),
    /// exhausted (the RS failed it sink.max_attempts times), manual (set aside by hand).
    #[arg(long, value_enum)]
    pub reason: Option<DeadReason>,
    /// Only this HTTP status from the RS.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only the record with this UID.
    #[arg(long)]
    pub uid: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Print JSON (with each record's body and the RS's answer) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Show this one dead letter in full: its reason, the RS's whole answer and the body sent.
    #[arg(long, conflicts_with_all = ["frame_from", "frame_to", "reason", "status", "uid", "limit"])]
    pub id: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Act on every dead letter (required when no filter is given).
    #[arg(long)]
    pub all: bool,
}

fn time(text: &str) -> Result<Epoch, String> {
    parse_time(text)
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            frame_from: self.frame_from,
            frame_to: self.frame_to,
            reason: self.reason,
            status: self.status,
            uid: self.uid.clone(),
        }
    }
}

pub fn dead_letters(config: &Config, args: Args, out: &mut dyn Write) -> Result<u8> {
    match args.action {
        Action::List(list) => self::list(config, &list, out),
        Action::Retry(bulk) => retry(config, &bulk, out),
        Action::Drop(bulk) => drop_letters(config, &bulk, out),
        Action::Add(add) => self::add(config, &add, out),
    }
}

fn list(config: &Config, args: &ListArgs, out: &mut dyn Write) -> Result<u8> {
    let ledger = super::open_ledger(config, super::Access::Read)?;
    if let Some(id) = args.id {
        let Some(letter) = ledger.dead_letter_by_id(id)? else {
            writeln!(out, "no dead letter has id {id} (`framesync dead-letters list` shows their ids)")?;
            return Ok(1);
        };
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&letter)?)?;
        } else {
            print_one(out, &letter)?;
        }
        return Ok(0);
    }
    let letters = ledger.dead_letters(&args.filter.filter(), args.limit)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&letters)?)?;
    } else {
        print_table(out, &letters)?;
        if letters.len() as i64 == args.limit {
            writeln!(out, "(the newest {}; --limit shows more)", args.limit)?;
        }
    }
    Ok(0)
}

/// The filter of a bulk action, refusing none without `--all`.
fn bulk_filter(args: &BulkArgs, action: &str) -> Result<Filter> {
    let filter = args.filter.filter();
    if filter.is_empty() && !args.all {
        return Err(Usage(format!(
            "dead-letters {action}: name which dead letters (--uid, --reason, --status, --frame-from, --frame-to), or pass --all for every one"
        ))
        .into());
    }
    Ok(filter)
}

fn retry(config: &Config, args: &BulkArgs, out: &mut dyn Write) -> Result<u8> {
    let filter = bulk_filter(args, "retry")?;
    super::existing_ledger(config)?;
    let _lock = super::lock_by_hand(config, &[Side::Push])?;
    let mut ledger = super::open_ledger(config, super::Access::Write)?;
    let r = ledger.retry_dead_letters(&filter, SystemClock.now())?;
    if r.staged + r.already_delivered == 0 {
        writeln!(out, "no dead letter matches")?;
        return Ok(0);
    }
    writeln!(
        out,
        "retried {}: {} staged again ({} reopened); the next `framesync push` or `run` sends them",
        plural(r.staged + r.already_delivered, "dead letter"),
        r.staged,
        plural(r.frames_reopened, "delivered frame")
    )?;
    if r.already_delivered > 0 {
        writeln!(
            out,
            "{} were acknowledged by the RS meanwhile: their dead letters went, nothing is sent",
            r.already_delivered
        )?;
    }
    Ok(0)
}

fn drop_letters(config: &Config, args: &BulkArgs, out: &mut dyn Write) -> Result<u8> {
    let filter = bulk_filter(args, "drop")?;
    super::existing_ledger(config)?;
    let _lock = super::lock_by_hand(config, &[Side::Push])?;
    let mut ledger = super::open_ledger(config, super::Access::Write)?;
    let d = ledger.drop_dead_letters(&filter)?;
    writeln!(out, "dropped {} (they stay counted in frames.dead)", plural(d.dropped, "dead letter"))?;
    if d.kept_for_recheck > 0 {
        writeln!(
            out,
            "kept {}: their frames await a re-check, which would find the records unknown and send them again; drop them after it",
            d.kept_for_recheck
        )?;
    }
    Ok(0)
}

fn add(config: &Config, args: &AddArgs, out: &mut dyn Write) -> Result<u8> {
    super::existing_ledger(config)?;
    let _lock = super::lock_by_hand(config, &[Side::Push])?;
    let mut ledger = super::open_ledger(config, super::Access::Write)?;
    let added = ledger.dead_letter_by_hand(&args.uid, args.frame, &args.why, SystemClock.now())?;
    if added.added == 0 {
        writeln!(
            out,
            "no pending staged record has UID {:?}{}; nothing was changed",
            args.uid,
            if added.not_pending > 0 { " (it is acknowledged or a dead letter already)" } else { "" }
        )?;
        return Ok(1);
    }
    writeln!(
        out,
        "set aside {} with UID {:?} as dead letters (reason manual); the next `push` or `run` delivers their frames without them; `dead-letters retry --uid` sends them again",
        plural(added.added, "staged record"),
        args.uid
    )?;
    Ok(0)
}

fn print_table(out: &mut dyn Write, letters: &[Letter]) -> std::io::Result<()> {
    if letters.is_empty() {
        return writeln!(out, "no dead letters");
    }
    let uid_width = letters.iter().map(|l| l.uid.chars().count()).max().unwrap_or(3).max(3);
    writeln!(
        out,
        "{:<6} {:<20} {:<uid_width$} {:<8} {:<6} {:<20} detail",
        "id", "frame", "uid", "reason", "status", "at"
    )?;
    for l in letters {
        let status = l.status.map_or_else(|| "-".into(), |s| s.to_string());
        let detail = match &l.response {
            Some(answer) => format!("{}: {}", l.detail, answer),
            None => l.detail.clone(),
        };
        writeln!(
            out,
            "{:<6} {:<20} {:<uid_width$} {:<8} {:<6} {:<20} {}",
            l.id,
            l.frame,
            l.uid,
            l.reason,
            status,
            l.at,
            shorten(&detail, 120)
        )?;
    }
    Ok(())
}

/// One dead letter in full, nothing shortened: the body and the answer as they are stored.
fn print_one(out: &mut dyn Write, l: &Letter) -> std::io::Result<()> {
    writeln!(out, "id:       {}", l.id)?;
    writeln!(out, "frame:    {}", l.frame)?;
    writeln!(out, "uid:      {}", l.uid)?;
    writeln!(out, "reason:   {}", l.reason)?;
    writeln!(out, "status:   {}", l.status.map_or_else(|| "-".into(), |s| s.to_string()))?;
    writeln!(out, "at:       {}", l.at)?;
    writeln!(out, "detail:   {}", l.detail)?;
    writeln!(out, "response:")?;
    writeln!(
        out,
        "{}",
        l.response.as_deref().unwrap_or("(none: the RS did not answer, or the record was never sent)")
    )?;
    writeln!(out, "body:")?;
    writeln!(out, "{}", l.body)
}

/// One line of at most `max` characters.
fn shorten(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    line.chars().take(max - 1).chain(['…']).collect()
}
