//! The receiving server (RS) client: POSTs one record (mode `record`) or a JSON array of
//! records (mode `batch`) with an Idempotency-Key, classifies every answer, and looks records
//! up where the RS offers a lookup URL.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::config::{SinkConfig, SinkMode};
use crate::http;
use crate::redact::Redactor;
use crate::servers::Pacer;

/// What an RS answer means for the records it carried. The run loop branches on this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx, or a status listed in `sink.already_there`: the RS has the records.
    Acknowledged,
    /// 429, 503, 5xx, 408, timeouts, connection errors: try again later. The RS may or may not
    /// have processed the request, so the records' fate is unknown.
    RetryLater { reason: String, retry_after: Option<Duration> },
    /// Any other 4xx: the RS will never take these records as they are.
    Rejected { status: u16, response: String },
}

/// Classifies an HTTP status (the body only feeds messages).
pub fn classify(status: u16, already_there: &[u16], response: &str, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Acknowledged,
        s if already_there.contains(&s) => Verdict::Acknowledged,
        408 | 425 | 429 | 500..=599 => Verdict::RetryLater {
            reason: format!("HTTP {status}{}: {}", http::retry_note(retry_after), http::excerpt(response)),
            retry_after,
        },
        400..=499 => Verdict::Rejected { status, response: http::excerpt(response) },
        _ => Verdict::RetryLater {
            reason: format!("unexpected HTTP {status}: {}", http::excerpt(response)),
            retry_after,
        },
    }
}

/// A record ready to send: its UID and the JSON the RS receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub uid: String,
    pub body: String,
}

/// The RS, behind a trait so the run loop is tested without a server.
pub trait Sink {
    fn mode(&self) -> SinkMode;
    fn batch_size(&self) -> usize;
    /// Sends one record (record mode) or one batch (batch mode).
    fn send(&self, records: &[Outgoing]) -> Verdict;
    /// Whether the RS offers a lookup URL.
    fn has_lookup(&self) -> bool;
    /// Asks the RS whether it holds `uid`: Ok(true) present, Ok(false) absent.
    fn lookup(&self, uid: &str) -> Result<bool, String>;
}

pub struct HttpSink {
    agent: ureq::Agent,
    config: SinkConfig,
    secrets: Redactor,
    pacer: Pacer,
}

/// Bytes a header value cannot carry as they are (controls, non-ASCII, and `%` itself so the
/// encoding is reversible). Everything else in a UID goes as it is.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');
/// A UID in a URL path segment: everything but unreserved characters is encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The Idempotency-Key of a request: the UID for one record, a hash of the UIDs for a batch.
/// A request sent again carries the same key, so an RS that honors keys stores it once.
pub fn idempotency_key(records: &[Outgoing], mode: SinkMode) -> String {
    match (mode, records) {
        (SinkMode::Record, [one]) | (SinkMode::Batch, [one]) => {
            utf8_percent_encode(&one.uid, HEADER_UNSAFE).to_string()
        }
        _ => {
            let mut hash = Sha256::new();
            for r in records {
                hash.update(r.uid.as_bytes());
                hash.update([0]);
            }
            let hex: String = hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("batch-{hex}")
        }
    }
}

impl HttpSink {
    pub fn new(config: &SinkConfig, secrets: &Redactor) -> Self {
        Self::with_agent(config, secrets, http::agent(config.timeout))
    }

    /// With an agent of the caller's (the simulation's in-process transport).
    pub fn with_agent(config: &SinkConfig, secrets: &Redactor, agent: ureq::Agent) -> Self {
        Self { agent, config: config.clone(), secrets: secrets.clone(), pacer: Pacer::new(config.max_rps) }
    }

    fn body(&self, records: &[Outgoing]) -> String {
        match (self.config.mode, records) {
            (SinkMode::Record, [one]) => one.body.clone(),
            _ => {
                let items: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

impl Sink for HttpSink {
    fn mode(&self) -> SinkMode {
        self.config.mode
    }

    fn batch_size(&self) -> usize {
        match self.config.mode {
            SinkMode::Record => 1,
            SinkMode::Batch => self.config.batch_size,
        }
    }

    fn send(&self, records: &[Outgoing]) -> Verdict {
        self.pacer.wait();
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header(self.config.idempotency_header.as_str(), idempotency_key(records, self.config.mode));
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let mut response = match request.send(self.body(records)) {
            Ok(response) => response,
            Err(e) => {
                return Verdict::RetryLater {
                    reason: self.secrets.scrub(&format!("POST {}: {e}", self.config.url)),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = http::retry_after(&response);
        let text = response.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        match classify(status, &self.config.already_there, &text, retry_after) {
            Verdict::RetryLater { reason, retry_after } => Verdict::RetryLater {
                reason: self.secrets.scrub(&format!("POST {}: {reason}", self.config.url)),
                retry_after,
            },
            Verdict::Rejected { status, response } => {
                Verdict::Rejected { status, response: self.secrets.scrub(&response) }
            }
            acknowledged => acknowledged,
        }
    }

    fn has_lookup(&self) -> bool {
        self.config.lookup_url.is_some()
    }

    fn lookup(&self, uid: &str) -> Result<bool, String> {
        let Some(template) = &self.config.lookup_url else { return Ok(false) };
        let url = template.replace("{uid}", &utf8_percent_encode(uid, PATH_SEGMENT).to_string());
        let shown = self.secrets.scrub(&url);
        self.pacer.wait();
        let mut request = self.agent.get(&url);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let response = request.call().map_err(|e| self.secrets.scrub(&format!("lookup GET {shown}: {e}")))?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 | 410 => Ok(false),
            status => Err(format!("lookup GET {shown}: HTTP {status} (expected 200 or 404)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(uid: &str) -> Outgoing {
        Outgoing { uid: uid.into(), body: "{}".into() }
    }

    #[test]
    fn every_answer_class_is_classified() {
        let retry = |s| matches!(classify(s, &[409], "", None), Verdict::RetryLater { .. });
        let rejected = |s| matches!(classify(s, &[409], "", None), Verdict::Rejected { .. });
        for s in [200, 201, 202, 204, 409] {
            assert_eq!(classify(s, &[409], "", None), Verdict::Acknowledged, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 301, 100] {
            assert!(retry(s), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 413, 422] {
            assert!(rejected(s), "{s}");
        }
        assert!(!rejected(409) && rejected(422));
        assert_eq!(classify(422, &[409, 422], "", None), Verdict::Acknowledged, "already_there is configurable");
    }

    #[test]
    fn retry_after_is_carried_into_the_verdict() {
        let v = classify(429, &[], "slow down", Some(Duration::from_secs(30)));
        assert_eq!(
            v,
            Verdict::RetryLater {
                reason: "HTTP 429, Retry-After 30s: slow down".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
    }

    #[test]
    fn keys_are_the_uid_escaped_only_where_a_header_needs_it() {
        assert_eq!(idempotency_key(&[out("ev-1/a:b")], SinkMode::Record), "ev-1/a:b");
        assert_eq!(idempotency_key(&[out("a\r\nX-Evil: 1")], SinkMode::Record), "a%0D%0AX-Evil:%201");
        assert_eq!(idempotency_key(&[out("ünï")], SinkMode::Record), "%C3%BCn%C3%AF");
        assert_eq!(idempotency_key(&[out("100%")], SinkMode::Record), "100%25");
        for uid in ["a\r\nb", "\u{7f}", "ünï-✓", "tab\there"] {
            let key = idempotency_key(&[out(uid)], SinkMode::Record);
            assert!(ureq::http::HeaderValue::from_str(&key).is_ok(), "{uid:?} → {key:?}");
        }
    }

    #[test]
    fn a_batch_key_depends_on_exactly_its_uids() {
        let ab = idempotency_key(&[out("a"), out("b")], SinkMode::Batch);
        assert!(ab.starts_with("batch-"));
        assert_eq!(ab, idempotency_key(&[out("a"), out("b")], SinkMode::Batch));
        assert_ne!(ab, idempotency_key(&[out("b"), out("a")], SinkMode::Batch));
        assert_ne!(ab, idempotency_key(&[out("ab")], SinkMode::Batch));
    }
}
