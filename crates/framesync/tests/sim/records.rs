//! The records of a seed: every record the SS will ever hold, drawn up front in stamp order —
//! stamps in ms anywhere in a frame and deliberately on its edges (the first millisecond, the
//! last one, the last second's fraction), UIDs that are hard to carry (`/`, `%`, spaces,
//! quotes, non-ASCII, JSON integers), when each becomes visible at the SS, and whether the RS
//! will refuse it (a bad record) or crash on it.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Value, json};

use super::rng::Rng;
use super::scenario::{Format, Scenario};

/// How the RS treats a record, whatever else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    None,
    /// Always refused as a bad record (400 or 422).
    Bad,
    /// Always answered 500: the record crashes the RS.
    Crash,
}

#[derive(Debug, Clone)]
pub struct Rec {
    pub uid: String,
    pub stamp_ms: i64,
    /// True time at which the SS starts returning it.
    pub visible_ms: i64,
    /// The record as the SS returns it.
    pub body: String,
    /// `sink.map` needs `/amount`; records without one are dead-lettered, not sent.
    pub has_amount: bool,
    pub poison: Poison,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// Sorted by stamp.
    pub records: Vec<Rec>,
    by_uid: HashMap<String, usize>,
}

impl Catalog {
    /// Every record of the frames from `frames.start` until `until` (true seconds).
    pub fn generate(scenario: &Scenario, until: i64) -> Self {
        let mut rng = Rng::stream(scenario.seed, 3);
        let mut catalog = Catalog::default();
        let mut start = scenario.reference;
        while start < until {
            let first = catalog.records.len();
            let mut frame: Vec<Rec> = (0..rng.range(0, scenario.records_per_frame) as usize)
                .map(|i| record(scenario, &mut rng, start, first + i))
                .collect();
            frame.sort_by_key(|r| r.stamp_ms);
            for rec in frame {
                catalog.by_uid.insert(rec.uid.clone(), catalog.records.len());
                catalog.records.push(rec);
            }
            start += scenario.size;
        }
        catalog
    }

    /// The records stamped in `[from_ms, end_ms)`.
    pub fn stamped(&self, from_ms: i64, end_ms: i64) -> Range<usize> {
        let lo = self.records.partition_point(|r| r.stamp_ms < from_ms);
        let hi = self.records.partition_point(|r| r.stamp_ms < end_ms);
        lo..hi.max(lo)
    }

    pub fn by_uid(&self, uid: &str) -> Option<&Rec> {
        self.by_uid.get(uid).map(|&i| &self.records[i])
    }
}

/// One record of the frame starting at `start`; `n` makes its UID unique.
fn record(scenario: &Scenario, rng: &mut Rng, start: i64, n: usize) -> Rec {
    let stamp_ms = stamp(scenario, rng, start);
    let end_ms = (start + scenario.size) * 1000;
    let (uid, id) = uid(rng, n);
    let has_amount = !scenario.map || rng.chance(0.9);
    let mut body = json!({ "id": id, "ts": format_stamp(stamp_ms, scenario.record_format()), "note": note(rng) });
    if has_amount {
        body["amount"] = json!(rng.range(1, 99_999));
    }
    let poison = if rng.chance(scenario.poison_rate) {
        Poison::Bad
    } else if rng.chance(scenario.crash_rate) {
        Poison::Crash
    } else {
        Poison::None
    };
    Rec {
        uid,
        stamp_ms,
        visible_ms: visible(scenario, rng, stamp_ms, end_ms),
        body: body.to_string(),
        has_amount,
        poison,
    }
}

/// A stamp in the frame: a fair share on its edges.
fn stamp(scenario: &Scenario, rng: &mut Rng, start: i64) -> i64 {
    let (from, end) = (start * 1000, (start + scenario.size) * 1000);
    let ms = match rng.below(10) {
        0 | 1 => from,
        2 => end - 1,
        3 => end - 1000 + rng.range(1, 999),
        4 => end - 500,
        _ => rng.range(from, end - 1),
    };
    if scenario.whole_seconds { ms.div_euclid(1000) * 1000 } else { ms }
}

/// When the record becomes visible: mostly soon after its stamp, some late (within the SS's
/// promise, see `Scenario::latest_visibility_ms`).
fn visible(scenario: &Scenario, rng: &mut Rng, stamp_ms: i64, end_ms: i64) -> i64 {
    let latest = end_ms + scenario.latest_visibility_ms();
    if rng.chance(scenario.late_fraction) {
        rng.range(stamp_ms, latest.max(stamp_ms))
    } else {
        stamp_ms + rng.range(0, 2_000).min(latest - stamp_ms).max(0)
    }
}

/// The UID as framesync will read it, and the JSON value the SS sends.
fn uid(rng: &mut Rng, n: usize) -> (String, Value) {
    let text = match rng.below(7) {
        0 => return ((1_000_000 + n).to_string(), json!(1_000_000 + n)),
        1 => format!("ev/{n}"),
        2 => format!("100%/{n}"),
        3 => format!("a b {n}"),
        4 => format!("q\"{n}'"),
        5 => format!("ünï-✓-{n}"),
        _ => format!("plain-{n}"),
    };
    (text.clone(), json!(text))
}

fn note(rng: &mut Rng) -> &'static str {
    rng.pick(&["", "café \"quoted\" / 100% & more", "line\nbreak\ttab", "✓ ünïcode", "{\"not\": \"json\"}"])
}

pub fn format_stamp(ms: i64, format: Format) -> Value {
    match format {
        Format::Rfc3339 => json!(framesync::frames::rfc3339_ms(ms)),
        Format::EpochS => json!(ms.div_euclid(1000)),
        Format::EpochMs => json!(ms),
    }
}
