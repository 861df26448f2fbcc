//! Durations as the config writes them: humantime text such as "30s", "2m" or "1h", at most
//! 100 years. Used with `#[serde(deserialize_with = "duration::...")]`; `toml_error` adds the
//! key to an error.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::toml_error::read_str;

/// The longest duration any key takes: 100 years, as humantime reads "100y" (365.25-day years).
pub(super) const LONGEST_SECS: u64 = 100 * 31_557_600;

/// Reads duration text, bounded to 100 years.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as \"30s\", \"2m\" or \"1h\" ({e})"))?;
    if d > Duration::from_secs(LONGEST_SECS) {
        return Err(format!("{text:?} is longer than 100 years, the longest duration framesync takes"));
    }
    Ok(d)
}

/// Reads duration text that must be a whole number of seconds.
pub(super) fn parse_secs(text: &str) -> Result<i64, String> {
    let d = parse(text)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{text:?} must be a whole number of seconds"));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("{text:?} is too long"))
}

/// Seconds as a duration is written again in a message: "5m", "30days".
pub(super) fn display(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.unsigned_abs())).to_string()
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    read_str(deserializer, parse)
}

pub(super) fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

/// A whole number of seconds, for keys that feed the time arithmetic on `Epoch`s.
pub(super) fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    read_str(deserializer, parse_secs)
}

/// A list of whole numbers of seconds; an error names the item (`frames.recheck[1]`).
pub(super) fn secs_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
    Ok(Vec::<Secs>::deserialize(deserializer)?.into_iter().map(|s| s.0).collect())
}

struct Secs(i64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        secs(deserializer).map(Secs)
    }
}

/// A positive whole number of seconds written as a number (`50`), or duration text (`"50s"`).
pub(super) fn number_or_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(NumberOrText)
}

struct NumberOrText;

impl Visitor<'_> for NumberOrText {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive number of seconds such as 50")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        match u64::try_from(n) {
            Ok(n) if n > 0 => self.visit_u64(n),
            _ => Err(E::custom(format!("{n} is not a positive number of seconds such as 50"))),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        if n == 0 {
            return Err(E::custom("0 is not a positive number of seconds such as 50"));
        }
        if n > LONGEST_SECS {
            return Err(E::custom(format!(
                "{n} seconds is longer than 100 years, the longest duration framesync takes"
            )));
        }
        Ok(Duration::from_secs(n))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime_text_up_to_100_years() {
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse(" 100ms "), Ok(Duration::from_millis(100)));
        assert!(parse("100y").is_ok());
        assert!(parse("101y").unwrap_err().contains("longer than 100 years"));
        assert!(parse("soon").unwrap_err().contains("not a duration such as"));
    }

    #[test]
    fn seconds_must_be_whole() {
        assert_eq!(parse_secs("1h"), Ok(3600));
        assert!(parse_secs("1500ms").unwrap_err().contains("whole number of seconds"));
    }
}
