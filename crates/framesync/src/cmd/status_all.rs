//! `status --all DIR`: one table over the pipelines of DIR (its `*.toml` files), a row each —
//! lag, missing frames, failing frames, dead letters, the last run — read in this process from
//! each ledger as `status` reads it (read-only: no ledger is created or migrated). A pipeline
//! that cannot be read gets its row all the same, with the reason in its last cell.
//!
//! Exit code: as `status` would exit for each pipeline (0 readable, 2 config error or a ledger
//! of another pipeline, 3 no ledger yet or a ledger unusable), the most severe of them.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::Usage;
use crate::config::Config;

/// One row; `--json` prints an array of them. Fields may be added, none renamed or removed.
#[derive(Debug, Serialize)]
pub struct Row {
    pub pipeline: String,
    pub config: String,
    pub ledger: Option<String>,
    pub lag_seconds: Option<i64>,
    pub missing_frames: Option<i64>,
    pub failing_frames: Option<i64>,
    pub dead_letters: Option<i64>,
    pub last_run: Option<Run>,
    /// Why the pipeline cannot be read; none when it can.
    pub error: Option<String>,
    /// What `framesync --config FILE status` would exit with.
    pub exit_code: u8,
}

/// The pipeline's newest run.
#[derive(Debug, Serialize)]
pub struct Run {
    pub command: String,
    pub started: String,
    /// None while the run is going, or when it was killed before it could end.
    pub exit_code: Option<i64>,
}

pub fn status_all(dir: &Path, json: bool, out: &mut dyn Write) -> Result<u8> {
    let files = super::fleet::configs(dir)?;
    let mut rows: Vec<Row> = files.iter().map(|file| row(file)).collect();
    let names: Vec<String> = rows.iter().map(|r| r.pipeline.clone()).collect();
    for (row, clash) in rows.iter_mut().zip(super::fleet::name_clashes(&names, &files)) {
        if let Some(clash) = clash {
            row.error = Some(clash);
            row.exit_code = row.exit_code.max(2);
        }
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        print_table(out, &rows)?;
    }
    Ok(rows.iter().map(|r| r.exit_code).max().unwrap_or(0))
}

/// The row of the pipeline whose config is `file`; every message in it scrubbed of that
/// pipeline's secrets (which are installed too, so the output scrubs them as well).
fn row(file: &Path) -> Row {
    let stem = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut row = Row {
        pipeline: stem.clone(),
        config: file.display().to_string(),
        ledger: None,
        lag_seconds: None,
        missing_frames: None,
        failing_frames: None,
        dead_letters: None,
        last_run: None,
        error: None,
        exit_code: 0,
    };
    crate::logging::set_pipeline(&stem);
    let config = match super::read_config(file) {
        Ok(config) => config,
        Err(e) => {
            row.error = Some(format!("config: {}", crate::redact::scrub(&short(&e))));
            row.exit_code = 2;
            return row;
        }
    };
    crate::redact::install(&config.secrets);
    crate::logging::set_pipeline(&config.pipeline_name());
    row.pipeline = config.pipeline_name();
    row.ledger = Some(config.ledger.display().to_string());
    if let Err(e) = read(&config, &mut row) {
        row.exit_code = code(&e);
        row.error = Some(config.secrets.scrub(&reason(&e)));
    }
    row
}

/// The figures, by the ledger's own reads (those `status` uses).
fn read(config: &Config, row: &mut Row) -> Result<()> {
    let ledger = super::open_ledger(config, super::Access::Read)?;
    let lag = ledger.lag()?;
    let counts = ledger.status_counts()?;
    row.lag_seconds = lag.as_ref().map(|l| l.lag_seconds);
    row.missing_frames = Some(lag.map_or(0, |l| l.missing_frames));
    row.failing_frames = Some(counts.failing_frames);
    row.dead_letters = Some(counts.dead_letters);
    row.last_run = ledger.last_run()?.map(|r| Run { command: r.command, started: r.started, exit_code: r.exit_code });
    Ok(())
}

/// What `status` alone would exit with on this error (see `main`).
fn code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<Usage>().is_some() { 2 } else { 3 }
}

/// The reason in one short cell.
fn reason(error: &anyhow::Error) -> String {
    if error.chain().any(|e| e.is::<crate::ledger::Absent>()) {
        "no ledger yet".into()
    } else if error.downcast_ref::<Usage>().is_some() {
        "the ledger belongs to another pipeline (framesync status says how)".into()
    } else {
        short(error)
    }
}

/// The error's first line, all its causes on it.
fn short(error: &anyhow::Error) -> String {
    format!("{error:#}").lines().next().unwrap_or_default().to_owned()
}

fn print_table(out: &mut dyn Write, rows: &[Row]) -> std::io::Result<()> {
    let cells: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let header = ["PIPELINE", "LAG", "MISSING", "FAILING", "DEAD", "LAST RUN", "PROBLEM"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn cells(row: &Row) -> [String; 7] {
    let number = |n: Option<i64>| n.map_or("-".to_owned(), |n| n.to_string());
    let last_run = match (&row.last_run, &row.error) {
        (Some(run), _) => {
            let code = run.exit_code.map_or("running or killed".to_owned(), |c| format!("exit {c}"));
            format!("{} {} {code}", run.started, run.command)
        }
        (None, None) => "never".into(),
        (None, Some(_)) => "-".into(),
    };
    [
        row.pipeline.clone(),
        row.lag_seconds.map_or("-".to_owned(), |s| format!("{s}s")),
        number(row.missing_frames),
        number(row.failing_frames),
        number(row.dead_letters),
        last_run,
        row.error.clone().unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_its_columns_and_marks_an_unreadable_pipeline() {
        let good = Row {
            pipeline: "orders".into(),
            config: "orders.toml".into(),
            ledger: Some("orders.db".into()),
            lag_seconds: Some(120),
            missing_frames: Some(1),
            failing_frames: Some(0),
            dead_letters: Some(3),
            last_run: Some(Run { command: "run".into(), started: "2026-11-24T12:00:00Z".into(), exit_code: Some(0) }),
            error: None,
            exit_code: 0,
        };
        let bad = Row {
            pipeline: "billing".into(),
            config: "billing.toml".into(),
            ledger: Some("billing.db".into()),
            lag_seconds: None,
            missing_frames: None,
            failing_frames: None,
            dead_letters: None,
            last_run: None,
            error: Some("no ledger yet".into()),
            exit_code: 3,
        };
        let mut out = Vec::new();
        print_table(&mut out, &[good, bad]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PIPELINE  LAG   MISSING  FAILING  DEAD  LAST RUN                         PROBLEM\n\
             orders    120s  1        0        3     2026-11-24T12:00:00Z run exit 0\n\
             billing   -     -        -        -     -                                no ledger yet\n"
        );
    }
}
