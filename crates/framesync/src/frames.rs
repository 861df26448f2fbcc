//! Time frames: epoch-aligned half-open intervals `[start, start + size)` in UTC seconds,
//! and the arithmetic the planner needs (alignment, eligibility, formatting).

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

/// Seconds since the Unix epoch, UTC. All ledger times are stored in this unit.
pub type Epoch = i64;

const DAY: i64 = 86_400;

/// The frame size of a pipeline: a whole number of seconds that divides a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSize(i64);

impl FrameSize {
    pub fn new(seconds: i64) -> Result<Self, String> {
        if seconds < 1 {
            return Err(format!("{seconds}s is too small: a frame is at least 1s"));
        }
        if DAY % seconds != 0 {
            return Err(format!("{seconds}s does not divide a day: pick a size such as 1m, 5m, 15m or 1h"));
        }
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }

    /// The start of the frame containing `t` (aligned down to a multiple of the size).
    pub fn align_down(self, t: Epoch) -> Epoch {
        t.div_euclid(self.0) * self.0
    }

    pub fn frame_at(self, t: Epoch) -> Frame {
        Frame { start: self.align_down(t), size: self.0 }
    }
}

/// One frame, identified by its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame {
    pub start: Epoch,
    pub size: i64,
}

impl Frame {
    pub fn end(self) -> Epoch {
        self.start + self.size
    }

    pub fn contains_ms(self, t_ms: i64) -> bool {
        t_ms >= self.start * 1000 && t_ms < self.end() * 1000
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", rfc3339(self.start), rfc3339(self.end()))
    }
}

/// The end of the last eligible frame: frames ending at or before it satisfy
/// `now >= end + delay`. Frames after it are never pulled, whatever the plan says.
pub fn eligible_until(size: FrameSize, now: Epoch, delay: i64) -> Epoch {
    size.align_down(now - delay)
}

/// When the first frame after `start` becomes eligible: a run before it has nothing to pull.
pub fn first_pull_at(size: FrameSize, start: Epoch, delay: i64) -> Epoch {
    size.frame_at(start).end() + delay
}

pub fn rfc3339(t: Epoch) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("@{t}"))
}

pub fn rfc3339_ms(t_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(t_ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("@{t_ms}ms"))
}

/// Parses an RFC 3339 time, or epoch seconds, into epoch seconds (fractions dropped).
pub fn parse_time(text: &str) -> Result<Epoch, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.timestamp())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-11-01T00:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_divide_a_day() {
        assert!(FrameSize::new(60).is_ok());
        assert!(FrameSize::new(1).is_ok());
        assert!(FrameSize::new(86_400).is_ok());
        assert!(FrameSize::new(7).is_err());
        assert!(FrameSize::new(0).is_err());
        assert!(FrameSize::new(-60).is_err());
    }

    #[test]
    fn alignment_is_to_the_epoch_for_every_size() {
        let t = parse_time("2026-11-01T12:34:56Z").unwrap();
        let cases = [
            (1, "2026-11-01T12:34:56Z"),
            (60, "2026-11-01T12:34:00Z"),
            (300, "2026-11-01T12:30:00Z"),
            (900, "2026-11-01T12:30:00Z"),
            (3600, "2026-11-01T12:00:00Z"),
            (86_400, "2026-11-01T00:00:00Z"),
        ];
        for (size, want) in cases {
            let size = FrameSize::new(size).unwrap();
            assert_eq!(rfc3339(size.align_down(t)), want, "size {size:?}");
        }
    }

    #[test]
    fn alignment_before_the_epoch_rounds_down() {
        let size = FrameSize::new(60).unwrap();
        assert_eq!(size.align_down(-1), -60);
        assert_eq!(size.align_down(-60), -60);
        assert_eq!(size.align_down(0), 0);
    }

    #[test]
    fn a_frame_is_half_open() {
        let f = FrameSize::new(60).unwrap().frame_at(120);
        assert_eq!((f.start, f.end()), (120, 180));
        assert!(f.contains_ms(120_000));
        assert!(f.contains_ms(179_999));
        assert!(!f.contains_ms(180_000));
    }

    #[test]
    fn a_frame_becomes_eligible_only_after_its_delay() {
        let size = FrameSize::new(60).unwrap();
        // 12:03:30 with a 2m delay: 12:01:30 aligned down is 12:01, so the frame 12:00..12:01 is the last.
        let now = parse_time("2026-11-01T12:03:30Z").unwrap();
        assert_eq!(rfc3339(eligible_until(size, now, 120)), "2026-11-01T12:01:00Z");
        // Exactly at end + delay the frame is eligible.
        let now = parse_time("2026-11-01T12:03:00Z").unwrap();
        assert_eq!(rfc3339(eligible_until(size, now, 120)), "2026-11-01T12:01:00Z");
    }

    #[test]
    fn times_parse_from_rfc3339_or_epoch_seconds() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Ok(60));
        assert_eq!(parse_time("1970-01-01T01:01:00+01:00"), Ok(60));
        assert_eq!(parse_time("60"), Ok(60));
        assert!(parse_time("yesterday").is_err());
    }
}
