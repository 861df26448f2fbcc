//! The log: what framesync says on stderr while it works. Every line carries a timestamp and
//! the pipeline's name (`Config::pipeline_name`, its ledger's stem), in words or, for collectors, as one JSON
//! object per line (`--log-format json` or `FRAMESYNC_LOG=json`). Every message is scrubbed of
//! the installed secrets before it is formatted, so neither form can carry one.
//!
//! cron mails every line, so a scheduled run ([`hold`]) keeps its lines until it ends and
//! prints them only when it fails ([`release`]): a run that exits 0 prints nothing. Asking for
//! more than warnings (`RUST_LOG=info`) prints every line as it happens. A line logged with
//! the target [`ALWAYS`] is never held: what a person at a terminal must hear even from a run
//! that succeeds.

use std::io::Write;
use std::sync::{Mutex, RwLock};

use crate::redact::scrub;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `2024-05-01T12:00:00.123Z orders: warn: message`
    #[default]
    Human,
    /// `{"ts":"…","level":"warn","pipeline":"orders","msg":"…"}`
    Json,
}

/// The log target of a line a scheduled run prints even when it exits 0.
pub const ALWAYS: &str = "framesync::always";

/// The pipeline the lines speak for: its name once a config is loaded.
static PIPELINE: RwLock<String> = RwLock::new(String::new());

/// Lines kept back while a scheduled run works; `None` when lines go out as they come.
static HELD: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Names the pipeline in every line from now on.
pub fn set_pipeline(name: &str) {
    *PIPELINE.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = name.to_owned();
}

fn pipeline() -> String {
    PIPELINE.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
}

/// Keeps every line back until [`release`], unless the operator asked for more than warnings.
/// A panic is a failure like any other: the lines kept back are printed before its message.
pub fn hold() {
    if log::max_level() < log::LevelFilter::Info {
        *HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Vec::new());
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // `try_lock`: a panic inside `Logger::log`, which holds the lock, must not deadlock.
            if let Ok(mut held) = HELD.try_lock()
                && let Some(lines) = held.take()
            {
                let mut err = std::io::stderr().lock();
                for line in lines {
                    let _ = err.write_all(line.as_bytes());
                }
            }
            report(info);
        }));
    }
}

/// Ends [`hold`]: prints the lines kept back when `print` (the run failed), drops them otherwise.
pub fn release(print: bool) {
    let held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let (true, Some(lines)) = (print, held) {
        let mut err = std::io::stderr().lock();
        for line in lines {
            let _ = err.write_all(line.as_bytes());
        }
    }
}

/// The one log channel: `env_logger`'s filter (`RUST_LOG`), our format, every message scrubbed.
pub struct Logger {
    filter: env_logger::Logger,
    format: Format,
}

impl Logger {
    /// Installs the logger with `RUST_LOG`'s filter (warnings by default) and `format`.
    pub fn init(format: Format) {
        let filter = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
        let level = filter.filter();
        if log::set_boxed_logger(Box::new(Logger { filter, format })).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.filter.matches(record) {
            return;
        }
        let message = scrub(&record.args().to_string());
        let line = format_line(self.format, &timestamp(), record.level(), &pipeline(), &message);
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match held.as_mut() {
            Some(lines) if record.target() != ALWAYS => lines.push(line),
            _ => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Now, in RFC 3339 UTC with milliseconds.
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One line of the log, newline included. `message` is already scrubbed.
pub fn format_line(format: Format, ts: &str, level: log::Level, pipeline: &str, message: &str) -> String {
    let level = level.as_str().to_lowercase();
    match format {
        Format::Human => {
            let name = if pipeline.is_empty() { "framesync".to_owned() } else { format!("framesync[{pipeline}]") };
            format!("{ts} {name}: {level}: {message}\n")
        }
        Format::Json => {
            let mut object = serde_json::json!({ "ts": ts, "level": level, "pipeline": pipeline, "msg": message });
            if let Some(frame) = frame_of(message) {
                object["frame"] = frame.into();
            }
            if let Some(status) = status_of(message) {
                object["status"] = status.into();
            }
            format!("{object}\n")
        }
    }
}

/// The frame a message is about, when it begins with `frame START..END: `.
fn frame_of(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("frame ")?;
    let (frame, _) = rest.split_once(": ")?;
    frame.contains("..").then_some(frame)
}

/// The first HTTP status a message names (`HTTP 503`).
fn status_of(message: &str) -> Option<u16> {
    let at = message.find("HTTP ")? + "HTTP ".len();
    let digits = message.get(at..at + 3)?;
    let next = message[at + 3..].chars().next();
    (digits.bytes().all(|b| b.is_ascii_digit()) && !next.is_some_and(|c| c.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2024-05-01T12:00:00.123Z";

    #[test]
    fn a_human_line_carries_the_time_the_pipeline_and_the_level() {
        let line = format_line(Format::Human, TS, log::Level::Warn, "orders", "frame x: y");
        assert_eq!(line, "2024-05-01T12:00:00.123Z framesync[orders]: warn: frame x: y\n");
        let line = format_line(Format::Human, TS, log::Level::Error, "", "no config");
        assert_eq!(line, "2024-05-01T12:00:00.123Z framesync: error: no config\n");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_frame_and_status_when_the_message_names_them() {
        let message = "frame 2024-05-01T12:00:00Z..2024-05-01T12:01:00Z: GET http://ss/x: HTTP 503: busy";
        let line = format_line(Format::Json, TS, log::Level::Error, "orders", message);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ts"], TS);
        assert_eq!(value["level"], "error");
        assert_eq!(value["pipeline"], "orders");
        assert_eq!(value["msg"], message);
        assert_eq!(value["frame"], "2024-05-01T12:00:00Z..2024-05-01T12:01:00Z");
        assert_eq!(value["status"], 503);
        let plain: serde_json::Value =
            serde_json::from_str(&format_line(Format::Json, TS, log::Level::Info, "o", "a \"quoted\"\nline")).unwrap();
        assert_eq!(plain["msg"], "a \"quoted\"\nline");
        assert!(plain.get("frame").is_none() && plain.get("status").is_none());
    }

    #[test]
    fn a_status_is_three_digits_after_http() {
        assert_eq!(status_of("HTTP 400 Bad"), Some(400));
        assert_eq!(status_of("HTTP 4000"), None);
        assert_eq!(status_of("HTTP/1.1"), None);
        assert_eq!(status_of("no status"), None);
    }
}
