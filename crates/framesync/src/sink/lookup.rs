//! Asking the RS whether it holds records: one UID a request (present by status, or by the
//! value at a JSON pointer in the answer) or many (the answer lists the UIDs present).
//!
//! A lookup is evidence only when it can say "absent", so anything it does not say plainly —
//! an answer without the pointer, a status other than 2xx where a body is read, a listed UID
//! that was not asked for — is an error, never "absent".

use std::collections::HashMap;

use serde_json::Value;

use super::HttpSink;
use crate::auth::{Attempt, Auth};
use crate::config::{LookupConfig, LookupMethod, Presence};
use crate::http;
use crate::plural::plural;
use crate::servers::Pacer;
use crate::template::{self, Vars};

/// The most of an answer read: a batched lookup's list of UIDs.
const MOST_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// URLs in messages are cut here: a batched lookup's may hold thousands of UIDs.
const SHOWN_URL_CHARS: usize = 300;

/// A lookup's requests: the RS's agent, headers, credentials and pace.
pub struct Client<'a> {
    pub agent: &'a ureq::Agent,
    pub headers: &'a [(String, String)],
    pub auth: &'a Auth,
    pub pacer: Option<&'a Pacer>,
    pub config: &'a LookupConfig,
}

/// An answer, as far as a lookup reads it.
struct Reply {
    status: u16,
    body: String,
    location: String,
}

impl HttpSink {
    /// The sink's lookup: one answer per UID, in order (Ok(true) present).
    pub(super) fn ask_rs(&self, uids: &[&str]) -> Result<Vec<bool>, String> {
        let Some(config) = &self.config.lookup else { return Ok(vec![false; uids.len()]) };
        let client = Client {
            agent: &self.agent,
            headers: &self.config.headers,
            auth: &self.auth,
            pacer: Some(&self.pacer),
            config,
        };
        client.ask(uids)
    }

    pub(super) fn lookup_batch(&self) -> usize {
        self.config.lookup.as_ref().map_or(1, |l| l.batch_size)
    }
}

impl Client<'_> {
    /// One answer per UID, in order: Ok(true) present, Ok(false) absent. A batched lookup asks
    /// `batch_size` UIDs a request.
    pub fn ask(&self, uids: &[&str]) -> Result<Vec<bool>, String> {
        if !self.config.is_batched() {
            return uids.iter().map(|uid| self.ask_one(uid)).collect();
        }
        let mut present = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(self.config.batch_size.max(1)) {
            present.extend(self.ask_batch(chunk)?);
        }
        Ok(present)
    }

    fn ask_one(&self, uid: &str) -> Result<bool, String> {
        let (shown, reply) = self.request(&Vars { uid, ..Vars::default() })?;
        let key = self.config.key;
        let decided = match &self.config.presence {
            Presence::Status => by_status(reply.status, &reply.location, key),
            Presence::Pointer(pointer) => json_answer(&reply, key).and_then(|v| present_at(&v, pointer)),
            Presence::Found { list, uid: at } => {
                json_answer(&reply, key).and_then(|v| found(&v, list, at, &[uid])).map(|found| found[0])
            }
        };
        decided.map_err(|e| format!("lookup {} {shown}: {e}", self.method()))
    }

    fn ask_batch(&self, uids: &[&str]) -> Result<Vec<bool>, String> {
        let (shown, reply) = self.request(&Vars { uids, ..Vars::default() })?;
        let Presence::Found { list, uid } = &self.config.presence else {
            unreachable!("only a lookup with sink.lookup.found is batched")
        };
        json_answer(&reply, self.config.key)
            .and_then(|v| found(&v, list, uid, uids))
            .map_err(|e| format!("lookup {} {shown} ({}): {e}", self.method(), plural(uids.len(), "UID")))
    }

    fn method(&self) -> &'static str {
        match self.config.method {
            LookupMethod::Get => "GET",
            LookupMethod::Post => "POST",
        }
    }

    /// Sends the lookup; the URL as shown in messages, and the answer.
    fn request(&self, vars: &Vars) -> Result<(String, Reply), String> {
        let config = self.config;
        let path = config.url.replace("{uid}", &template::encode(vars.uid));
        let url = config.batch_query.apply(&config.query.apply(&path, vars), vars);
        let shown = shorten(&url);
        let fail = |e: &dyn std::fmt::Display| format!("lookup {} {shown}: {e}", self.method());
        let send = |attempt: &Attempt| {
            if let Some(pacer) = self.pacer {
                pacer.wait();
            }
            let sent = match (&config.method, &config.body) {
                (LookupMethod::Post, Some(body)) => {
                    let request = self.agent.post(&url).header("Content-Type", &config.content_type);
                    let request = http::with_headers(request, self.headers);
                    attempt.apply(request).map_err(|e| fail(&e))?.send(body.render(vars))
                }
                _ => {
                    let request = http::with_headers(self.agent.get(&url), self.headers);
                    attempt.apply(request).map_err(|e| fail(&e))?.call()
                }
            };
            sent.map_err(|e| fail(&http::why(&e)))
        };
        let mut response = self.auth.send_renewing(send)?;
        let status = response.status().as_u16();
        let location = http::location(&response);
        let body = response.body_mut().with_config().limit(MOST_ANSWER_BYTES).read_to_string();
        let body = match body {
            Ok(body) => body,
            // The status alone decides: its body is not read.
            Err(_) if config.presence == Presence::Status => String::new(),
            Err(e) => return Err(format!("lookup {} {shown}: HTTP {status}, reading the answer: {e}", self.method())),
        };
        Ok((shown, Reply { status, body, location }))
    }
}

fn shorten(url: &str) -> String {
    match url.char_indices().nth(SHOWN_URL_CHARS) {
        Some((cut, _)) => format!("{}…", &url[..cut]),
        None => url.to_owned(),
    }
}

/// What the status of a lookup says: 2xx present, 404 or 410 absent, anything else an error
/// (a lookup that cannot say absent is not believed).
pub fn by_status(status: u16, location: &str, key: &str) -> Result<bool, String> {
    match status {
        200..=299 => Ok(true),
        404 | 410 => Ok(false),
        300..=399 => Err(format!(
            "HTTP {status}, a redirect to {location}: framesync never follows one (put the final URL in {key})"
        )),
        401 | 403 | 407 => Err(format!("HTTP {status}: check sink.headers (the RS's credentials)")),
        _ => Err(format!("HTTP {status} (expected 200 or 404)")),
    }
}

/// The JSON of a 2xx answer. Any other status is an error, 404 included: with the answer read
/// at a pointer, the body says absent, not the status.
fn json_answer(reply: &Reply, key: &str) -> Result<Value, String> {
    let excerpt = http::excerpt(&reply.body);
    match reply.status {
        200..=299 => {}
        status @ 300..=399 => {
            return Err(format!(
                "HTTP {status}, a redirect to {}: framesync never follows one (put the final URL in {key}.url)",
                reply.location
            ));
        }
        status => {
            return Err(format!("HTTP {status}: {excerpt} (this lookup reads its answer from a 2xx JSON body)"));
        }
    }
    serde_json::from_str(&reply.body).map_err(|e| format!("the answer is not JSON ({e}): {excerpt}"))
}

/// "Present" read at `pointer`.
pub fn present_at(answer: &Value, pointer: &str) -> Result<bool, String> {
    let value = answer.pointer(pointer).ok_or_else(|| {
        format!(
            "no value at {pointer:?} (sink.lookup.present) in the answer {}: a lookup that cannot say absent is not believed",
            http::excerpt(&answer.to_string())
        )
    })?;
    presence(value).map_err(|e| format!("the value at {pointer:?} (sink.lookup.present): {e}"))
}

/// What a value says: present for a number above 0 (also written as a string, as ClickHouse
/// writes 64-bit integers), true, a non-empty array, object or string; absent for 0, "0",
/// false, null, [], {} and "". A negative count is an error.
pub fn presence(value: &Value) -> Result<bool, String> {
    let count = |n: f64, shown: &dyn std::fmt::Display| {
        if n > 0.0 {
            Ok(true)
        } else if n == 0.0 {
            Ok(false)
        } else {
            Err(format!("{shown} is not a count (below 0)"))
        }
    };
    match value {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => count(n.as_f64().unwrap_or(f64::NAN), n),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => count(n, &format!("{s:?}")),
            _ => Ok(!s.is_empty()),
        },
        Value::Array(items) => Ok(!items.is_empty()),
        Value::Object(fields) => Ok(!fields.is_empty()),
    }
}

/// The UIDs a batched answer lists at `list` (each item a UID, or an object holding it at
/// `uid`), as one answer per UID asked. A UID listed that was not asked for is an error: the
/// lookup is lying or misconfigured.
pub fn found(answer: &Value, list: &str, uid: &str, asked: &[&str]) -> Result<Vec<bool>, String> {
    let items = answer
        .pointer(list)
        .ok_or_else(|| {
            format!(
                "no value at {list:?} (sink.lookup.found) in the answer {}: a lookup that cannot say absent is not believed",
                http::excerpt(&answer.to_string())
            )
        })?
        .as_array()
        .ok_or_else(|| format!("the value at {list:?} (sink.lookup.found) is not an array"))?;
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, uid) in asked.iter().enumerate() {
        positions.entry(uid).or_default().push(i);
    }
    let mut present = vec![false; asked.len()];
    for (n, item) in items.iter().enumerate() {
        let value = item.pointer(uid).ok_or_else(|| {
            format!(
                "item {n} of {list:?} has no UID at {uid:?} (sink.lookup.found_uid): {}",
                http::excerpt(&item.to_string())
            )
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "item {n} of {list:?}: the UID is {}, not a string (check sink.lookup.found_uid)",
                    http::excerpt(&other.to_string())
                ));
            }
        };
        let Some(at) = positions.get(text.as_str()) else {
            return Err(format!(
                "the answer lists {text:?}, a UID that was not asked for: the lookup is lying or misconfigured (check sink.lookup.batch_query and found_uid)"
            ));
        };
        for &i in at {
            present[i] = true;
        }
    }
    Ok(present)
}

#[cfg(test)]
mod tests;
