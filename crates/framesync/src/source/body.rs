//! A page's body: decompressed (deflate here; gzip is undone by the HTTP client) within
//! `source.max_bytes`, then read as one JSON document or as newline-delimited JSON. The
//! `Content-Type` an SS sends is not trusted to pick the format: the config says it.

use std::io::Read;

use serde_json::Value;

use crate::config::{BodyFormat, SourceConfig};
use crate::http;
use crate::record;

/// What went wrong undoing a `Content-Encoding`.
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// The decoded body is larger than the limit.
    TooLarge,
    /// An encoding framesync did not ask for.
    Unknown(String),
    /// The bytes are not what the encoding says.
    Corrupt(String),
}

/// The body as the SS meant it, given the `Content-Encoding` it sent (gzip answers arrive
/// decoded and without the header). Deflate is a zlib stream by the standard, but some
/// servers send raw deflate: both are read. The decoded size is bounded by `max_bytes`, so a
/// small answer that inflates to gigabytes fails instead of filling memory.
pub fn decode(bytes: Vec<u8>, encoding: Option<&str>, max_bytes: u64) -> Result<Vec<u8>, DecodeError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(bytes),
        Some("deflate") if zlib_header(&bytes) => inflate(flate2::read::ZlibDecoder::new(&bytes[..]), max_bytes),
        Some("deflate") => inflate(flate2::read::DeflateDecoder::new(&bytes[..]), max_bytes),
        Some("gzip" | "x-gzip") => inflate(flate2::read::MultiGzDecoder::new(&bytes[..]), max_bytes),
        Some(other) => Err(DecodeError::Unknown(other.to_owned())),
    }
}

/// A zlib stream starts with a method byte of 8 (deflate) and a check making the first two
/// bytes a multiple of 31; raw deflate rarely does both.
fn zlib_header(bytes: &[u8]) -> bool {
    matches!(bytes, [cmf, flg, ..] if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0)
}

fn inflate(reader: impl Read, max_bytes: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader.take(max_bytes.saturating_add(1)).read_to_end(&mut out).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if out.len() as u64 > max_bytes {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// A page's body, parsed: its records, the next link or cursor, and the total the SS states.
#[derive(Debug, PartialEq)]
pub struct PageBody {
    pub records: Vec<Value>,
    pub next: Option<String>,
    /// The total number of records at `source.pages.total`, when the config reads one.
    pub total: Option<u64>,
}

/// Parses a page body in the configured format.
pub fn parse_page(body: &str, config: &SourceConfig) -> Result<PageBody, String> {
    if body.trim_start().starts_with('<') {
        return Err(format!(
            "the body is HTML or XML, not JSON (a proxy's error page, a login page, or the wrong URL?): {}",
            http::excerpt(body)
        ));
    }
    match config.format {
        BodyFormat::Json => parse_json(body, config),
        BodyFormat::Ndjson => Ok(PageBody { records: parse_ndjson(body)?, next: None, total: None }),
    }
}

/// One JSON document: the records array at `records`, the next link or cursor at `next`, the
/// total at `pages.total`.
fn parse_json(body: &str, config: &SourceConfig) -> Result<PageBody, String> {
    let doc: Value = serde_json::from_str(body).map_err(|e| {
        if e.is_eof() {
            format!("the body ends early ({e}): a truncated response")
        } else {
            format!("the body is not JSON ({e}): {}", http::excerpt(body))
        }
    })?;
    let records = match doc.pointer(&config.records) {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(format!("{} is {}, not an array of records", where_(&config.records), record::kind(other)));
        }
        None => return Err(format!("the body has no records array at {}", where_(&config.records))),
    };
    let next = match config.next.as_deref().and_then(|p| doc.pointer(p)) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "the next page at {} is {}, not a URL or cursor",
                config.next.as_deref().unwrap_or(""),
                record::kind(other)
            ));
        }
    };
    let total = config.pages.total.as_deref().map(|pointer| total(&doc, pointer)).transpose()?;
    Ok(PageBody { records, next, total })
}

/// The total at `pointer`: a whole number, or a string of digits.
fn total(doc: &Value, pointer: &str) -> Result<u64, String> {
    match doc.pointer(pointer) {
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or_default()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().unwrap_or_default()),
        Some(other) => Err(format!("the total at {pointer:?} is {other}, not a number of records")),
        None => Err(format!("the body has no total at {pointer:?} (source.pages.total)")),
    }
}

/// Newline-delimited JSON: one record per non-empty line (`\n` or `\r\n`). A last line with
/// no newline after it that does not parse was cut off: an error, never a dropped record.
fn parse_ndjson(body: &str) -> Result<Vec<Value>, String> {
    let mut records = Vec::new();
    let complete = body.ends_with('\n');
    let lines: Vec<&str> = body.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Array(_)) => {
                return Err(format!(
                    "the body is not NDJSON: line {} is an array, where NDJSON has one record per line (is the body one JSON document? then use format = \"json\")",
                    i + 1
                ));
            }
            Ok(value) => records.push(value),
            Err(e) if i + 1 == lines.len() && !complete && e.is_eof() => {
                return Err(format!("the body ends early: its last line ({}) is cut off, a truncated response", i + 1));
            }
            Err(e) => {
                return Err(format!(
                    "the body is not NDJSON: line {} is not one JSON value ({e}): {}",
                    i + 1,
                    http::excerpt(line)
                ));
            }
        }
    }
    Ok(records)
}

fn where_(pointer: &str) -> String {
    if pointer.is_empty() { "the body".into() } else { format!("{pointer:?}") }
}
