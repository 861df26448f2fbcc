//! `[source]`: the SS, how each frame's records are asked for, and how each record is read.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer};

use super::AuthConfig;
use super::auth::{self, RawAuth};
use super::check::{self, required};
use super::tls::{RawTls, Transport};
use super::toml_error::read_str;
use super::{Env, duration};
use crate::record::{TimeFormat, UidRule};
use crate::redact::Redactor;
use crate::template::{Query, Var};

mod shape;

pub use shape::{BodyFormat, PageBy, Paging, Stop};

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
    /// Query parameters added to every first page's URL: `{from}`, `{to}`, `{last}` rendered,
    /// then percent-encoded by framesync.
    pub query: Query,
    /// At most this many requests per second to the SS.
    pub max_rps: Option<f64>,
    /// A page slower than this means the SS is under load: pulling stops for the run.
    pub slow_after: Option<Duration>,
    /// TLS (`[source.tls]`) and the proxy.
    pub transport: Transport,
    /// How framesync authenticates to the SS (`[source.auth]`); none: only `headers`.
    pub auth: Option<AuthConfig>,
    /// How a frame's pages are walked: `[source.pages]`.
    pub pages: Paging,
    /// Most frames fetched from the SS at once (`source.concurrency`).
    pub concurrency: usize,
    /// How each body is read.
    pub format: BodyFormat,
    /// Other hosts a next page may be on (fetched without `headers`), lowercased.
    pub follow_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSource {
    /// As written: `${VAR}` is expanded by `check`.
    pub(super) url: Option<String>,
    pub(super) time_format: TimeFormat,
    #[serde(deserialize_with = "whole_or_pointer")]
    pub(super) records: String,
    #[serde(deserialize_with = "uid")]
    pub(super) uid: Option<UidRule>,
    #[serde(deserialize_with = "pointer")]
    timestamp: Option<String>,
    timestamp_format: Option<TimeFormat>,
    #[serde(deserialize_with = "pointer")]
    next: Option<String>,
    cursor_param: String,
    #[serde(deserialize_with = "duration::deserialize")]
    timeout: Duration,
    max_bytes: u64,
    max_records: usize,
    max_pages: usize,
    headers: BTreeMap<String, String>,
    pub(super) query: BTreeMap<String, String>,
    max_rps: Option<f64>,
    #[serde(deserialize_with = "duration::optional")]
    slow_after: Option<Duration>,
    /// Checked by `Config::parse`, which knows the config's folder.
    pub(super) tls: RawTls,
    auth: Option<RawAuth>,
    pages: shape::RawPages,
    format: BodyFormat,
    follow_hosts: Vec<String>,
    concurrency: usize,
}

impl Default for RawSource {
    fn default() -> Self {
        Self {
            url: None,
            time_format: TimeFormat::Rfc3339,
            records: String::new(),
            uid: None,
            timestamp: None,
            timestamp_format: None,
            next: None,
            cursor_param: "cursor".into(),
            timeout: Duration::from_secs(30),
            max_bytes: 64 * 1024 * 1024,
            max_records: 1_000_000,
            max_pages: 10_000,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            max_rps: None,
            slow_after: None,
            tls: RawTls::default(),
            auth: None,
            pages: shape::RawPages::default(),
            format: BodyFormat::Json,
            follow_hosts: Vec::new(),
            concurrency: 1,
        }
    }
}

/// Most frames `source.concurrency` lets be fetched from the SS at once.
pub const MOST_FRAMES_AT_ONCE: usize = 64;

/// The URL a config must give, as `framesync init` writes it.
pub(super) const URL_EXAMPLE: &str = "url = \"https://ss.example.com/v1/events?from={from}&to={to}\"";
pub(super) const UID_EXAMPLE: &str = "uid = \"/id\"";

impl RawSource {
    pub(super) fn check(self, env: Env, secrets: &mut Redactor) -> Result<SourceConfig> {
        let url = required("source.url", self.url, URL_EXAMPLE)?;
        let url = check::url("source.url", &url, &["from", "to", "last"], env, secrets)?;
        let query = check::query("source.query", self.query, &[Var::From, Var::To, Var::Last], env, secrets)?;
        let bounded = |var: &str| url.contains(var) || query.uses(if var == "{from}" { Var::From } else { Var::Last });
        if !bounded("{from}") && !bounded("{last}") {
            bail!(
                "source.url: the URL (or source.query) must contain {{from}} and {{to}} (or {{last}}) so each frame is asked for its own time range"
            );
        }
        let uid = required("source.uid", self.uid, UID_EXAMPLE)?;
        if self.max_records == 0 || self.max_pages == 0 || self.max_bytes == 0 {
            bail!("source.max_records, source.max_pages and source.max_bytes must be at least 1");
        }
        let headers = check::headers("source.headers", self.headers, env, secrets)?;
        let auth = auth::check("source.auth", self.auth, &headers, env, secrets)?;
        if self.format == BodyFormat::Ndjson && !self.records.is_empty() {
            bail!("source.records: must be \"\" with format = \"ndjson\" (each line of the body is a record)");
        }
        let pages = self.pages.check(self.next.as_deref(), self.format)?;
        Ok(SourceConfig {
            url,
            time_format: self.time_format,
            records: self.records,
            uid,
            timestamp: self.timestamp,
            timestamp_format: self.timestamp_format,
            next: self.next,
            cursor_param: self.cursor_param,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
            max_records: self.max_records,
            max_pages: self.max_pages,
            headers,
            query,
            max_rps: check::rate("source.max_rps", self.max_rps)?,
            slow_after: self.slow_after,
            // The table is checked by `Config::parse`, which knows the config's folder.
            transport: Transport::plain("source.tls"),
            auth,
            pages,
            format: self.format,
            follow_hosts: shape::follow_hosts(self.follow_hosts)?,
            concurrency: check::count("source.concurrency", self.concurrency, 1..=MOST_FRAMES_AT_ONCE)?,
        })
    }
}

/// `"hash"`, or a JSON pointer to each record's unique ID.
fn uid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<UidRule>, D::Error> {
    read_str(deserializer, |text| match text {
        "hash" => Ok(Some(UidRule::Hash)),
        text => check::pointer(text, false).map(|p| Some(UidRule::Field(p))),
    })
}

fn pointer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    read_str(deserializer, |text| check::pointer(text, false).map(Some))
}

/// A JSON pointer, or "" for the whole body.
fn whole_or_pointer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    read_str(deserializer, |text| check::pointer(text, true))
}
