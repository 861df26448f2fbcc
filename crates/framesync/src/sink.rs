//! The receiving server (RS) client: POSTs one record (mode `record`) or a batch of records
//! (mode `batch`) with an Idempotency-Key, classifies every answer, and looks records up where
//! the RS offers a lookup ([`lookup`]). How the records are written is in [`body`]; answer
//! rules that look at the body in [`rules`]; per-item results of batch APIs in [`items`].

pub mod body;
pub mod items;
pub mod lookup;
pub mod rules;

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::auth::{Attempt, Auth, AuthError};
use crate::config::{SinkConfig, SinkMode};
use crate::delivery::Key;
use crate::http;
use crate::servers::Pacer;
use crate::template::Vars;

/// What an RS answer means for the records it carried. The run loop branches on this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx, or a status listed in `sink.already_there`: the RS has the records.
    Acknowledged,
    /// 408, 425, 429, 5xx, timeouts, connection errors: try again later. The RS may or may not
    /// have processed the request, so the records' fate is unknown.
    RetryLater { reason: String, retry_after: Option<Duration>, status: Option<u16> },
    /// A status in `sink.reject` (default 400, 422), or 413 for one record: the RS will never
    /// take this record as it is. It is dead-lettered and the frame goes on.
    Rejected { status: u16, response: String },
    /// 413 for a batch: too large as a whole; the records go again in smaller batches.
    TooLarge { response: String },
    /// Any other answer — a redirect, 401, 403, 404, 405, 407, 410, 415, … — says that the RS
    /// or the config is wrong, not a record: the frame fails and pushing stops for the run.
    Broken { reason: String },
    /// A 2xx with a result per record (`[sink.items]`), one verdict each, in the order sent:
    /// `Acknowledged`, `RetryLater`, `Rejected` or `Broken`, never `TooLarge` or `PerItem`.
    PerItem(Vec<Verdict>),
}

impl From<AuthError> for Verdict {
    /// Credentials the token endpoint refuses stop pushing, as a 401 from the RS does; an
    /// endpoint out of reach is tried again later.
    fn from(e: AuthError) -> Self {
        match e.permanent {
            true => Verdict::Broken { reason: e.message },
            false => Verdict::RetryLater { reason: e.message, retry_after: None, status: e.status },
        }
    }
}

/// What the statuses of an RS answer mean, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Statuses<'a> {
    pub already_there: &'a [u16],
    pub reject: &'a [u16],
}

/// An RS answer, as far as classifying it goes.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a str,
    pub retry_after: Option<Duration>,
    /// The `Location` of a redirect.
    pub location: Option<&'a str>,
    /// The request carried more than one record.
    pub batch: bool,
}

/// Classifies an RS answer: by its status; the body only feeds messages.
pub fn classify(answer: &Answer, statuses: Statuses) -> Verdict {
    let status = answer.status;
    let excerpt = || http::excerpt(answer.body);
    let broken = |why: &str| Verdict::Broken { reason: format!("HTTP {status}: {why}: {}", excerpt()) };
    match status {
        200..=299 => Verdict::Acknowledged,
        s if statuses.already_there.contains(&s) => Verdict::Acknowledged,
        408 | 425 | 429 | 500..=599 => Verdict::RetryLater {
            reason: format!("HTTP {status}{}: {}", http::retry_note(answer.retry_after), excerpt()),
            retry_after: answer.retry_after,
            status: Some(status),
        },
        413 if answer.batch => Verdict::TooLarge { response: excerpt() },
        413 => Verdict::Rejected { status, response: excerpt() },
        s if statuses.reject.contains(&s) => Verdict::Rejected { status, response: excerpt() },
        300..=399 => Verdict::Broken {
            reason: format!(
                "HTTP {status}, a redirect to {}: framesync never follows a redirect for a push (the records would not be stored); put the final URL in sink.url",
                answer.location.unwrap_or("nowhere")
            ),
        },
        401 | 403 | 407 => broken("the RS refused the credentials (check sink.headers and sink.auth)"),
        404 | 410 => broken("no such endpoint at the RS (a typo in sink.url, or a dropped table?)"),
        405 => broken("the RS does not take a POST at sink.url"),
        415 => broken("the RS does not take this content type"),
        _ => broken("an answer that says the RS or the config is wrong, not the record"),
    }
}

/// A record ready to send: its UID and the JSON the RS receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub uid: String,
    pub body: String,
}

/// The RS, behind a trait so the run loop is tested without a server. `Sync`: the requests in
/// flight are sent from many threads at once ([`crate::job::Dispatch`]).
pub trait Sink: Sync {
    fn batch_size(&self) -> usize;
    /// Sends one record (record mode) or one batch (batch mode) under `key`.
    fn send(&self, records: &[Outgoing], key: &Key) -> Verdict;
    /// Whether the RS offers a lookup.
    fn has_lookup(&self) -> bool;
    /// Asks the RS whether it holds `uid`: Ok(true) present, Ok(false) absent.
    fn lookup(&self, uid: &str) -> Result<bool, String>;
    /// Asks about many UIDs, one answer each in order; an RS with batched lookups takes
    /// `lookup_batch_size` of them a request.
    fn lookup_many(&self, uids: &[&str]) -> Result<Vec<bool>, String> {
        uids.iter().map(|uid| self.lookup(uid)).collect()
    }
    /// How many UIDs one lookup request asks about.
    fn lookup_batch_size(&self) -> usize {
        1
    }
}

pub struct HttpSink {
    agent: ureq::Agent,
    auth: Auth,
    config: SinkConfig,
    pacer: Pacer,
}

/// Bytes a header value cannot carry as they are (controls, non-ASCII, and `%` itself so the
/// encoding is reversible). Everything else in a UID goes as it is.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// The key of a new batch: a hash of its UIDs, in order. The batch is re-sent only whole and
/// under this key (the ledger keeps it), so an RS that honors keys stores it once.
pub fn batch_key(records: &[Outgoing]) -> String {
    let mut hash = Sha256::new();
    for r in records {
        hash.update(r.uid.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("batch-{hex}")
}

/// The key of the records a per-item answer sent back (to retry, or not taken for an RS
/// fault), after they went under `previous`. Never `previous` again, nor any key they went
/// under before: an RS that honors keys keeps the answer it gave a key and would replay it
/// — results for the whole batch — for a smaller set. Chaining each key on the one before
/// makes every retry of the same records a key of its own.
pub fn again_key(previous: &Key, records: &[Outgoing]) -> String {
    let mut hash = Sha256::new();
    hash.update(previous.to_sql().as_bytes());
    hash.update([0xff]);
    for r in records {
        hash.update(r.uid.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("batch-{hex}")
}

/// The Idempotency-Key header of a request: a batch's key, or the UID of its one record, with
/// what a header cannot carry percent-encoded.
pub fn header_key(records: &[Outgoing], key: &Key) -> String {
    match (key, records) {
        (Key::Batch(key), _) => key.clone(),
        (Key::Own, [one, ..]) => utf8_percent_encode(&one.uid, HEADER_UNSAFE).to_string(),
        (Key::Own, []) => String::new(),
    }
}

impl HttpSink {
    pub fn new(config: &SinkConfig) -> Self {
        Self::with_agent(config, http::agent(config.timeout, &config.transport))
    }

    /// With an agent of the caller's (the simulation's in-process transport).
    pub fn with_agent(config: &SinkConfig, agent: ureq::Agent) -> Self {
        let url = config.query.apply(&config.url, &Vars::default());
        let auth = Auth::new(config.auth.as_ref(), &agent);
        Self { agent, auth, config: SinkConfig { url, ..config.clone() }, pacer: Pacer::new(config.max_rps) }
    }

    /// What the answer means: the first `sink.answers` rule that matches, else per-item
    /// results of a 2xx where `sink.items` says where they are, else the status.
    fn judge(&self, answer: &Answer, records: usize) -> Verdict {
        let statuses = Statuses { already_there: &self.config.already_there, reject: &self.config.reject };
        if let Some(verdict) = rules::judge(&self.config.answers, answer) {
            return verdict;
        }
        match &self.config.items {
            Some(spec) if (200..=299).contains(&answer.status) => items::judge(spec, answer.body, records, statuses),
            _ => classify(answer, statuses),
        }
    }
}

/// Per-item results run to a few hundred bytes a record: room for batches of many thousands.
const ITEMS_ANSWER_LIMIT: u64 = 64 * 1024 * 1024;
/// Otherwise the body only feeds messages and rules.
const ANSWER_LIMIT: u64 = 64 * 1024;

impl Sink for HttpSink {
    fn batch_size(&self) -> usize {
        match self.config.mode {
            SinkMode::Record => 1,
            SinkMode::Batch => self.config.batch_size,
        }
    }

    fn send(&self, records: &[Outgoing], key: &Key) -> Verdict {
        let spec = &self.config.body;
        let body = spec.encode(records);
        let send = |attempt: &Attempt| {
            self.pacer.wait();
            let mut request = self
                .agent
                .post(&self.config.url)
                .header("Content-Type", spec.content_type.as_str())
                .header(self.config.idempotency_header.as_str(), header_key(records, key));
            if let Some(encoding) = spec.content_encoding() {
                request = request.header("Content-Encoding", encoding);
            }
            request = http::with_headers(request, &self.config.headers);
            attempt.apply(request).map_err(Verdict::from)?.send(&body).map_err(|e| Verdict::RetryLater {
                reason: format!("POST {}: {}", self.config.url, http::why(&e)),
                retry_after: None,
                status: None,
            })
        };
        let mut response = match self.auth.send_renewing(send) {
            Ok(response) => response,
            Err(verdict) => return verdict,
        };
        let status = response.status().as_u16();
        let retry_after = http::retry_after(&response);
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let per_item = self.config.items.is_some() && (200..=299).contains(&status);
        let limit = if per_item { ITEMS_ANSWER_LIMIT } else { ANSWER_LIMIT };
        let text = match response.body_mut().with_config().limit(limit).read_to_string() {
            Ok(text) => text,
            // The records' fate is in the body: without it, nothing is known of them.
            Err(e) if per_item => return unread_results(&self.config.url, status, limit, &e),
            Err(_) => String::new(),
        };
        let answer =
            Answer { status, body: &text, retry_after, location: location.as_deref(), batch: records.len() > 1 };
        match self.judge(&answer, records.len()) {
            Verdict::RetryLater { reason, retry_after, status } => {
                Verdict::RetryLater { reason: format!("POST {}: {reason}", self.config.url), retry_after, status }
            }
            Verdict::Broken { reason } => Verdict::Broken { reason: format!("POST {}: {reason}", self.config.url) },
            other => other,
        }
    }

    fn has_lookup(&self) -> bool {
        self.config.lookup.is_some()
    }

    fn lookup(&self, uid: &str) -> Result<bool, String> {
        Ok(self.ask_rs(&[uid])?[0])
    }

    fn lookup_many(&self, uids: &[&str]) -> Result<Vec<bool>, String> {
        self.ask_rs(uids)
    }

    fn lookup_batch_size(&self) -> usize {
        self.lookup_batch()
    }
}

/// A 2xx whose per-item results could not be read. Too large is the config's doing (batches
/// too big for the limit); anything else leaves the records' fate unknown, like a lost answer.
fn unread_results(url: &str, status: u16, limit: u64, error: &ureq::Error) -> Verdict {
    if matches!(error, ureq::Error::BodyExceedsLimit(_)) {
        return Verdict::Broken {
            reason: format!(
                "POST {url}: HTTP {status} with per-item results over {limit} bytes; lower sink.batch_size"
            ),
        };
    }
    Verdict::RetryLater {
        reason: format!("POST {url}: HTTP {status}, the per-item results were cut off: {error}"),
        retry_after: None,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(uid: &str) -> Outgoing {
        Outgoing { uid: uid.into(), body: "{}".into() }
    }

    const STATUSES: Statuses = Statuses { already_there: &[409], reject: &[400, 422] };

    fn verdict(status: u16, batch: bool) -> Verdict {
        classify(&Answer { status, body: "", retry_after: None, location: Some("/login"), batch }, STATUSES)
    }

    #[test]
    fn every_answer_class_is_classified() {
        for s in [200, 201, 202, 204, 409] {
            assert_eq!(verdict(s, false), Verdict::Acknowledged, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(matches!(verdict(s, false), Verdict::RetryLater { .. }), "{s}");
        }
        for s in [400, 422, 413] {
            assert!(matches!(verdict(s, false), Verdict::Rejected { .. }), "{s}");
        }
        assert!(matches!(verdict(413, true), Verdict::TooLarge { .. }), "a batch too large is split, not refused");
        let statuses = Statuses { already_there: &[409, 422], reject: &[400] };
        let answer = Answer { status: 422, body: "", retry_after: None, location: None, batch: false };
        assert_eq!(classify(&answer, statuses), Verdict::Acknowledged, "already_there is configurable");
    }

    /// Pins the silent loss of a sink URL that answers 404 (a typo, a dropped table), 401 or
    /// 403 (an expired token), or a redirect: they dead-lettered every record (or, followed,
    /// counted a login page as delivered). They mean the RS or the config is wrong.
    #[test]
    fn answers_that_blame_the_rs_or_the_config_are_not_a_bad_record() {
        for s in [100, 301, 302, 303, 307, 308, 401, 403, 404, 405, 407, 410, 415, 418, 451] {
            assert!(matches!(verdict(s, false), Verdict::Broken { .. }), "{s}");
            assert!(matches!(verdict(s, true), Verdict::Broken { .. }), "{s} for a batch");
        }
        let Verdict::Broken { reason } = verdict(302, false) else { unreachable!() };
        assert!(reason.contains("/login") && reason.contains("never follows a redirect"), "{reason}");
    }

    #[test]
    fn retry_after_is_carried_into_the_verdict() {
        let answer = Answer {
            status: 429,
            body: "slow down",
            retry_after: Some(Duration::from_secs(30)),
            location: None,
            batch: false,
        };
        assert_eq!(
            classify(&answer, STATUSES),
            Verdict::RetryLater {
                reason: "HTTP 429, Retry-After 30s: slow down".into(),
                retry_after: Some(Duration::from_secs(30)),
                status: Some(429),
            }
        );
    }

    #[test]
    fn keys_are_the_uid_escaped_only_where_a_header_needs_it() {
        let key = |uid: &str| header_key(&[out(uid)], &Key::Own);
        assert_eq!(key("ev-1/a:b"), "ev-1/a:b");
        assert_eq!(key("a\r\nX-Evil: 1"), "a%0D%0AX-Evil:%201");
        assert_eq!(key("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(key("100%"), "100%25");
        for uid in ["a\r\nb", "\u{7f}", "ünï-✓", "tab\there"] {
            assert!(ureq::http::HeaderValue::from_str(&key(uid)).is_ok(), "{uid:?} → {:?}", key(uid));
        }
        assert_eq!(header_key(&[out("a"), out("b")], &Key::Batch("batch-1".into())), "batch-1");
    }

    #[test]
    fn a_key_to_send_again_differs_from_every_key_before_it() {
        let (a, b) = (out("a"), out("b"));
        let first = Key::Batch(batch_key(&[a.clone(), b.clone()]));
        let again = again_key(&first, std::slice::from_ref(&b));
        assert_ne!(again, batch_key(std::slice::from_ref(&b)), "not the key of a new batch of b alone");
        let twice = again_key(&Key::Batch(again.clone()), std::slice::from_ref(&b));
        assert!(again != twice && again.starts_with("batch-"), "each retry a key of its own");
        assert_eq!(again, again_key(&first, &[b]), "deterministic");
    }

    #[test]
    fn a_batch_key_depends_on_exactly_its_uids() {
        let ab = batch_key(&[out("a"), out("b")]);
        assert!(ab.starts_with("batch-"));
        assert_eq!(ab, batch_key(&[out("a"), out("b")]));
        assert_ne!(ab, batch_key(&[out("b"), out("a")]));
        assert_ne!(ab, batch_key(&[out("ab")]));
    }
}
