//! One record from the SS: its UID, its timestamp, and the canonical form used for hashing.
//! Pure functions over `serde_json::Value`, shared by the source client and the mapping.

use chrono::DateTime;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How a time is written in a URL or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    Rfc3339,
    EpochS,
    EpochMs,
}

impl TimeFormat {
    /// The name the config gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfc3339 => "rfc3339",
            Self::EpochS => "epoch_s",
            Self::EpochMs => "epoch_ms",
        }
    }
}

/// Where a record's UID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidRule {
    /// A JSON pointer to a string or number field.
    Field(String),
    /// A SHA-256 of the record's canonical JSON, for sources without an ID.
    Hash,
}

impl UidRule {
    /// The rule as the config writes it: `"hash"` or the pointer.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Field(pointer) => pointer,
            Self::Hash => "hash",
        }
    }
}

/// Why a record has no usable UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("the record has no UID at {pointer}")]
    Missing { pointer: String },
    #[error("the UID at {pointer} is an empty string")]
    Empty { pointer: String },
    #[error("the UID at {pointer} is {kind}, not a string or an integer")]
    NotText { pointer: String, kind: &'static str },
}

/// Why a field cannot be read as a time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    #[error("{0} is a number, not an RFC 3339 time")]
    NotRfc3339Number(f64),
    #[error("{0:?} is not an RFC 3339 time")]
    NotRfc3339(String),
    /// The value is of another JSON kind (see [`kind`]).
    #[error("{0} is not a time")]
    NotATime(&'static str),
}

/// A record's UID as text: a JSON string as is, a JSON integer as its decimal digits.
pub fn uid(record: &Value, rule: &UidRule) -> Result<String, UidError> {
    match rule {
        UidRule::Hash => Ok(content_hash(record)),
        UidRule::Field(pointer) => match record.pointer(pointer) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(Value::String(_)) => Err(UidError::Empty { pointer: pointer.clone() }),
            Some(other) => Err(UidError::NotText { pointer: pointer.clone(), kind: kind(other) }),
            None => Err(UidError::Missing { pointer: pointer.clone() }),
        },
    }
}

/// SHA-256 of the record's canonical JSON (keys sorted, no whitespace), in hex.
pub fn content_hash(record: &Value) -> String {
    // serde_json's map is ordered by key, so `to_string` is already canonical.
    let digest = Sha256::digest(record.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a time from a record field in milliseconds since the epoch.
/// With no declared format: strings are RFC 3339; numbers below 10^11 are seconds, others ms.
pub fn time_ms(value: &Value, format: Option<TimeFormat>) -> Result<i64, TimeError> {
    let from_number = |n: f64| match format {
        Some(TimeFormat::EpochS) => Ok((n * 1000.0) as i64),
        Some(TimeFormat::EpochMs) => Ok(n as i64),
        Some(TimeFormat::Rfc3339) => Err(TimeError::NotRfc3339Number(n)),
        None if n.abs() < 1e11 => Ok((n * 1000.0) as i64),
        None => Ok(n as i64),
    };
    match value {
        Value::Number(n) => from_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) if format != Some(TimeFormat::Rfc3339) => from_number(n),
            _ => DateTime::parse_from_rfc3339(s.trim())
                .map(|d| d.timestamp_millis())
                .map_err(|_| TimeError::NotRfc3339(s.clone())),
        },
        other => Err(TimeError::NotATime(kind(other))),
    }
}

/// Writes a time (ms since the epoch) in a record format.
pub fn format_time(t_ms: i64, format: TimeFormat) -> Value {
    match format {
        TimeFormat::Rfc3339 => Value::String(crate::frames::rfc3339_ms(t_ms)),
        TimeFormat::EpochS => Value::from(t_ms.div_euclid(1000)),
        TimeFormat::EpochMs => Value::from(t_ms),
    }
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(p: &str) -> UidRule {
        UidRule::Field(p.into())
    }

    #[test]
    fn uids_come_from_strings_integers_and_nested_fields() {
        let r = json!({"id": "a-1", "n": 42, "big": 18446744073709551615u64, "meta": {"key": "ünï-✓"}});
        assert_eq!(uid(&r, &field("/id")).unwrap(), "a-1");
        assert_eq!(uid(&r, &field("/n")).unwrap(), "42");
        assert_eq!(uid(&r, &field("/big")).unwrap(), "18446744073709551615");
        assert_eq!(uid(&r, &field("/meta/key")).unwrap(), "ünï-✓");
    }

    #[test]
    fn a_missing_or_unusable_uid_says_why() {
        let r = json!({"id": "", "f": 1.5, "o": {}});
        let why = |pointer: &str| uid(&r, &field(pointer)).unwrap_err().to_string();
        assert!(why("/id").contains("empty"));
        assert!(why("/f").contains("a number"));
        assert!(why("/o").contains("an object"));
        assert!(why("/nope").contains("no UID at /nope"));
    }

    #[test]
    fn the_content_hash_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b": [1,2], "a": 1 }"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 64);
        assert_ne!(content_hash(&a), content_hash(&json!({"a": 2, "b": [1, 2]})));
    }

    #[test]
    fn times_are_read_in_every_format() {
        assert_eq!(time_ms(&json!("1970-01-01T00:01:00.5Z"), None), Ok(60_500));
        assert_eq!(time_ms(&json!(60), None), Ok(60_000));
        assert_eq!(time_ms(&json!(1_700_000_000_000i64), None), Ok(1_700_000_000_000));
        assert_eq!(time_ms(&json!("60"), Some(TimeFormat::EpochS)), Ok(60_000));
        assert_eq!(time_ms(&json!(60), Some(TimeFormat::EpochMs)), Ok(60));
        assert!(time_ms(&json!(true), None).is_err());
        assert!(time_ms(&json!("noon"), None).is_err());
    }

    #[test]
    fn times_are_written_in_every_format() {
        assert_eq!(format_time(60_500, TimeFormat::Rfc3339), json!("1970-01-01T00:01:00.500Z"));
        assert_eq!(format_time(60_500, TimeFormat::EpochS), json!(60));
        assert_eq!(format_time(60_500, TimeFormat::EpochMs), json!(60_500));
    }
}
