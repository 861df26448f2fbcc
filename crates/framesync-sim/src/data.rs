//! Deterministic records — what the simulated SS serves — and the instants and ranges that
//! select them.
//!
//! Every record is a pure function of (seed, epoch minute, index): the SS needs no storage, two
//! runs with the same seed serve the same data, and the checker can recompute exactly what the
//! RS should hold, and tell which minute a stored UID came from.

use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};

pub const MS_PER_MINUTE: i64 = 60_000;
/// Numeric UIDs are `minute * NUMERIC_STRIDE + index`, so records per minute must stay below it.
pub const NUMERIC_STRIDE: i64 = 100_000;

// Each property of a record draws from its own hash, so changing one fraction (say lateness)
// never reshuffles another (say which records are poison).
const SALT_TIME: u64 = 1;
const SALT_LATE: u64 = 2;
const SALT_LATENESS: u64 = 3;
const SALT_POISON: u64 = 4;
const SALT_PAYLOAD: u64 = 5;

/// Notes include a quote and non-ASCII text so that clients must escape and encode properly.
const NOTES: [&str; 6] = ["coffee", "refund", "monthly plan", "tip \"extra\"", "café", "transfer"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UidStyle {
    String,
    Numeric,
    Unicode,
    /// "ev-M-I" and a tail of what a careless encoder would let change a query's meaning.
    Hostile,
}

/// The tail of a hostile UID: quotes, a backslash, `%`, a comma, a newline, a semicolon.
const HOSTILE_TAIL: &str = "-'\"\\%2C,\n;";

#[derive(Clone, Debug)]
pub struct Generator {
    pub seed: u64,
    pub per_minute: u32,
    pub late_fraction: f64,
    pub max_lateness_ms: u64,
    pub poison_fraction: f64,
    pub uid_style: UidStyle,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub ts_ms: i64,
    /// When the SS starts returning it: `ts_ms` for punctual records, later for late ones.
    pub visible_at_ms: i64,
    pub uid: Value,
    /// The UID as text (a string's value, a number's decimal form): the sort and cursor key.
    pub uid_text: String,
    pub poison: bool,
    amount: i64,
    note: &'static str,
}

/// A half-open interval `[from, to)` of epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Range {
    /// Parses the `from` and `to` query parameters; the error message is meant for a 400.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Range, String> {
        let instant = |name: &str, value: Option<&str>| {
            let value = value.ok_or_else(|| format!("missing parameter `{name}`"))?;
            parse_instant(value).map_err(|e| format!("parameter `{name}`: {e}"))
        };
        let range = Range { from_ms: instant("from", from)?, to_ms: instant("to", to)? };
        if range.from_ms > range.to_ms {
            return Err("`from` is after `to`".into());
        }
        Ok(range)
    }

    pub fn contains(&self, ts_ms: i64) -> bool {
        self.from_ms <= ts_ms && ts_ms < self.to_ms
    }

    /// The epoch minutes that overlap the range.
    pub fn minutes(&self) -> std::ops::Range<i64> {
        if self.from_ms >= self.to_ms {
            return 0..0;
        }
        self.from_ms.div_euclid(MS_PER_MINUTE)..(self.to_ms - 1).div_euclid(MS_PER_MINUTE) + 1
    }
}

/// RFC 3339, epoch seconds (≤ 11 digits) or epoch milliseconds (≥ 12 digits), as epoch ms.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let invalid = || format!("`{text}` is not RFC 3339, epoch seconds or epoch milliseconds");
    let ms = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = text.parse().map_err(|_| invalid())?;
        if text.len() <= 11 { n * 1000 } else { n }
    } else {
        DateTime::parse_from_rfc3339(text).map_err(|_| invalid())?.timestamp_millis()
    };
    // Keeps every later computation (minutes, numeric UIDs, RFC 3339 output) in range.
    DateTime::from_timestamp_millis(ms).ok_or_else(invalid)?;
    Ok(ms)
}

pub fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash mapped uniformly to [0, 1): `unit(h) < p` happens with probability p.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Generator {
    pub fn record(&self, minute: i64, index: u32) -> Record {
        let draw = |salt| self.draw(minute, index, salt);
        let ts_ms = minute * MS_PER_MINUTE + (draw(SALT_TIME) % MS_PER_MINUTE as u64) as i64;
        let late = unit(draw(SALT_LATE)) < self.late_fraction;
        let lateness = draw(SALT_LATENESS) % self.max_lateness_ms.max(1) + 1;
        let payload = draw(SALT_PAYLOAD);
        Record {
            ts_ms,
            visible_at_ms: if late { ts_ms.saturating_add(lateness as i64) } else { ts_ms },
            uid: self.uid(minute, index),
            uid_text: self.uid_text(minute, index),
            poison: unit(draw(SALT_POISON)) < self.poison_fraction,
            amount: (payload % 100_000) as i64,
            note: NOTES[(payload >> 32) as usize % NOTES.len()],
        }
    }

    /// All records of one epoch minute, in serving order.
    pub fn minute(&self, minute: i64) -> Vec<Record> {
        let mut records: Vec<Record> = (0..self.per_minute).map(|i| self.record(minute, i)).collect();
        records.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        records
    }

    /// All records with a timestamp in `range`, visible or not, in serving order, lazily: a
    /// minute is generated only when the iteration reaches it.
    pub fn records(&self, range: Range) -> impl Iterator<Item = Record> + '_ {
        let in_range = move |r: &Record| range.contains(r.ts_ms);
        range.minutes().flat_map(move |m| self.minute(m)).filter(in_range)
    }

    /// The record this generator would produce with that UID, if any.
    pub fn record_for_uid(&self, uid_text: &str) -> Option<Record> {
        let (minute, index) = self.decode_uid(uid_text)?;
        Some(self.record(minute, index))
    }

    fn decode_uid(&self, text: &str) -> Option<(i64, u32)> {
        let (minute, index) = match self.uid_style {
            UidStyle::Numeric => {
                let n: i64 = text.parse().ok()?;
                let index = u32::try_from(n.rem_euclid(NUMERIC_STRIDE)).ok()?;
                (n.div_euclid(NUMERIC_STRIDE), index)
            }
            UidStyle::String => split_minute_index(text.strip_prefix("ev-")?)?,
            UidStyle::Unicode => split_minute_index(text.strip_prefix("ünï-")?.strip_suffix("-✓")?)?,
            UidStyle::Hostile => split_minute_index(text.strip_prefix("ev-")?.strip_suffix(HOSTILE_TAIL)?)?,
        };
        // Only the canonical spelling counts: "+5" or "ev-01-2" were never generated.
        (index < self.per_minute && self.uid_text(minute, index) == text).then_some((minute, index))
    }

    fn uid(&self, minute: i64, index: u32) -> Value {
        match self.uid_style {
            UidStyle::Numeric => json!(minute * NUMERIC_STRIDE + i64::from(index)),
            _ => Value::String(self.uid_text(minute, index)),
        }
    }

    fn uid_text(&self, minute: i64, index: u32) -> String {
        match self.uid_style {
            UidStyle::String => format!("ev-{minute}-{index}"),
            UidStyle::Numeric => (minute * NUMERIC_STRIDE + i64::from(index)).to_string(),
            UidStyle::Unicode => format!("ünï-{minute}-{index}-✓"),
            UidStyle::Hostile => format!("ev-{minute}-{index}{HOSTILE_TAIL}"),
        }
    }

    fn draw(&self, minute: i64, index: u32, salt: u64) -> u64 {
        let h = splitmix64(splitmix64(self.seed) ^ salt);
        splitmix64(splitmix64(h ^ minute as u64) ^ u64::from(index))
    }
}

/// Splits "M-I" at the last dash, so a negative minute ("-5-3") still parses.
fn split_minute_index(text: &str) -> Option<(i64, u32)> {
    let (minute, index) = text.rsplit_once('-')?;
    Some((minute.parse().ok()?, index.parse().ok()?))
}

impl Record {
    pub fn visible(&self, now_ms: i64) -> bool {
        self.visible_at_ms <= now_ms
    }

    pub fn sort_key(&self) -> (i64, &str) {
        (self.ts_ms, &self.uid_text)
    }

    pub fn to_json(&self) -> Value {
        let created_at = DateTime::from_timestamp_millis(self.ts_ms)
            .expect("timestamps come from validated ranges")
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "id": self.uid,
            "created_at": created_at,
            "valid": !self.poison,
            "payload": { "amount": self.amount, "note": self.note },
        })
    }
}

#[cfg(test)]
pub fn generator(seed: u64, per_minute: u32) -> Generator {
    Generator {
        seed,
        per_minute,
        late_fraction: 0.0,
        max_lateness_ms: 300_000,
        poison_fraction: 0.0,
        uid_style: UidStyle::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_1_2026_MS: i64 = 1_793_491_200_000;

    fn hour() -> Range {
        Range { from_ms: NOV_1_2026_MS, to_ms: NOV_1_2026_MS + 60 * MS_PER_MINUTE }
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let a: Vec<Record> = generator(7, 10).records(hour()).collect();
        let b: Vec<Record> = generator(7, 10).records(hour()).collect();
        assert_eq!(a.len(), 600);
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_give_different_records() {
        let a: Vec<i64> = generator(1, 10).records(hour()).map(|r| r.ts_ms).collect();
        let b: Vec<i64> = generator(2, 10).records(hour()).map(|r| r.ts_ms).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn records_are_sorted_and_inside_their_range() {
        let range = Range { from_ms: NOV_1_2026_MS + 30_000, to_ms: NOV_1_2026_MS + 150_000 };
        let records: Vec<Record> = generator(3, 50).records(range).collect();
        assert!(records.iter().all(|r| range.contains(r.ts_ms)));
        assert!(records.windows(2).all(|w| w[0].sort_key() < w[1].sort_key()));
        assert!(records.len() > 50 && records.len() < 150);
    }

    #[test]
    fn late_records_become_visible_within_max_lateness() {
        let late = Generator { late_fraction: 0.5, max_lateness_ms: 1000, ..generator(1, 100) };
        let records: Vec<Record> = late.records(hour()).collect();
        let delays: Vec<i64> = records.iter().map(|r| r.visible_at_ms - r.ts_ms).collect();
        assert!(delays.iter().all(|d| (0..=1000).contains(d)));
        let late_count = delays.iter().filter(|d| **d > 0).count();
        assert!((2700..3300).contains(&late_count), "{late_count} of 6000 late");
        let r = records.iter().find(|r| r.visible_at_ms > r.ts_ms).unwrap();
        assert!(!r.visible(r.visible_at_ms - 1) && r.visible(r.visible_at_ms));
    }

    #[test]
    fn the_poison_fraction_is_roughly_honored() {
        let poisoned = Generator { poison_fraction: 0.1, ..generator(9, 100) };
        let records: Vec<Record> = poisoned.records(hour()).collect();
        let poison = records.iter().filter(|r| r.poison).count();
        assert!((480..720).contains(&poison), "{poison} of 6000 poison");
        let json = records.iter().find(|r| r.poison).unwrap().to_json();
        assert_eq!(json["valid"], json!(false));
    }

    #[test]
    fn the_record_json_has_the_documented_shape() {
        let numeric = Generator { uid_style: UidStyle::Numeric, ..generator(1, 10) };
        let json = numeric.record(29_891_520, 3).to_json();
        assert_eq!(json["id"], json!(2_989_152_000_003_i64));
        let created_at = json["created_at"].as_str().unwrap();
        assert!(created_at.starts_with("2026-11-01T00:00:") && created_at.ends_with('Z'));
        assert_eq!(created_at.len(), "2026-11-01T00:00:00.000Z".len());
        assert!(json["payload"]["amount"].is_i64() && json["payload"]["note"].is_string());
    }

    #[test]
    fn every_uid_style_decodes_back_to_its_record() {
        for style in [UidStyle::String, UidStyle::Numeric, UidStyle::Unicode, UidStyle::Hostile] {
            let g = Generator { uid_style: style, ..generator(5, 10) };
            for minute in [-3, 0, 29_891_520] {
                let record = g.record(minute, 9);
                assert_eq!(g.record_for_uid(&record.uid_text), Some(record));
            }
            assert_eq!(g.record_for_uid(&g.uid_text(1, 10)), None, "index beyond per-minute");
        }
        let unicode = Generator { uid_style: UidStyle::Unicode, ..generator(5, 10) };
        assert_eq!(unicode.uid_text(2, 1), "ünï-2-1-✓");
        assert_eq!(generator(5, 10).record_for_uid("ev-01-2"), None);
        assert_eq!(generator(5, 10).record_for_uid("something else"), None);
    }

    #[test]
    fn instants_parse_as_rfc3339_epoch_seconds_or_epoch_millis() {
        assert_eq!(parse_instant("2026-11-01T00:00:00Z"), Ok(NOV_1_2026_MS));
        assert_eq!(parse_instant("2026-11-01T01:00:00+01:00"), Ok(NOV_1_2026_MS));
        assert_eq!(parse_instant("1793491200"), Ok(NOV_1_2026_MS));
        assert_eq!(parse_instant("1793491200000"), Ok(NOV_1_2026_MS));
        assert!(parse_instant("").is_err());
        assert!(parse_instant("-5").is_err());
        assert!(parse_instant("yesterday").is_err());
        assert!(parse_instant("99999999999999999").is_err());
    }

    #[test]
    fn ranges_need_both_bounds_in_order() {
        assert!(Range::parse(Some("10"), None).unwrap_err().contains("`to`"));
        assert!(Range::parse(Some("20"), Some("10")).is_err());
        assert_eq!(Range::parse(Some("10"), Some("10")).unwrap().minutes().count(), 0);
        let range = Range::parse(Some("60"), Some("180")).unwrap();
        assert_eq!(range.minutes(), 1..3);
    }
}
