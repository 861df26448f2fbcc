//! The model RS: stores records by UID, counting every copy, in the seed's semantics — it
//! honors the Idempotency-Key (a known key replays its stored answer; strictly, a known key
//! with another body answers 422) or ignores it; takes one record per POST or a batch stored
//! all-or-nothing (413 above its capacity); refuses bad records for good (400/422) and crashes
//! on others (500); offers a lookup that tells the truth, lies during maintenance, or always
//! lies. Periods (down, redirecting to a login page, an expired token, a dropped table,
//! maintenance, rate limiting) and transient faults come and go; lost answers and in-flight
//! deaths happen after the records are stored. Batches come as JSON arrays or NDJSON (after
//! action lines naming each UID, in some seeds); per-item answers, a ClickHouse-like refusal
//! and lookups by pointer or batched are in `rs_shapes.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::net::{Net, Reply, Request, answer, decode, html, json, retry_after};
use super::records::Poison;
use super::scenario::{Keys, Lookup, MAX_RETRY_AFTER, Period, TIMEOUT_SECS};
use super::shapes::{LookupBy, RsBody};

#[derive(Debug, Default)]
pub struct Rs {
    /// Copies stored per UID.
    pub stored: BTreeMap<String, u32>,
    /// Known keys: the body they came with and the answer they got (status and body).
    keys: BTreeMap<String, (String, u16, String)>,
    /// The key each UID was first stored under.
    first_key: BTreeMap<String, String>,
    /// Every copy beyond the first, in order: the UID, the key of its first copy, this copy's key.
    pub doubles: Vec<(String, String, String)>,
    /// Records whose request was stored but whose answer never reached framesync.
    pub lost_records: u64,
    /// Requests framesync should never send (a body the RS cannot read, no credential).
    pub violations: Vec<String>,
    /// UIDs a lookup answered with a lie (200 and an HTML page), and UIDs of requests
    /// answered with a redirect: what a violation of invariant 1 is traced back to.
    pub lied_about: BTreeSet<String>,
    pub redirected: BTreeSet<String>,
}

impl Rs {
    pub fn has(&self, uid: &str) -> bool {
        self.stored.contains_key(uid)
    }
}

/// Answers one request to the RS.
pub fn handle(net: &mut Net, request: &Request) -> Reply {
    net.time.advance(net.dice.range(2, 40));
    if request.path() == "/login" {
        return html(200);
    }
    if let Some(reply) = period_answer(net, request) {
        remember_misleading(net, request, &reply);
        return reply;
    }
    if request.header("authorization") != Some("Bearer rs-token") {
        net.rs.violations.push(format!("{} {} without the RS credential", request.method, request.target));
        return json(401, r#"{"error":"unauthorized"}"#);
    }
    if request.path() == "/v1/lookup" {
        return super::rs_shapes::lookup(net, request);
    }
    match (request.method.as_str(), request.path().strip_prefix("/v1/ingest")) {
        ("POST", Some("")) => ingest(net, request),
        ("GET", Some(uid)) if uid.starts_with('/') => lookup(net, &decode(&uid[1..])),
        _ => {
            net.rs.violations.push(format!("{} {}: a request the RS does not serve", request.method, request.target));
            json(404, "no such endpoint")
        }
    }
}

/// The answer of a period in force, for POSTs and lookups alike (maintenance differs).
fn period_answer(net: &mut Net, request: &Request) -> Option<Reply> {
    let lookup = request.method == "GET" || request.path() == "/v1/lookup";
    let period = [
        Period::Down,
        Period::Redirect,
        Period::ExpiredToken,
        Period::DroppedTable,
        Period::Maintenance,
        Period::RateLimited,
    ]
    .into_iter()
    .find(|p| net.periods.contains(p))?;
    net.count(period.name());
    Some(match period {
        Period::Down => html(503),
        Period::Redirect => Reply::Bytes(answer(302, &[("location", "/login".into())], "")),
        Period::ExpiredToken => json(401, r#"{"error":"token expired"}"#),
        Period::DroppedTable => json(404, r#"{"error":"no such table"}"#),
        Period::Maintenance if lookup && net.scenario.lookup == Lookup::LiesInMaintenance => {
            if net.scenario.shapes.lookup_by == LookupBy::Status {
                html(200)
            } else {
                super::rs_shapes::present_for_all(net, request)
            }
        }
        Period::Maintenance => html(503),
        _ => retry_after(429, net.dice.range(1, MAX_RETRY_AFTER)),
    })
}

/// Notes the UIDs of a request answered with a redirect or a lie.
fn remember_misleading(net: &mut Net, request: &Request, reply: &Reply) {
    let Reply::Bytes(bytes) = reply else { return };
    let redirect = bytes.starts_with(b"HTTP/1.1 302");
    let lie = bytes.starts_with(b"HTTP/1.1 200");
    let uids = match request.path().strip_prefix("/v1/ingest/") {
        Some(uid) => vec![decode(uid)],
        None if request.path() == "/v1/lookup" => super::rs_shapes::asked(request),
        None => uids(net, &request.body).unwrap_or_default(),
    };
    if redirect {
        net.rs.redirected.extend(uids);
    } else if lie {
        net.rs.lied_about.extend(uids);
    }
}

/// A POST of one record or a batch.
fn ingest(net: &mut Net, request: &Request) -> Reply {
    if let Some(reply) = transient_fault(net) {
        return reply;
    }
    let Some(uids) = uids(net, &request.body) else {
        net.rs.violations.push(format!("POST a body the RS cannot read: {}", request.body));
        return json(400, r#"{"error":"unreadable"}"#);
    };
    let key = request.header("idempotency-key").unwrap_or_default().to_owned();
    if net.scenario.keys != Keys::Ignores
        && let Some((body, status, answer)) = net.rs.keys.get(&key).cloned()
    {
        if net.scenario.keys == Keys::Strict && body != request.body {
            net.count("rs-key-conflict-422");
            return json(422, r#"{"error":"this key came with another body"}"#);
        }
        net.count("rs-key-replayed");
        return json(status, &answer);
    }
    if net.scenario.shapes.items {
        return super::rs_shapes::per_item(net, request, &uids, &key);
    }
    if let Some(reply) = refusal(net, &uids) {
        return reply;
    }
    store(net, &uids, &key);
    remember_key(net, request, key, 201, r#"{"replayed":true}"#);
    after_storing(net, uids.len(), None)
}

/// Keeps the answer to a key, where the RS honors keys: it replays it for the same key.
pub fn remember_key(net: &mut Net, request: &Request, key: String, status: u16, answer: &str) {
    if net.scenario.keys != Keys::Ignores {
        net.rs.keys.insert(key, (request.body.clone(), status, answer.to_owned()));
    }
}

/// The UIDs of a record or a batch, as framesync reads them (a JSON integer as its digits):
/// an object, an array, or one record a line (after its action line, where the RS takes them).
fn uids(net: &Net, body: &str) -> Option<Vec<String>> {
    let field = net.scenario.rs_uid_field();
    let uid = |v: &Value| match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let shapes = &net.scenario.shapes;
    if net.scenario.batch.is_some() && shapes.rs_body != RsBody::Array {
        let lines: Vec<Value> = body.lines().map(serde_json::from_str).collect::<Result<_, _>>().ok()?;
        if !body.ends_with('\n') || lines.is_empty() {
            return None;
        }
        let action = shapes.rs_body == RsBody::NdjsonAction;
        if action && !lines.len().is_multiple_of(2) {
            return None;
        }
        let records = lines.iter().enumerate().filter(|(n, _)| !action || n % 2 == 1);
        return records
            .map(|(n, record)| {
                let uid = uid(record)?;
                let named = !action || lines[n - 1].pointer("/index/_id").and_then(Value::as_str) == Some(uid.as_str());
                named.then_some(uid)
            })
            .collect();
    }
    match serde_json::from_str::<Value>(body).ok()? {
        Value::Array(items) if net.scenario.batch.is_some() => items.iter().map(uid).collect(),
        record @ Value::Object(_) => Some(vec![uid(&record)?]),
        _ => None,
    }
}

/// Why the RS refuses a request as a whole: too big a batch, a bad record, a crashing one.
fn refusal(net: &mut Net, uids: &[String]) -> Option<Reply> {
    if net.scenario.capacity.is_some_and(|c| uids.len() > c) {
        net.count("rs-413");
        return Some(json(413, r#"{"error":"batch too large"}"#));
    }
    let poison = |kind| uids.iter().any(|u| net.catalog.by_uid(u).is_some_and(|r| r.poison == kind));
    if poison(Poison::Bad) && net.scenario.shapes.code27 {
        net.count("rs-bad-record-code-27");
        return Some(json(500, super::rs_shapes::CODE_27));
    }
    if poison(Poison::Bad) {
        net.count("rs-bad-record");
        return Some(json(net.scenario.poison_status, r#"{"error":"invalid record"}"#));
    }
    if poison(Poison::Crash) {
        net.count("rs-crashing-record");
        return Some(json(500, r#"{"error":"NullPointerException"}"#));
    }
    None
}

pub fn store(net: &mut Net, uids: &[String], key: &str) {
    for uid in uids {
        let copies = net.rs.stored.entry(uid.clone()).or_default();
        *copies += 1;
        let first = net.rs.first_key.entry(uid.clone()).or_insert_with(|| key.to_owned());
        if *copies > 1 {
            let double = (uid.clone(), first.clone(), key.to_owned());
            net.rs.doubles.push(double);
        }
    }
}

/// The answer to a stored request (201, or 200 with `answer`), unless it is lost or the
/// process dies first.
pub fn after_storing(net: &mut Net, records: usize, answer: Option<&str>) -> Reply {
    if net.faults_on && net.dice.chance(net.scenario.in_flight_rate) {
        net.count("rs-in-flight-death");
        net.rs.lost_records += records as u64;
        return Reply::DieInFlight;
    }
    if net.faults_on && net.dice.chance(net.scenario.lost_answer_rate) {
        net.rs.lost_records += records as u64;
        if net.dice.chance(0.5) {
            net.count("rs-lost-answer");
            return Reply::Reset;
        }
        net.count("rs-timeout-after-storing");
        net.time.advance(TIMEOUT_SECS * 1000);
        return Reply::Timeout;
    }
    match answer {
        Some(answer) => json(200, answer),
        None => json(201, &format!(r#"{{"stored":{records}}}"#)),
    }
}

/// A lookup: the truth, or a maintenance page where the lookup lies.
fn lookup(net: &mut Net, uid: &str) -> Reply {
    if net.scenario.lookup == Lookup::LiesAlways {
        net.count("rs-lookup-lie");
        net.rs.lied_about.insert(uid.to_owned());
        return html(200);
    }
    if net.faults_on && net.dice.chance(net.scenario.rs_fault_rate / 2.0) {
        net.count("rs-lookup-503");
        return json(503, "unavailable");
    }
    if net.rs.has(uid) { json(200, r#"{"found":true}"#) } else { json(404, r#"{"found":false}"#) }
}

/// A fault instead of processing the POST, during the fault phase.
pub fn transient_fault(net: &mut Net) -> Option<Reply> {
    if !net.faults_on || !net.dice.chance(net.scenario.rs_fault_rate) {
        return None;
    }
    let wait = net.dice.range(1, MAX_RETRY_AFTER);
    let (kind, reply) = match net.dice.below(8) {
        0 => ("rs-500", json(500, "internal")),
        1 => ("rs-502", json(502, "bad gateway")),
        2 => ("rs-503", json(503, "unavailable")),
        3 => ("rs-504", json(504, "gateway timeout")),
        4 => ("rs-429-retry-after", retry_after(429, wait)),
        5 => ("rs-503-retry-after", retry_after(503, wait)),
        6 => ("rs-reset", Reply::Reset),
        _ => {
            net.time.advance(TIMEOUT_SECS * 1000);
            ("rs-timeout", Reply::Timeout)
        }
    };
    net.count(kind);
    Some(reply)
}
