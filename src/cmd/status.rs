//! `status`: what is delivered, missing and failing, read from the ledger's operator views.

use anyhow::Result;
use rusqlite::Connection;
use serde::Serialize;

use crate::config::Config;
use crate::ledger::Ledger;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    lag: Option<Lag>,
    missing: Vec<Range>,
    failing: Vec<Failing>,
    dead_letters: i64,
    last_run: Option<LastRun>,
}

#[derive(Debug, Serialize)]
struct Lag {
    eligible_until: String,
    complete_until: String,
    lag_seconds: i64,
    missing_frames: i64,
}

#[derive(Debug, Serialize)]
struct Range {
    from: String,
    to: String,
    frames: i64,
}

#[derive(Debug, Serialize)]
struct Failing {
    frame: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt: Option<String>,
}

#[derive(Debug, Serialize)]
struct LastRun {
    command: String,
    started: String,
    exit_code: String,
    records_pushed: i64,
    message: Option<String>,
}

pub fn status(config: &Config, args: &Args) -> Result<u8> {
    let ledger = Ledger::open(&config.ledger, config.run.sync)?;
    let status = read(ledger.conn())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&status);
    }
    Ok(0)
}

fn read(conn: &Connection) -> Result<Status> {
    let lag = conn
        .query_row("SELECT eligible_until, complete_until, lag_seconds, missing_frames FROM lag", [], |r| {
            Ok(Lag {
                eligible_until: r.get(0)?,
                complete_until: r.get(1)?,
                lag_seconds: r.get(2)?,
                missing_frames: r.get(3)?,
            })
        })
        .ok();
    let missing = rows(conn, "SELECT from_time, to_time, frames FROM missing_ranges LIMIT 20", |r| {
        Ok(Range { from: r.get(0)?, to: r.get(1)?, frames: r.get(2)? })
    })?;
    let failing =
        rows(conn, "SELECT frame, state, attempts, last_error, next_attempt FROM failing_frames LIMIT 20", |r| {
            Ok(Failing {
                frame: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                next_attempt: r.get(4)?,
            })
        })?;
    let dead_letters = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
    let last_run =
        rows(conn, "SELECT command, started, exit_code, records_pushed, message FROM recent_runs LIMIT 1", |r| {
            Ok(LastRun {
                command: r.get(0)?,
                started: r.get(1)?,
                exit_code: r.get(2)?,
                records_pushed: r.get(3)?,
                message: r.get(4)?,
            })
        })?
        .pop();
    Ok(Status { lag, missing, failing, dead_letters, last_run })
}

fn rows<T>(conn: &Connection, sql: &str, map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], map)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn print_text(s: &Status) {
    match &s.last_run {
        Some(r) => println!(
            "last run:  {} at {}, exit {}, {} records pushed",
            r.command, r.started, r.exit_code, r.records_pushed
        ),
        None => println!("last run:  none yet"),
    }
    if let Some(lag) = &s.lag {
        println!(
            "complete:  until {} (lag {}s); eligible until {}; {} frames missing",
            lag.complete_until, lag.lag_seconds, lag.eligible_until, lag.missing_frames
        );
    }
    for range in &s.missing {
        println!("missing:   {} .. {} ({} frames)", range.from, range.to, range.frames);
    }
    for f in &s.failing {
        println!(
            "failing:   {} {} after {} attempts, next at {}: {}",
            f.frame,
            f.state,
            f.attempts,
            f.next_attempt.as_deref().unwrap_or("the next run"),
            f.last_error.as_deref().unwrap_or("")
        );
    }
    println!("dead letters: {}", s.dead_letters);
}
