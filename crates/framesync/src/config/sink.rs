//! `[sink]`: the RS, how records are sent to it, and what its answers mean.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::AuthConfig;
use super::answers::{self, BodyKind, BodySpec, Compress, ItemsSpec, RawBody, RawItems, RawRule, Rule};
use super::auth::{self, RawAuth};
use super::check::{self, count, required, statuses};
use super::lookup::{self, LookupConfig, RawLookup};
use super::tls::{RawTls, Transport};
use super::{Env, duration};
use crate::mapping::Mapping;
use crate::redact::Redactor;
use crate::template::Query;

const MOST_PER_BATCH: usize = 100_000;
/// Most requests in flight to the RS that `sink.concurrency` accepts.
const MOST_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    Record,
    Batch,
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
    /// `sink.lookup_url` or `[sink.lookup]`: how to ask the RS whether it holds a record.
    pub lookup: Option<LookupConfig>,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    /// Query parameters added to `url` (fixed text, percent-encoded by framesync): for an RS
    /// that takes its instructions in the URL, such as ClickHouse's `query=INSERT ...`.
    pub query: Query,
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
    /// TLS (`[sink.tls]`) and the proxy, for pushes and lookups alike.
    pub transport: Transport,
    /// How framesync authenticates to the RS, lookups included (`[sink.auth]`); none: only `headers`.
    pub auth: Option<AuthConfig>,
    /// How a request's records are written: `body`, `content_type`, `compress`, `ndjson_action`.
    pub body: BodySpec,
    /// `[[sink.answers]]`: rules tried in order before the statuses decide.
    pub answers: Vec<Rule>,
    /// `[sink.items]`: where a batch API's per-item results are.
    pub items: Option<ItemsSpec>,
    /// Most requests in flight to the RS at once (`sink.concurrency`).
    pub concurrency: usize,
    /// `sink.adaptive`: whether the in-flight limit may adapt between 1 and `concurrency`.
    pub adaptive: bool,
    /// `sink.ordered`: one request in flight, in order (overrides `concurrency` and `adaptive`).
    pub ordered: bool,
}

impl SinkConfig {
    /// The in-flight limit a fixed limit holds: one when `ordered`, else `concurrency`.
    pub fn in_flight(&self) -> usize {
        if self.ordered { 1 } else { self.concurrency }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSink {
    /// As written: `${VAR}` is expanded by `check`.
    pub(super) url: Option<String>,
    mode: SinkMode,
    batch_size: usize,
    idempotency_header: String,
    already_there: Vec<u16>,
    reject: Vec<u16>,
    lookup_url: Option<String>,
    lookup: Option<RawLookup>,
    #[serde(deserialize_with = "duration::deserialize")]
    timeout: Duration,
    headers: BTreeMap<String, String>,
    pub(super) query: BTreeMap<String, String>,
    map: Option<Mapping>,
    retries: u32,
    max_rps: Option<f64>,
    ack_group: usize,
    #[serde(deserialize_with = "duration::deserialize")]
    ack_group_time: Duration,
    max_attempts: u32,
    max_rejected_in_a_row: u32,
    /// Checked by `Config::parse`, which knows the config's folder.
    pub(super) tls: RawTls,
    auth: Option<RawAuth>,
    body: Option<BodyKind>,
    content_type: Option<String>,
    compress: Compress,
    ndjson_action: Option<String>,
    answers: Vec<RawRule>,
    items: Option<RawItems>,
    concurrency: usize,
    adaptive: bool,
    ordered: bool,
}

impl Default for RawSink {
    fn default() -> Self {
        Self {
            url: None,
            mode: SinkMode::Record,
            batch_size: 500,
            idempotency_header: "Idempotency-Key".into(),
            already_there: vec![409],
            reject: vec![400, 422],
            lookup_url: None,
            lookup: None,
            timeout: Duration::from_secs(30),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            map: None,
            retries: 2,
            max_rps: None,
            ack_group: 100,
            ack_group_time: Duration::from_millis(100),
            max_attempts: 10,
            max_rejected_in_a_row: 20,
            tls: RawTls::default(),
            auth: None,
            body: None,
            content_type: None,
            compress: Compress::None,
            ndjson_action: None,
            answers: Vec::new(),
            items: None,
            concurrency: 16,
            adaptive: true,
            ordered: false,
        }
    }
}

impl RawSink {
    pub(super) fn check(self, env: Env, secrets: &mut Redactor) -> Result<SinkConfig> {
        let url = required("sink.url", self.url, "url = \"https://rs.example.com/v1/ingest\"")?;
        let url = check::url("sink.url", &url, &[], env, secrets)?;
        let lookup = lookup::lookup(self.lookup_url, self.lookup, env, secrets)?;
        count("sink.batch_size", self.batch_size, 1..=MOST_PER_BATCH)?;
        count("sink.concurrency", self.concurrency, 1..=MOST_IN_FLIGHT)?;
        if self.ack_group == 0 {
            bail!("sink.ack_group: must be at least 1 (1 records every acknowledgement on its own)");
        }
        statuses("sink.already_there", &self.already_there, "[409]")?;
        statuses("sink.reject", &self.reject, "[400, 422]")?;
        if let Some(code) = self.reject.iter().find(|c| self.already_there.contains(c)) {
            bail!("sink.reject: {code} is also in sink.already_there; a status means one thing");
        }
        if self.max_attempts == 0 || self.max_rejected_in_a_row == 0 {
            bail!("sink.max_attempts and sink.max_rejected_in_a_row must be at least 1");
        }
        let idempotency_header = self.idempotency_header;
        if ureq::http::HeaderName::from_bytes(idempotency_header.as_bytes()).is_err() {
            bail!("sink.idempotency_header: {idempotency_header:?} is not a valid HTTP header name");
        }
        let headers = check::headers("sink.headers", self.headers, env, secrets)?;
        let auth = auth::check("sink.auth", self.auth, &headers, env, secrets)?;
        let raw_body = RawBody {
            body: self.body,
            content_type: self.content_type,
            compress: self.compress,
            ndjson_action: self.ndjson_action,
        };
        let body = raw_body.check(self.mode, self.batch_size, env, secrets)?;
        let items = self.items.map(|i| i.check(self.mode, self.batch_size)).transpose()?;
        Ok(SinkConfig {
            url,
            mode: self.mode,
            batch_size: self.batch_size,
            idempotency_header,
            already_there: self.already_there,
            reject: self.reject,
            lookup,
            timeout: self.timeout,
            headers,
            query: check::query("sink.query", self.query, &[], env, secrets)?,
            map: self.map,
            max_rps: check::rate("sink.max_rps", self.max_rps)?,
            retries: self.retries,
            ack_group: self.ack_group,
            ack_group_time: self.ack_group_time,
            max_attempts: self.max_attempts,
            max_rejected_in_a_row: self.max_rejected_in_a_row,
            // The table is checked by `Config::parse`, which knows the config's folder.
            transport: Transport::plain("sink.tls"),
            auth,
            body,
            answers: answers::rules(self.answers)?,
            items,
            concurrency: self.concurrency,
            adaptive: self.adaptive,
            ordered: self.ordered,
        })
    }
}
