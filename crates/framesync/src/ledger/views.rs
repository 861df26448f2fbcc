//! Read models: what `status`, the metrics file, the timeline and `verify` read, as typed values,
//! mostly from the operator views that the migrations define.

use anyhow::Result;
use rusqlite::{OptionalExtension, named_params, params};
use serde::Serialize;

use super::Ledger;
use crate::frames::{Epoch, rfc3339};

/// How far the pipeline is, from the `lag` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub eligible_until: String,
    pub complete_until: String,
    pub lag_seconds: i64,
    pub missing_frames: i64,
}

/// A range of missing frames, from the `missing_ranges` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingRange {
    pub from: String,
    pub to: String,
    pub frames: i64,
}

/// A frame waiting for a retry, from the `failing_frames` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailingFrame {
    pub frame: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt: Option<String>,
}

/// The newest run, from the `recent_runs` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    pub command: String,
    pub started: String,
    pub seconds: Option<i64>,
    /// None while the run is going, or when it was killed before it could end.
    pub exit_code: Option<i64>,
    pub records_pushed: i64,
    pub message: Option<String>,
}

/// What framesync remembers about a server between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerState {
    pub name: String,
    /// The server asked for quiet (429/503 with Retry-After): no request before this time.
    pub quiet_until: Option<String>,
    pub quiet_reason: Option<String>,
    /// The server's clock minus ours, from its Date header, and when that was measured.
    pub clock_skew_seconds: Option<i64>,
    pub skew_measured: Option<String>,
    /// The sink's lookup: when a run last checked it could say "absent", and, if it could not,
    /// why lookups were off in that run.
    pub lookup_checked: Option<String>,
    pub lookup_off_reason: Option<String>,
    /// The sink's: requests in flight allowed when the last push ended.
    pub in_flight_limit: Option<i64>,
}

/// The counts `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub missing_ranges: i64,
    pub failing_frames: i64,
    pub dead_letters: i64,
    /// Staged records the RS failed while it acknowledged others.
    pub records_failing: i64,
    /// Frames with a re-check given up.
    pub rechecks_given_up: i64,
    /// Delivered frames still waiting for a re-check.
    pub frames_awaiting_recheck: i64,
}

/// The gauges and counters of the metrics file; 0 where the ledger has no figure yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricFigures {
    pub missing_frames: f64,
    pub lag_seconds: f64,
    pub failing_frames: f64,
    pub dead_letters: f64,
    /// Dead letters ever written: never lowered by `dead-letters retry` or `drop`.
    pub dead_letters_written: f64,
    pub records_failing: f64,
    pub rechecks_given_up: f64,
    pub records_pushed: f64,
    pub late_records: f64,
}

/// The last finished run of a command, and its last successful one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRun {
    pub command: String,
    pub ended: Epoch,
    pub exit_code: i64,
    pub seconds: i64,
    pub last_success: Option<Epoch>,
}

/// The timeline's window, as the cells query takes it: `cells` cells of `cell` seconds from
/// `from`; frames counted from `lo`; spans up to `horizon`; frame rows before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellWindow {
    pub from: Epoch,
    pub to: Epoch,
    pub cell: i64,
    pub cells: i64,
    pub lo: Epoch,
    pub horizon: Epoch,
}

/// What the ledger counts in one timeline cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCounts {
    pub start: Epoch,
    /// Delivered frame-seconds.
    pub delivered_s: i64,
    pub failing: i64,
    pub pending: i64,
    /// Open frames inside a delivered span.
    pub reopened: i64,
}

/// Where the ledger knows a UID from, in any frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidSeen {
    pub delivered: bool,
    /// Staged or dead-lettered.
    pub elsewhere: bool,
}

/// Spans are found by their `end` (the `+` keeps SQLite off the `start` key, which would read
/// every span since the reference time), frames by their `start`: both only within the window.
/// Per cell: delivered frame-seconds, failing frames, pending frames, and open frames inside a
/// delivered span (a re-check or a retried dead letter put them back to `pulled`: they count
/// as pending or failing, not delivered), from the spans and frame rows inside the window.
/// Frames belong to the cell their start falls in.
pub(super) const CELLS_SQL: &str = "
WITH RECURSIVE cell(i, lo, hi) AS (
    SELECT 0, :from, :from + :cell
    UNION ALL
    SELECT i + 1, hi, hi + :cell FROM cell WHERE i + 1 < :cells
),
span AS (
    SELECT MAX(ds.start, :lo) AS start, MIN(ds.end, :horizon) AS end FROM delivered_spans ds
    WHERE ds.end > :lo AND +ds.start < :horizon
),
open AS MATERIALIZED (
    SELECT fr.start, fr.state, fr.last_error IS NOT NULL AS failed,
           EXISTS (SELECT 1 FROM delivered_spans ds WHERE ds.end > fr.start AND +ds.start <= fr.start) AS in_span
    FROM frames fr
    WHERE fr.start >= :lo AND fr.start < :to AND fr.state <> 'delivered'
)
SELECT c.lo,
       (SELECT COALESCE(SUM(MIN(sp.end, c.hi) - MAX(sp.start, c.lo)), 0) FROM span sp
        WHERE sp.end > c.lo AND sp.start < c.hi),
       (SELECT COUNT(*) FROM open o WHERE o.start >= c.lo AND o.start < c.hi AND o.failed),
       (SELECT COUNT(*) FROM open o WHERE o.start >= c.lo AND o.start < c.hi AND NOT o.failed
            AND o.state IN ('pulled', 'pushing')),
       (SELECT COUNT(*) FROM open o WHERE o.start >= c.lo AND o.start < c.hi AND o.in_span)
FROM cell c ORDER BY c.lo";

impl Ledger {
    fn rows<T>(&self, sql: &str, map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], map)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn count(&self, sql: &str) -> Result<i64> {
        Ok(self.conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
    }

    /// The counts `status` shows.
    pub fn status_counts(&self) -> Result<StatusCounts> {
        Ok(StatusCounts {
            missing_ranges: self.count("SELECT COUNT(*) FROM missing_ranges")?,
            failing_frames: self.count("SELECT COUNT(*) FROM failing_frames")?,
            dead_letters: self.count("SELECT COUNT(*) FROM dead_letters")?,
            records_failing: self.count("SELECT COUNT(*) FROM staged WHERE attempts > 0")?,
            rechecks_given_up: self.count("SELECT COUNT(*) FROM frames WHERE rechecks_given_up > 0")?,
            frames_awaiting_recheck: self.count("SELECT COUNT(*) FROM frames WHERE next_recheck IS NOT NULL")?,
        })
    }

    /// The first `limit` missing ranges.
    pub fn missing_ranges(&self, limit: i64) -> Result<Vec<MissingRange>> {
        let sql = format!("SELECT from_time, to_time, frames FROM missing_ranges LIMIT {limit}");
        self.rows(&sql, |r| Ok(MissingRange { from: r.get(0)?, to: r.get(1)?, frames: r.get(2)? }))
    }

    pub fn lag(&self) -> Result<Option<Lag>> {
        let sql = "SELECT eligible_until, complete_until, lag_seconds, missing_frames FROM lag";
        let lag = self.rows(sql, |r| {
            Ok(Lag {
                eligible_until: r.get(0)?,
                complete_until: r.get(1)?,
                lag_seconds: r.get(2)?,
                missing_frames: r.get(3)?,
            })
        })?;
        Ok(lag.into_iter().next())
    }

    /// The first `limit` failing frames.
    pub fn failing_frames(&self, limit: i64) -> Result<Vec<FailingFrame>> {
        let sql = format!("SELECT frame, state, attempts, last_error, next_attempt FROM failing_frames LIMIT {limit}");
        self.rows(&sql, |r| {
            Ok(FailingFrame {
                frame: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                next_attempt: r.get(4)?,
            })
        })
    }

    pub fn last_run(&self) -> Result<Option<LastRun>> {
        let sql = "SELECT command, started, seconds, (SELECT exit_code FROM runs WHERE runs.id = recent_runs.id AND ended_at IS NOT NULL),
                          records_pushed, message FROM recent_runs LIMIT 1";
        let run = self.rows(sql, |r| {
            Ok(LastRun {
                command: r.get(0)?,
                started: r.get(1)?,
                seconds: r.get(2)?,
                exit_code: r.get(3)?,
                records_pushed: r.get(4)?,
                message: r.get(5)?,
            })
        })?;
        Ok(run.into_iter().next())
    }

    /// Every server's row, the sink first.
    pub fn server_states(&self) -> Result<Vec<ServerState>> {
        let sql = "SELECT name, quiet_until, quiet_reason, clock_skew, skew_at, lookup_checked_at, lookup_off_reason,
                      in_flight_limit
               FROM servers ORDER BY name DESC";
        self.rows(sql, |r| {
            Ok(ServerState {
                name: r.get(0)?,
                quiet_until: r.get::<_, Option<Epoch>>(1)?.map(rfc3339),
                quiet_reason: r.get(2)?,
                clock_skew_seconds: r.get(3)?,
                skew_measured: r.get::<_, Option<Epoch>>(4)?.map(rfc3339),
                lookup_checked: r.get::<_, Option<Epoch>>(5)?.map(rfc3339),
                lookup_off_reason: r.get(6)?,
                in_flight_limit: r.get(7)?,
            })
        })
    }

    /// The gauges and counters of the metrics file.
    pub fn metric_figures(&self) -> Result<MetricFigures> {
        let one = |sql: &str| -> Result<f64> {
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row([], |r| r.get::<_, Option<f64>>(0))
                .optional()?
                .flatten()
                .unwrap_or(0.0))
        };
        Ok(MetricFigures {
            missing_frames: one("SELECT missing_frames FROM lag")?,
            lag_seconds: one("SELECT lag_seconds FROM lag")?,
            failing_frames: one("SELECT COUNT(*) FROM failing_frames")?,
            dead_letters: one("SELECT COUNT(*) FROM dead_letters")?,
            dead_letters_written: one("SELECT total FROM dead_letters_written")?,
            records_failing: one("SELECT COUNT(*) FROM staged WHERE attempts > 0")?,
            rechecks_given_up: one("SELECT COUNT(*) FROM frames WHERE rechecks_given_up > 0")?,
            records_pushed: one("SELECT records_pushed FROM totals")?,
            late_records: one("SELECT late_records FROM totals")?,
        })
    }

    /// Per command, in order of its name: its last finished run, and its last successful one.
    pub fn command_runs(&self) -> Result<Vec<CommandRun>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT command, ended_at, exit_code, ended_at - started_at FROM runs
         WHERE id IN (SELECT MAX(id) FROM runs WHERE ended_at IS NOT NULL GROUP BY command) ORDER BY command",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Epoch>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut runs = Vec::new();
        for row in rows {
            let (command, ended, exit_code, seconds) = row?;
            let last_success = self.last_success(&command)?;
            runs.push(CommandRun { command, ended, exit_code, seconds, last_success });
        }
        Ok(runs)
    }

    fn last_success(&self, command: &str) -> Result<Option<Epoch>> {
        Ok(self
            .conn
            .prepare_cached("SELECT MAX(ended_at) FROM runs WHERE command = ?1 AND exit_code = 0")?
            .query_row([command], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// The timeline's cells, oldest first.
    pub fn timeline_cells(&self, w: &CellWindow) -> Result<Vec<CellCounts>> {
        let mut stmt = self.conn.prepare_cached(CELLS_SQL)?;
        let params = named_params! {
            ":from": w.from, ":to": w.to, ":cell": w.cell, ":cells": w.cells, ":lo": w.lo, ":horizon": w.horizon,
        };
        let rows = stmt.query_map(params, |r| {
            Ok(CellCounts {
                start: r.get(0)?,
                delivered_s: r.get(1)?,
                failing: r.get(2)?,
                pending: r.get(3)?,
                reopened: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The UIDs the ledger still holds as delivered in the frame starting at `start`.
    pub fn delivered_uids(&self, start: Epoch) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT uid FROM delivered WHERE frame = ?1")?;
        let uids = stmt.query_map([start], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(uids)
    }

    /// Where the ledger knows `uid` from.
    pub fn uid_seen(&self, uid: &str) -> Result<UidSeen> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM delivered WHERE uid = ?1),
                EXISTS (SELECT 1 FROM staged WHERE uid = ?1) OR EXISTS (SELECT 1 FROM dead_letters WHERE uid = ?1)",
            params![uid],
            |r| Ok(UidSeen { delivered: r.get(0)?, elsewhere: r.get(1)? }),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::CELLS_SQL;
    use crate::ledger::testing::ledger;

    const T0: i64 = 1_795_564_800; // 2026-11-25T00:00:00Z

    #[test]
    fn the_timeline_reads_only_the_window_through_indexes_never_a_whole_table() {
        let (_dir, l) = ledger();
        let mut stmt = l.conn.prepare(&format!("EXPLAIN QUERY PLAN {CELLS_SQL}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map([T0, T0, 3600, 24, T0, T0], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // `ds` and `fr` are the tables; `cell`, `c`, `o` and `sp` are the window's own rows.
        let tables = ["delivered_spans", " ds ", " fr ", "frames"];
        let reads: Vec<&String> = plan.iter().filter(|d| tables.iter().any(|t| format!("{d} ").contains(t))).collect();
        assert!(!reads.is_empty(), "{plan:#?}");
        for read in reads {
            let windowed = read.contains("(end>?)")
                || read.contains("(start>? AND start<?)")
                || read.contains("(rowid>? AND rowid<?)");
            assert!(read.starts_with("SEARCH") && windowed, "{read} is not bounded by the window: {plan:#?}");
        }
    }
}
