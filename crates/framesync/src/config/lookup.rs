//! The RS's lookup: `sink.lookup_url` (a GET whose status says present or absent), or the
//! `[sink.lookup]` table — a URL with query parameters or a POST body, "present" read from a
//! JSON pointer in the answer, and batched lookups that ask for many UIDs in one request.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::Env;
use super::check::{self, count, required};
use crate::redact::Redactor;
use crate::template::{Query, Template, Var};

/// The most UIDs one batched lookup asks for.
const MOST_PER_LOOKUP: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LookupMethod {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// How an answer says which UIDs the RS holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// 2xx present, 404 or 410 absent, anything else an error.
    Status,
    /// A 2xx JSON answer; the value at this pointer says present (a count above 0, true, a
    /// non-empty list...) or absent (0, false, null, an empty list...).
    Pointer(String),
    /// A 2xx JSON answer to a batched lookup: the array at `list` names the UIDs present, each
    /// a string or an object with its UID at `uid` ("" for the item itself).
    Found { list: String, uid: String },
}

#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// The key it was configured under, for messages.
    pub key: &'static str,
    /// May hold `{uid}` in its path (a lookup of one UID), percent-encoded there.
    pub url: String,
    /// Parameters added to `url`, each value percent-encoded whole.
    pub query: Query,
    /// The batched lookup's parameters, added after `query`.
    pub batch_query: Query,
    pub method: LookupMethod,
    /// The body of a POST.
    pub body: Option<Template>,
    pub content_type: String,
    pub presence: Presence,
    /// UIDs asked for in one request: above 1 only with `Presence::Found`.
    pub batch_size: usize,
}

impl LookupConfig {
    pub fn is_batched(&self) -> bool {
        matches!(self.presence, Presence::Found { .. })
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLookup {
    url: Option<String>,
    query: BTreeMap<String, String>,
    method: LookupMethod,
    body: Option<String>,
    content_type: String,
    present: Option<String>,
    batch_size: usize,
    batch_query: BTreeMap<String, String>,
    found: Option<String>,
    found_uid: Option<String>,
}

impl Default for RawLookup {
    fn default() -> Self {
        Self {
            url: None,
            query: BTreeMap::new(),
            method: LookupMethod::Get,
            body: None,
            content_type: "application/json".into(),
            present: None,
            batch_size: 1,
            batch_query: BTreeMap::new(),
            found: None,
            found_uid: None,
        }
    }
}

/// The lookup as configured: `sink.lookup_url`, `[sink.lookup]`, or none (both is an error).
pub(super) fn lookup(
    url: Option<String>,
    table: Option<RawLookup>,
    env: Env,
    secrets: &mut Redactor,
) -> Result<Option<LookupConfig>> {
    match (url, table) {
        (Some(_), Some(_)) => bail!(
            "sink.lookup_url and [sink.lookup] are two ways to give one lookup; keep one (sink.lookup.url takes the same URL)"
        ),
        (Some(url), None) => Ok(Some(LookupConfig {
            key: "sink.lookup_url",
            url: lookup_url(&url, env, secrets)?,
            query: Query::default(),
            batch_query: Query::default(),
            method: LookupMethod::Get,
            body: None,
            content_type: String::new(),
            presence: Presence::Status,
            batch_size: 1,
        })),
        (None, Some(table)) => table.check(env, secrets).map(Some),
        (None, None) => Ok(None),
    }
}

fn lookup_url(text: &str, env: Env, secrets: &mut Redactor) -> Result<String> {
    let url = check::url("sink.lookup_url", text, &["uid"], env, secrets)?;
    if !url.contains("{uid}") {
        bail!("sink.lookup_url: the URL must contain {{uid}}, e.g. https://rs.example.com/v1/ingest/{{uid}}");
    }
    Ok(url)
}

impl RawLookup {
    fn check(self, env: Env, secrets: &mut Redactor) -> Result<LookupConfig> {
        let batched = self.found.is_some();
        self.check_form(batched)?;
        let text = required("sink.lookup.url", self.url, "url = \"https://rs.example.com/v1/ingest/{uid}\"")?;
        let url = check::url("sink.lookup.url", &text, if batched { &[] } else { &["uid"] }, env, secrets)?;
        let one: &[Var] = if batched { &[] } else { &[Var::Uid] };
        let query = check::query("sink.lookup.query", self.query, one, env, secrets)?;
        let batch_query = check::query("sink.lookup.batch_query", self.batch_query, &[Var::Uids], env, secrets)?;
        let var = if batched { Var::Uids } else { Var::Uid };
        let body = match (self.method, self.body) {
            (LookupMethod::Get, Some(_)) => {
                bail!("sink.lookup.body: a GET has no body; set method = \"POST\" to send one")
            }
            (LookupMethod::Post, None) => bail!(
                "sink.lookup.body: missing; method = \"POST\" sends the lookup in the body, e.g. body = '{{\"ids\": {{uids:json}}}}'"
            ),
            (LookupMethod::Post, Some(text)) => Some(check::template("sink.lookup.body", &text, &[var], env, secrets)?),
            (LookupMethod::Get, None) => None,
        };
        let asks = url.contains("{uid}")
            || query.uses(var)
            || batch_query.uses(var)
            || body.as_ref().is_some_and(|b| b.uses(var));
        if !asks {
            bail!("{}", unasked(batched));
        }
        if ureq::http::HeaderValue::from_str(&self.content_type).is_err() {
            bail!("sink.lookup.content_type: {:?} is not a valid header value", self.content_type);
        }
        let pointer =
            |key: &str, text: &str, empty_ok| check::pointer(text, empty_ok).map_err(|e| anyhow::anyhow!("{key}: {e}"));
        let presence = match (self.present, self.found) {
            (Some(present), _) => Presence::Pointer(pointer("sink.lookup.present", &present, true)?),
            (None, Some(found)) => Presence::Found {
                list: pointer("sink.lookup.found", &found, true)?,
                uid: pointer("sink.lookup.found_uid", self.found_uid.as_deref().unwrap_or(""), true)?,
            },
            (None, None) => Presence::Status,
        };
        Ok(LookupConfig {
            key: "sink.lookup",
            url,
            query,
            batch_query,
            method: self.method,
            body,
            content_type: self.content_type,
            presence,
            batch_size: self.batch_size,
        })
    }

    /// The keys of one form: a lookup of one UID, or a batched lookup (`found` is set).
    fn check_form(&self, batched: bool) -> Result<()> {
        count("sink.lookup.batch_size", self.batch_size, 1..=MOST_PER_LOOKUP)?;
        if batched && self.present.is_some() {
            bail!(
                "sink.lookup.present: a batched lookup (sink.lookup.found is set) reads the UIDs listed at found; present is for a lookup of one UID — keep one"
            );
        }
        if batched {
            return Ok(());
        }
        if self.batch_size > 1 {
            bail!(
                "sink.lookup.batch_size: {} needs a batched lookup: sink.lookup.found (a JSON pointer to the list of UIDs the RS holds) and {{uids:json}} or {{uids:hex}} in sink.lookup.batch_query or sink.lookup.body",
                self.batch_size
            );
        }
        if !self.batch_query.is_empty() {
            bail!("sink.lookup.batch_query: only for a batched lookup; set sink.lookup.found too");
        }
        if self.found_uid.is_some() {
            bail!("sink.lookup.found_uid: only with sink.lookup.found");
        }
        Ok(())
    }
}

fn unasked(batched: bool) -> &'static str {
    if batched {
        "sink.lookup: no {uids:json} or {uids:hex} in sink.lookup.batch_query or sink.lookup.body, so the RS would never be told which UIDs are asked for"
    } else {
        "sink.lookup: no {uid} in sink.lookup.url, sink.lookup.query or sink.lookup.body, so every lookup would ask the same question"
    }
}

#[cfg(test)]
mod tests;
