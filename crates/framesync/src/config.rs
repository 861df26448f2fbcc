//! The TOML config: read once, checked once, turned into typed values. Every error names the
//! key and says what a valid value looks like, so a bad config is fixed in one edit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::frames::{Epoch, FrameSize, parse_time};
use crate::identity::Identity;
use crate::ledger::Synchronous;
use crate::mapping::Mapping;
use crate::redact::Redactor;

/// How a time is written in a URL or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    Rfc3339,
    EpochS,
    EpochMs,
}

impl TimeFormat {
    pub fn parse(key: &str, text: &str) -> Result<Self> {
        match text {
            "rfc3339" => Ok(Self::Rfc3339),
            "epoch_s" => Ok(Self::EpochS),
            "epoch_ms" => Ok(Self::EpochMs),
            other => bail!("{key}: {other:?} is not a time format; use rfc3339, epoch_s or epoch_ms"),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    Record,
    Batch,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ledger: PathBuf,
    pub frames: FramesConfig,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub run: RunConfig,
    /// Values that came from the environment: scrubbed from every message framesync writes.
    pub secrets: Redactor,
    /// The pipeline's identity, URLs as written (before `${VAR}` expansion): the ledger keeps it.
    pub identity: Identity,
    /// The file the config was read from (none when parsed from text).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct FramesConfig {
    /// The reference time, aligned down to a frame boundary.
    pub start: Epoch,
    pub size: FrameSize,
    /// Seconds a frame must be closed before it is pulled.
    pub delay: i64,
    /// Seconds after first delivery at which a frame is pulled again.
    pub recheck: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: String,
    pub time_format: TimeFormat,
    pub records: String,
    pub uid: UidRule,
    pub timestamp: Option<String>,
    pub timestamp_format: Option<TimeFormat>,
    pub next: Option<String>,
    pub cursor_param: String,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub max_records: usize,
    pub max_pages: usize,
    pub headers: Vec<(String, String)>,
    /// At most this many requests per second to the SS.
    pub max_rps: Option<f64>,
    /// A page slower than this means the SS is under load: pulling stops for the run.
    pub slow_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub url: String,
    pub mode: SinkMode,
    pub batch_size: usize,
    pub idempotency_header: String,
    pub already_there: Vec<u16>,
    /// Statuses that mean "this record is bad": it is dead-lettered and the frame goes on.
    pub reject: Vec<u16>,
    pub lookup_url: Option<String>,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub map: Option<Mapping>,
    /// At most this many requests per second to the RS (lookups included).
    pub max_rps: Option<f64>,
    /// Immediate retries of a request that failed in a retryable way, before giving up for the run.
    pub retries: u32,
    /// Acknowledgements are recorded in one ledger transaction per group, before the next
    /// request once the group holds this many records or is `ack_group_time` old: the records a
    /// crash can re-send.
    pub ack_group: usize,
    pub ack_group_time: Duration,
    /// A record the RS fails this many times while acknowledging others is dead-lettered.
    pub max_attempts: u32,
    /// This many records in a row refused the same way stop pushing for the run.
    pub max_rejected_in_a_row: u32,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub max_frames: usize,
    pub max_seconds: Duration,
    /// Frames whose start is within this many seconds of the eligible edge count as fresh.
    pub fresh: i64,
    /// Old gaps are only pulled inside this UTC window (minutes after midnight, start..end).
    pub backfill_window: Option<(u32, u32)>,
    pub retain: i64,
    pub metrics_file: Option<PathBuf>,
    /// First retry delay for a failed frame; doubles with each attempt up to `retry_max`.
    pub retry_base: i64,
    pub retry_max: i64,
    /// The longest `Retry-After` (or quiet) a server is granted, in seconds; asked for longer, it
    /// gets this. Stored waits beyond it were written by a clock that has jumped back since.
    pub max_retry_after: i64,
    /// SQLite `synchronous` for the ledger.
    pub sync: Synchronous,
    /// How long a ledger write waits for another process's transaction before the run gives up.
    pub busy_timeout: Duration,
    /// A re-check that fails this many times in a row is given up (and recorded).
    pub max_recheck_attempts: u32,
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ledger: String,
    frames: RawFrames,
    source: RawSource,
    sink: RawSink,
    #[serde(default)]
    run: RawRun,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrames {
    start: String,
    #[serde(default = "default_size")]
    size: String,
    #[serde(default = "default_delay")]
    delay: String,
    #[serde(default)]
    recheck: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    #[serde(default = "default_time_format")]
    time_format: String,
    #[serde(default)]
    records: String,
    uid: String,
    timestamp: Option<String>,
    timestamp_format: Option<String>,
    next: Option<String>,
    #[serde(default = "default_cursor_param")]
    cursor_param: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_max_records")]
    max_records: usize,
    #[serde(default = "default_max_pages")]
    max_pages: usize,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    max_rps: Option<f64>,
    slow_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    url: String,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default = "default_idempotency_header")]
    idempotency_header: String,
    #[serde(default = "default_already_there")]
    already_there: Vec<u16>,
    #[serde(default = "default_reject")]
    reject: Vec<u16>,
    lookup_url: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    map: Option<toml::Table>,
    #[serde(default = "default_retries")]
    retries: u32,
    max_rps: Option<f64>,
    #[serde(default = "default_ack_group")]
    ack_group: usize,
    #[serde(default = "default_ack_group_time")]
    ack_group_time: String,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_max_rejected_in_a_row")]
    max_rejected_in_a_row: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    #[serde(default = "default_max_frames")]
    max_frames: usize,
    #[serde(default = "default_max_seconds")]
    max_seconds: toml::Value,
    #[serde(default = "default_fresh")]
    fresh: String,
    backfill_window: Option<String>,
    #[serde(default = "default_retain")]
    retain: String,
    metrics_file: Option<String>,
    #[serde(default = "default_retry_base")]
    retry_base: String,
    #[serde(default = "default_retry_max")]
    retry_max: String,
    #[serde(default = "default_max_retry_after")]
    max_retry_after: String,
    #[serde(default = "default_synchronous")]
    synchronous: String,
    #[serde(default = "default_busy_timeout")]
    busy_timeout: String,
    #[serde(default = "default_max_recheck_attempts")]
    max_recheck_attempts: u32,
}

impl Default for RawRun {
    fn default() -> Self {
        Self {
            max_frames: default_max_frames(),
            max_seconds: default_max_seconds(),
            fresh: default_fresh(),
            backfill_window: None,
            retain: default_retain(),
            metrics_file: None,
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            max_retry_after: default_max_retry_after(),
            synchronous: default_synchronous(),
            busy_timeout: default_busy_timeout(),
            max_recheck_attempts: default_max_recheck_attempts(),
        }
    }
}

fn default_size() -> String {
    "1m".into()
}
fn default_delay() -> String {
    "2m".into()
}
fn default_time_format() -> String {
    "rfc3339".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_records() -> usize {
    1_000_000
}
fn default_max_pages() -> usize {
    10_000
}
fn default_mode() -> String {
    "record".into()
}
fn default_batch_size() -> usize {
    500
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_already_there() -> Vec<u16> {
    vec![409]
}
fn default_reject() -> Vec<u16> {
    vec![400, 422]
}
fn default_max_attempts() -> u32 {
    10
}
fn default_max_rejected_in_a_row() -> u32 {
    20
}
fn default_max_recheck_attempts() -> u32 {
    5
}
fn default_retries() -> u32 {
    2
}
fn default_ack_group() -> usize {
    100
}
fn default_ack_group_time() -> String {
    "100ms".into()
}
fn default_max_frames() -> usize {
    60
}
fn default_max_seconds() -> toml::Value {
    toml::Value::Integer(50)
}
fn default_fresh() -> String {
    "10m".into()
}
fn default_retain() -> String {
    "30d".into()
}
fn default_retry_base() -> String {
    "30s".into()
}
fn default_retry_max() -> String {
    "1h".into()
}
fn default_max_retry_after() -> String {
    "1h".into()
}
fn default_synchronous() -> String {
    "normal".into()
}
fn default_busy_timeout() -> String {
    "10s".into()
}

// ---- loading -------------------------------------------------------------------------------

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    pub fn load(path: &Path, env: Env) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = Self::parse(&text, base, env).with_context(|| format!("bad config {}", path.display()))?;
        Ok(Self { file: Some(path.to_path_buf()), ..config })
    }

    /// Parses and validates a config; relative paths are taken from `base` (the config's folder).
    pub fn parse(text: &str, base: &Path, env: Env) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        let mut secrets = Redactor::default();
        let ledger = resolve(base, &raw.ledger);
        let frames = frames_config(raw.frames)?;
        let identity = identity(&raw.source, &raw.sink, &frames);
        let source = source_config(raw.source, env, &mut secrets)?;
        let sink = sink_config(raw.sink, env, &mut secrets)?;
        let run = run_config(raw.run, base, &frames)?;
        Ok(Self { ledger, frames, source, sink, run, secrets, identity, file: None })
    }
}

/// The identity from the texts as written: no `${VAR}` is expanded, so no secret is in it.
fn identity(source: &RawSource, sink: &RawSink, frames: &FramesConfig) -> Identity {
    Identity {
        source_url: source.url.clone(),
        source_time_format: source.time_format.clone(),
        source_records: source.records.clone(),
        source_uid: source.uid.clone(),
        frames_start: frames.start,
        frames_size: frames.size.seconds(),
        sink_url: sink.url.clone(),
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

fn frames_config(raw: RawFrames) -> Result<FramesConfig> {
    let size = duration_secs("frames.size", &raw.size)?;
    let size = FrameSize::new(size).map_err(|e| anyhow!("frames.size: {e}"))?;
    let start = time("frames.start", &raw.start)?;
    let delay = duration_secs("frames.delay", &raw.delay)?;
    let recheck = raw
        .recheck
        .iter()
        .enumerate()
        .map(|(i, text)| duration_secs(&format!("frames.recheck[{i}]"), text))
        .collect::<Result<Vec<_>>>()?;
    if recheck.windows(2).any(|w| w[0] >= w[1]) {
        bail!("frames.recheck: the re-check times must increase, e.g. [\"10m\", \"6h\"]");
    }
    Ok(FramesConfig { start: size.align_down(start), size, delay, recheck })
}

fn source_config(raw: RawSource, env: Env, secrets: &mut Redactor) -> Result<SourceConfig> {
    let url = expand("source.url", &raw.url, env, secrets)?;
    check_url("source.url", &url)?;
    check_placeholders("source.url", &url, &["from", "to", "last"])?;
    if !url.contains("{from}") && !url.contains("{last}") {
        bail!(
            "source.url: the URL must contain {{from}} and {{to}} (or {{last}}) so each frame is asked for its own time range"
        );
    }
    let uid = match raw.uid.as_str() {
        "hash" => UidRule::Hash,
        ptr => UidRule::Field(pointer("source.uid", ptr, false)?),
    };
    let timestamp_format =
        raw.timestamp_format.as_deref().map(|t| TimeFormat::parse("source.timestamp_format", t)).transpose()?;
    if raw.max_records == 0 || raw.max_pages == 0 || raw.max_bytes == 0 {
        bail!("source.max_records, source.max_pages and source.max_bytes must be at least 1");
    }
    Ok(SourceConfig {
        url,
        time_format: TimeFormat::parse("source.time_format", &raw.time_format)?,
        records: pointer("source.records", &raw.records, true)?,
        uid,
        timestamp: raw.timestamp.map(|p| pointer("source.timestamp", &p, false)).transpose()?,
        timestamp_format,
        next: raw.next.map(|p| pointer("source.next", &p, false)).transpose()?,
        cursor_param: raw.cursor_param,
        timeout: duration("source.timeout", &raw.timeout)?,
        max_bytes: raw.max_bytes,
        max_records: raw.max_records,
        max_pages: raw.max_pages,
        headers: headers("source.headers", raw.headers, env, secrets)?,
        max_rps: rate("source.max_rps", raw.max_rps)?,
        slow_after: raw.slow_after.map(|d| duration("source.slow_after", &d)).transpose()?,
    })
}

fn sink_config(raw: RawSink, env: Env, secrets: &mut Redactor) -> Result<SinkConfig> {
    let url = expand("sink.url", &raw.url, env, secrets)?;
    check_url("sink.url", &url)?;
    check_placeholders("sink.url", &url, &[])?;
    let lookup_url = raw
        .lookup_url
        .map(|u| -> Result<String> {
            let u = expand("sink.lookup_url", &u, env, secrets)?;
            check_url("sink.lookup_url", &u)?;
            check_placeholders("sink.lookup_url", &u, &["uid"])?;
            if !u.contains("{uid}") {
                bail!("sink.lookup_url: the URL must contain {{uid}}, e.g. https://rs.example.com/v1/ingest/{{uid}}");
            }
            Ok(u)
        })
        .transpose()?;
    let mode = match raw.mode.as_str() {
        "record" => SinkMode::Record,
        "batch" => SinkMode::Batch,
        other => bail!("sink.mode: {other:?} is not a mode; use \"record\" or \"batch\""),
    };
    count("sink.batch_size", raw.batch_size, 1..=MOST_PER_BATCH)?;
    if raw.ack_group == 0 {
        bail!("sink.ack_group: must be at least 1 (1 records every acknowledgement on its own)");
    }
    statuses("sink.already_there", &raw.already_there, "[409]")?;
    statuses("sink.reject", &raw.reject, "[400, 422]")?;
    if let Some(code) = raw.reject.iter().find(|c| raw.already_there.contains(c)) {
        bail!("sink.reject: {code} is also in sink.already_there; a status means one thing");
    }
    if raw.max_attempts == 0 || raw.max_rejected_in_a_row == 0 {
        bail!("sink.max_attempts and sink.max_rejected_in_a_row must be at least 1");
    }
    let idempotency_header = raw.idempotency_header;
    if ureq::http::HeaderName::from_bytes(idempotency_header.as_bytes()).is_err() {
        bail!("sink.idempotency_header: {idempotency_header:?} is not a valid HTTP header name");
    }
    Ok(SinkConfig {
        url,
        mode,
        batch_size: raw.batch_size,
        idempotency_header,
        already_there: raw.already_there,
        reject: raw.reject,
        lookup_url,
        timeout: duration("sink.timeout", &raw.timeout)?,
        headers: headers("sink.headers", raw.headers, env, secrets)?,
        map: raw.map.map(|m| Mapping::from_toml("sink.map", &m)).transpose()?,
        max_rps: rate("sink.max_rps", raw.max_rps)?,
        retries: raw.retries,
        ack_group: raw.ack_group,
        ack_group_time: duration("sink.ack_group_time", &raw.ack_group_time)?,
        max_attempts: raw.max_attempts,
        max_rejected_in_a_row: raw.max_rejected_in_a_row,
    })
}

fn run_config(raw: RawRun, base: &Path, frames: &FramesConfig) -> Result<RunConfig> {
    count("run.max_frames", raw.max_frames, 1..=MOST_FRAMES_PER_RUN)?;
    let max_seconds = match &raw.max_seconds {
        toml::Value::Integer(n) if *n > 0 => at_most_100_years("run.max_seconds", &n.to_string(), *n as u64)?,
        toml::Value::String(s) => duration("run.max_seconds", s)?,
        other => bail!("run.max_seconds: {other} is not a positive number of seconds such as 50"),
    };
    let retain = duration_secs("run.retain", &raw.retain)?;
    let longest_recheck = frames.recheck.last().copied().unwrap_or(0);
    if retain <= longest_recheck {
        bail!(
            "run.retain: {} must be longer than the last re-check ({}s), or re-checks would re-send pruned UIDs",
            raw.retain,
            longest_recheck
        );
    }
    let retry_base = duration_secs("run.retry_base", &raw.retry_base)?;
    let retry_max = duration_secs("run.retry_max", &raw.retry_max)?;
    if retry_max < retry_base {
        bail!("run.retry_max: must not be shorter than run.retry_base");
    }
    Ok(RunConfig {
        max_frames: raw.max_frames,
        max_seconds,
        fresh: fresh(&raw.fresh, frames.size)?,
        backfill_window: raw.backfill_window.as_deref().map(window).transpose()?,
        retain,
        metrics_file: raw.metrics_file.map(|p| resolve(base, &p)),
        retry_base,
        retry_max,
        max_retry_after: duration_secs("run.max_retry_after", &raw.max_retry_after)?,
        busy_timeout: busy_timeout(&raw.busy_timeout)?,
        max_recheck_attempts: match raw.max_recheck_attempts {
            0 => bail!("run.max_recheck_attempts: must be at least 1"),
            n => n,
        },
        sync: match raw.synchronous.as_str() {
            "normal" => Synchronous::Normal,
            "full" => Synchronous::Full,
            other => bail!(
                "run.synchronous: {other:?} is not a setting; use \"normal\" (survives any crash of framesync) or \"full\" (also survives power loss, slower)"
            ),
        },
    })
}

// ---- value checks --------------------------------------------------------------------------
//
// Each also bounds its value, so that the time arithmetic it feeds (frame bounds in seconds and
// milliseconds, deadlines, backoff, retention cutoffs) cannot overflow.

/// The times framesync handles, as `frames.start`: the Unix epoch to the end of year 9999.
const EARLIEST: Epoch = 0;
const LATEST: Epoch = 253_402_300_799;

/// The longest duration any key takes: 100 years, as humantime reads "100y" (365.25-day years).
const LONGEST_SECS: u64 = 100 * 31_557_600;

/// SQLite takes its busy timeout in milliseconds as a 32-bit integer: at most 24.8 days.
const LONGEST_BUSY_TIMEOUT: Duration = Duration::from_secs(24 * 86_400);

const MOST_PER_BATCH: usize = 100_000;
/// A run's plan holds at most this many frames (a year of 1-minute frames is 525,600).
const MOST_FRAMES_PER_RUN: usize = 1_000_000;
/// Every fresh frame is looked at by every run's plan, so `run.fresh` spans at most this many.
const MOST_FRESH_FRAMES: i64 = 100_000;
/// The slowest pace `max_rps` sets: one request every 1000 s.
const LEAST_RATE: f64 = 0.001;

fn time(key: &str, text: &str) -> Result<Epoch> {
    let t = parse_time(text).map_err(|e| anyhow!("{key}: {e}"))?;
    if !(EARLIEST..=LATEST).contains(&t) {
        bail!(
            "{key}: {:?} is outside the times framesync handles, 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z",
            text.trim()
        );
    }
    Ok(t)
}

fn count(key: &str, n: usize, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    if !range.contains(&n) {
        bail!("{key}: {n} is out of range; use a number from {} to {}", range.start(), range.end());
    }
    Ok(n)
}

/// HTTP statuses a list may hold: 4xx answers that are not "retry later" (408, 425, 429).
fn statuses(key: &str, codes: &[u16], example: &str) -> Result<()> {
    match codes.iter().find(|c| !(400..500).contains(*c) || [408, 425, 429].contains(*c)) {
        Some(code) => {
            bail!("{key}: {code} cannot be listed; list 4xx statuses other than 408, 425 and 429, such as {example}")
        }
        None => Ok(()),
    }
}

fn rate(key: &str, value: Option<f64>) -> Result<Option<f64>> {
    match value {
        Some(r) if !(r.is_finite() && r > 0.0) => bail!("{key}: {r} is not a positive number of requests per second"),
        Some(r) if r < LEAST_RATE => {
            bail!("{key}: {r} is slower than one request every 1000 s; use at least {LEAST_RATE}")
        }
        other => Ok(other),
    }
}

fn duration(key: &str, text: &str) -> Result<Duration> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| anyhow!("{key}: {text:?} is not a duration such as \"30s\", \"2m\" or \"1h\" ({e})"))?;
    if d > Duration::from_secs(LONGEST_SECS) {
        bail!("{key}: {text:?} is longer than 100 years, the longest duration framesync takes");
    }
    Ok(d)
}

/// A whole number of seconds written as a number (`run.max_seconds = 50`).
fn at_most_100_years(key: &str, text: &str, secs: u64) -> Result<Duration> {
    if secs > LONGEST_SECS {
        bail!("{key}: {text} seconds is longer than 100 years, the longest duration framesync takes");
    }
    Ok(Duration::from_secs(secs))
}

fn busy_timeout(text: &str) -> Result<Duration> {
    let d = duration("run.busy_timeout", text)?;
    if d > LONGEST_BUSY_TIMEOUT {
        bail!("run.busy_timeout: {text:?} is longer than 24 days, the longest SQLite waits");
    }
    Ok(d)
}

/// `run.fresh` in seconds, spanning at most `MOST_FRESH_FRAMES` frames.
fn fresh(text: &str, size: FrameSize) -> Result<i64> {
    let fresh = duration_secs("run.fresh", text)?;
    let frames = fresh / size.seconds();
    if frames > MOST_FRESH_FRAMES {
        bail!(
            "run.fresh: {text:?} spans {frames} frames of frames.size; every run plans each fresh frame, so at most {MOST_FRESH_FRAMES}: make it shorter"
        );
    }
    Ok(fresh)
}

fn duration_secs(key: &str, text: &str) -> Result<i64> {
    let d = duration(key, text)?;
    if d.subsec_nanos() != 0 {
        bail!("{key}: {text:?} must be a whole number of seconds");
    }
    i64::try_from(d.as_secs()).map_err(|_| anyhow!("{key}: {text:?} is too long"))
}

/// A JSON pointer: "" (the whole document, only where allowed) or a path starting with "/".
fn pointer(key: &str, text: &str, empty_ok: bool) -> Result<String> {
    if text.is_empty() && !empty_ok {
        bail!("{key}: must be a JSON pointer such as \"/id\"");
    }
    if !text.is_empty() && !text.starts_with('/') {
        bail!("{key}: {text:?} is not a JSON pointer; write it as \"/{text}\"");
    }
    Ok(text.to_owned())
}

fn check_url(key: &str, url: &str) -> Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{key}: must start with http:// or https://");
    }
    Ok(())
}

/// Rejects `{name}` placeholders that framesync would not fill, so a typo is not sent as is.
fn check_placeholders(key: &str, url: &str, allowed: &[&str]) -> Result<()> {
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            bail!("{key}: an unclosed '{{' in the URL");
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            let known: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            bail!(
                "{key}: unknown placeholder {{{name}}}; this URL may use {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            );
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Replaces `${VAR}` with the environment's value and remembers the value as a secret.
fn expand(key: &str, text: &str, env: Env, secrets: &mut Redactor) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let close = after.find('}').ok_or_else(|| anyhow!("{key}: an unclosed \"${{\""))?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{key}: ${{{name}}} is not an environment variable name");
        }
        let value = env(name).ok_or_else(|| {
            anyhow!("{key}: the environment variable {name} is not set (export it before running framesync)")
        })?;
        secrets.add(&value);
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn headers(
    key: &str,
    raw: BTreeMap<String, String>,
    env: Env,
    secrets: &mut Redactor,
) -> Result<Vec<(String, String)>> {
    raw.into_iter()
        .map(|(name, value)| {
            let value = expand(&format!("{key}.{name}"), &value, env, secrets)?;
            if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                bail!("{key}: {name:?} is not a valid HTTP header name");
            }
            if ureq::http::HeaderValue::from_str(&value).is_err() {
                bail!("{key}.{name}: the value holds characters a header cannot carry");
            }
            Ok((name, value))
        })
        .collect()
}

/// "22:00-06:00" → minutes after midnight (start, end); the window may wrap midnight.
fn window(text: &str) -> Result<(u32, u32)> {
    let bad = || anyhow!("run.backfill_window: {text:?} is not a UTC window such as \"22:00-06:00\"");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if a == b {
        return Err(bad());
    }
    Ok((a, b))
}

/// The example written by `framesync init`; a test keeps it parsing.
pub const EXAMPLE: &str = include_str!("../framesync.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SS_TOKEN" => Some("ss-secret-123".into()),
            "RS_TOKEN" => Some("rs-secret-456".into()),
            _ => None,
        }
    }

    fn minimal(extra_source: &str, extra_run: &str) -> String {
        format!(
            r#"
ledger = "orders.db"
[frames]
start = "2026-11-01T00:00:30Z"
[source]
url = "http://127.0.0.1:1/ss?from={{from}}&to={{to}}"
uid = "/id"
{extra_source}
[sink]
url = "http://127.0.0.1:1/rs"
[run]
{extra_run}
"#
        )
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/framesync"), &env)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("the config should be refused"))
    }

    #[test]
    fn the_example_config_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.frames.size.seconds(), 60);
        assert!(config.secrets.scrub("Bearer ss-secret-123").contains("***"));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(&minimal("", "")).unwrap();
        assert_eq!(config.ledger, PathBuf::from("/etc/framesync/orders.db"));
        assert_eq!(config.frames.start, parse_time("2026-11-01T00:00:00Z").unwrap(), "aligned down");
        assert_eq!(config.frames.delay, 120);
        assert_eq!(config.sink.idempotency_header, "Idempotency-Key");
        assert_eq!(config.sink.already_there, vec![409]);
        assert_eq!(config.run.max_frames, 60);
        assert_eq!(config.run.max_seconds, Duration::from_secs(50));
        assert_eq!((config.sink.ack_group, config.sink.ack_group_time), (100, Duration::from_millis(100)));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = error(&minimal("uidd = \"/x\"", ""));
        assert!(e.contains("uidd"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (minimal("time_format = \"iso\"", ""), "source.time_format"),
            (minimal("timeout = \"soon\"", ""), "source.timeout"),
            (minimal("next = \"next\"", ""), "source.next"),
            (minimal("", "max_frames = 0"), "run.max_frames"),
            (minimal("", "backfill_window = \"22-6\""), "run.backfill_window"),
            (minimal("", "retain = \"5m\"").replace("[source]", "recheck = [\"10m\"]\n[source]"), "run.retain"),
            (minimal("headers = { Authorization = \"Bearer ${NOPE}\" }", ""), "NOPE"),
            (minimal("", "").replace("{to}", "{too}"), "{too}"),
            (minimal("", "").replace("start = \"2026-11-01T00:00:30Z\"", "start = \"yesterday\""), "frames.start"),
            (minimal("", "").replace("[source]", "[frames.x]\n[source]"), "x"),
            (minimal("", "").replace("[run]", "ack_group = 0\n[run]"), "sink.ack_group"),
            (minimal("", "").replace("[run]", "ack_group_time = \"now\"\n[run]"), "sink.ack_group_time"),
        ];
        for (text, key) in cases {
            assert!(parse(&text).is_err(), "{key}: accepted {text}");
            let e = error(&text);
            assert!(e.contains(key), "{key} not named in: {e}");
        }
    }

    #[test]
    fn a_frame_size_that_does_not_divide_a_day_is_refused() {
        let text = minimal("", "").replace("[source]", "size = \"7s\"\n[source]");
        let e = error(&text);
        assert!(e.contains("frames.size") && e.contains("divide a day"), "{e}");
    }

    #[test]
    fn environment_values_are_expanded_and_remembered_as_secrets() {
        let config = parse(&minimal("headers = { Authorization = \"Bearer ${SS_TOKEN}\" }", "")).unwrap();
        assert_eq!(config.source.headers, vec![("Authorization".into(), "Bearer ss-secret-123".into())]);
        assert_eq!(config.secrets.scrub("failed: Bearer ss-secret-123"), "failed: Bearer ***");
    }

    #[test]
    fn the_identity_keeps_the_urls_as_written_before_expansion() {
        let text = minimal("", "")
            .replace("&to={to}", "&to={to}&key=${SS_TOKEN}")
            .replace("url = \"http://127.0.0.1:1/rs\"", "url = \"http://127.0.0.1:1/rs?key=${RS_TOKEN}\"");
        let config = parse(&text).unwrap();
        assert!(config.source.url.contains("ss-secret-123") && config.sink.url.contains("rs-secret-456"));
        let identity = &config.identity;
        assert_eq!(identity.source_url, "http://127.0.0.1:1/ss?from={from}&to={to}&key=${SS_TOKEN}");
        assert_eq!(identity.sink_url, "http://127.0.0.1:1/rs?key=${RS_TOKEN}");
        assert_eq!((identity.source_time_format.as_str(), identity.source_records.as_str()), ("rfc3339", ""));
        assert_eq!(identity.source_uid, "/id");
        assert_eq!(identity.frames_start, parse_time("2026-11-01T00:00:00Z").unwrap(), "aligned down");
        assert_eq!(identity.frames_size, 60);
    }

    #[test]
    fn backfill_windows_may_wrap_midnight() {
        assert_eq!(window("22:00-06:00").unwrap(), (1320, 360));
        assert_eq!(window("01:30-02:00").unwrap(), (90, 120));
        assert!(window("25:00-01:00").is_err());
        assert!(window("01:00-01:00").is_err());
    }
}
