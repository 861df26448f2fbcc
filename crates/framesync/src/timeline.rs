//! The timeline of the last 24 hours that `status` draws: one cell per hour (or per frame, for
//! frames longer than an hour), each counting its frames as delivered, pending, failing,
//! missing or not yet due. It is computed with SQL over `delivered_spans` and the frame rows of
//! the window only, so its cost does not grow with the length of the horizon.

use anyhow::Result;
use serde::Serialize;

use crate::frames::{Epoch, FrameSize, eligible_until, rfc3339};
use crate::ledger::Ledger;
use crate::ledger::views::{CellCounts, CellWindow};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// What the timeline is drawn from: the pipeline's frames and the time.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub reference: Epoch,
    pub size: FrameSize,
    pub delay: i64,
    pub now: Epoch,
}

/// One cell: its frames by state. `missing` are eligible frames neither delivered, staged nor
/// failing; `not_yet_due` are frames before the reference time or not yet eligible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub start: String,
    pub delivered: i64,
    pub pending: i64,
    pub failing: i64,
    pub missing: i64,
    pub not_yet_due: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub cell_seconds: i64,
    pub cells: Vec<Cell>,
}

/// How a cell is drawn: its worst state wins, so a single failing frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Failing,
    Missing,
    Pending,
    Delivered,
    NotYetDue,
}

impl Mark {
    pub const ALL: [Mark; 5] = [Mark::Delivered, Mark::Pending, Mark::Missing, Mark::Failing, Mark::NotYetDue];

    pub fn glyph(self) -> char {
        match self {
            Mark::Delivered => '#',
            Mark::Pending => 'P',
            Mark::Missing => 'M',
            Mark::Failing => 'F',
            Mark::NotYetDue => '-',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mark::Delivered => "delivered",
            Mark::Pending => "pending",
            Mark::Missing => "missing",
            Mark::Failing => "failing",
            Mark::NotYetDue => "not yet due",
        }
    }
}

impl Cell {
    pub fn mark(&self) -> Mark {
        if self.failing > 0 {
            Mark::Failing
        } else if self.missing > 0 {
            Mark::Missing
        } else if self.pending > 0 {
            Mark::Pending
        } else if self.delivered > 0 {
            Mark::Delivered
        } else {
            Mark::NotYetDue
        }
    }

    /// The mark's glyph, in lower case when some of the cell's frames are delivered: `m` is a
    /// cell with a gap, `M` one with nothing delivered at all.
    pub fn glyph(&self) -> char {
        let glyph = self.mark().glyph();
        if self.delivered > 0 { glyph.to_ascii_lowercase() } else { glyph }
    }
}

/// What the lower-case glyphs mean, for the legend.
pub const PARTLY: &str = "lower case (p m f): some of the cell's frames delivered";

/// The cell length: an hour, or the shortest multiple of the frame size of at least an hour
/// that divides a day, so that cells hold whole frames and 24 hours hold whole cells.
pub fn cell_seconds(size: FrameSize) -> i64 {
    let size = size.seconds();
    (1..=DAY / size).map(|k| k * size).find(|c| *c >= HOUR && DAY % c == 0).unwrap_or(DAY)
}

/// The last 24 hours up to the end of the current cell, oldest cell first.
pub fn read(ledger: &Ledger, w: &Window) -> Result<Timeline> {
    let cell = cell_seconds(w.size);
    let to = w.now.div_euclid(cell) * cell + cell;
    let from = to - DAY;
    let lo = from.max(w.reference);
    let horizon = eligible_until(w.size, w.now, w.delay);
    let counts = ledger.timeline_cells(&CellWindow { from, to, cell, cells: DAY / cell, lo, horizon })?;
    let cells = counts.iter().map(|c| cell_counts(w, cell, horizon, c)).collect();
    Ok(Timeline { cell_seconds: cell, cells })
}

/// Splits a cell's frames by state; everything eligible that is not accounted for is missing.
fn cell_counts(w: &Window, cell: i64, horizon: Epoch, c: &CellCounts) -> Cell {
    let size = w.size.seconds();
    let frames = |from: Epoch, to: Epoch| if to > from { (to - from) / size } else { 0 };
    let (lo, hi) = (c.start, c.start + cell);
    let eligible = frames(lo.max(w.reference), hi.min(horizon));
    let delivered = c.delivered_s / size - c.reopened;
    Cell {
        start: rfc3339(lo),
        delivered,
        pending: c.pending,
        failing: c.failing,
        missing: (eligible - delivered - c.failing - c.pending).max(0),
        not_yet_due: frames(lo, hi) - eligible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::ledger::testing::ledger;

    const T0: Epoch = 1_795_564_800; // 2026-11-25T00:00:00Z

    fn size(s: i64) -> FrameSize {
        FrameSize::new(s).unwrap()
    }

    #[test]
    fn cells_are_hours_or_whole_frames_that_divide_a_day() {
        assert_eq!(cell_seconds(size(60)), 3600);
        assert_eq!(cell_seconds(size(1)), 3600);
        assert_eq!(cell_seconds(size(3600)), 3600);
        assert_eq!(cell_seconds(size(1600)), 4800);
        assert_eq!(cell_seconds(size(7200)), 7200);
        assert_eq!(cell_seconds(size(86_400)), 86_400);
    }

    fn cell(delivered: i64, pending: i64, failing: i64, missing: i64) -> Cell {
        Cell { start: String::new(), delivered, pending, failing, missing, not_yet_due: 0 }
    }

    #[test]
    fn the_worst_state_of_a_cell_is_the_one_drawn() {
        assert_eq!(cell(59, 0, 1, 0).mark(), Mark::Failing);
        assert_eq!(cell(58, 1, 0, 1).mark(), Mark::Missing);
        assert_eq!(cell(59, 1, 0, 0).mark(), Mark::Pending);
        assert_eq!(cell(60, 0, 0, 0).mark(), Mark::Delivered);
        assert_eq!(cell(0, 0, 0, 0).mark(), Mark::NotYetDue);
    }

    #[test]
    fn a_partly_delivered_cell_is_drawn_apart_from_one_with_nothing_delivered() {
        assert_eq!((cell(58, 0, 0, 2).glyph(), cell(0, 0, 0, 60).glyph()), ('m', 'M'));
        assert_eq!((cell(59, 0, 1, 0).glyph(), cell(0, 0, 1, 59).glyph()), ('f', 'F'));
        assert_eq!((cell(59, 1, 0, 0).glyph(), cell(0, 1, 0, 0).glyph()), ('p', 'P'));
        assert_eq!((cell(60, 0, 0, 0).glyph(), cell(0, 0, 0, 0).glyph()), ('#', '-'));
    }

    fn deliver(l: &mut Ledger, start: Epoch) {
        let frame = size(60).frame_at(start);
        l.stage_frame(frame, &[], &[], start).unwrap();
        assert!(l.complete_frame(frame, None, start).unwrap());
    }

    #[test]
    fn a_day_with_a_delivered_morning_a_failing_frame_a_staged_frame_and_a_gap() {
        let (_dir, mut l) = ledger();
        let reference = T0 + 6 * HOUR;
        for m in 0..(3 * 60) {
            deliver(&mut l, reference + m * 60); // 06:00..09:00 delivered
        }
        let f = size(60).frame_at(reference + 3 * HOUR); // 09:00 failing
        l.pull_failed(f, "HTTP 500", crate::model::PullFailure::Passing, T0 + 24 * HOUR, T0).unwrap();
        let p = size(60).frame_at(reference + 3 * HOUR + 60); // 09:01 staged
        l.stage_frame(p, &[], &[], T0).unwrap();
        let w = Window { reference, size: size(60), delay: 120, now: T0 + 10 * HOUR + 30 * 60 };
        let t = read(&l, &w).unwrap();
        assert_eq!(t.cell_seconds, 3600);
        assert_eq!(t.cells.len(), 24);
        assert_eq!(t.cells[0].start, "2026-11-24T11:00:00Z", "the window ends with the current hour");
        let marks: String = t.cells.iter().map(|c| c.mark().glyph()).collect();
        assert_eq!(marks, "-------------------###FM");
        let nine = &t.cells[22];
        assert_eq!((nine.delivered, nine.pending, nine.failing, nine.missing, nine.not_yet_due), (0, 1, 1, 58, 0));
        let eight = &t.cells[21];
        assert_eq!((eight.delivered, eight.pending, eight.missing), (60, 0, 0));
        let now_cell = &t.cells[23];
        // 10:00..10:28 is eligible at 10:30 with a 2-minute delay; 10:28..11:00 is not yet due.
        assert_eq!((now_cell.missing, now_cell.not_yet_due), (28, 32));
    }

    #[test]
    fn a_delivered_frame_put_back_to_pulled_counts_as_pending_not_delivered() {
        let (_dir, mut l) = ledger();
        let reference = T0;
        for m in 0..60 {
            deliver(&mut l, reference + m * 60);
        }
        l.run_sql(&format!("UPDATE frames SET state = 'pulled' WHERE start = {}", T0 + 600));
        let w = Window { reference, size: size(60), delay: 120, now: T0 + 2 * HOUR };
        let t = read(&l, &w).unwrap();
        let first = &t.cells[21];
        assert_eq!((first.delivered, first.pending, first.missing), (59, 1, 0));
        assert_eq!(first.mark(), Mark::Pending);
    }
}
