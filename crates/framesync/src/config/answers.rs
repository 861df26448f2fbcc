//! The `[sink]` keys of request bodies and answers: `body`, `content_type`, `compress` and
//! `ndjson_action` ([`BodySpec`]), `[[sink.answers]]` ([`Rule`]) and `[sink.items]`
//! ([`ItemsSpec`]), checked into the values the RS client uses.

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use super::check::{self, pointer};
use super::{Env, SinkMode};
use crate::redact::Redactor;
use crate::template::{Template, Var, Vars};

/// The shape of a request body (`sink.body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// The record itself: one record per request.
    Object,
    /// A JSON array of the records.
    Array,
    /// One record per line, each line ending in `\n`.
    Ndjson,
}

impl BodyKind {
    pub fn default_content_type(self) -> &'static str {
        match self {
            BodyKind::Object | BodyKind::Array => "application/json",
            BodyKind::Ndjson => "application/x-ndjson",
        }
    }
}

/// How a request body is compressed (`sink.compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compress {
    None,
    Gzip,
}

/// How the records of a request are written: checked from `[sink]` into one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySpec {
    pub kind: BodyKind,
    pub content_type: String,
    pub compress: Compress,
    /// A line written before each record of an NDJSON body (it may name `{uid}`).
    pub action: Option<Template>,
}

impl BodySpec {
    /// Today's bodies: the record as it is in record mode, an array in batch mode.
    pub fn of(kind: BodyKind) -> BodySpec {
        BodySpec { kind, content_type: kind.default_content_type().into(), compress: Compress::None, action: None }
    }
}

/// What a matching rule makes of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Means {
    Acknowledged,
    AlreadyThere,
    Retry,
    Reject,
    Broken,
}

impl Means {
    /// Says that the RS has the records.
    pub fn acknowledges(self) -> bool {
        matches!(self, Means::Acknowledged | Means::AlreadyThere)
    }

    /// As the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Means::Acknowledged => "acknowledged",
            Means::AlreadyThere => "already_there",
            Means::Retry => "retry",
            Means::Reject => "reject",
            Means::Broken => "broken",
        }
    }
}

/// A status a rule matches: one code, or a class (`5` for "5xx").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => code == status,
            StatusMatch::Class(class) => status / 100 == class,
        }
    }

    /// Whether a redirect can match.
    pub fn covers_redirects(self) -> bool {
        match self {
            StatusMatch::Code(code) => (300..=399).contains(&code),
            StatusMatch::Class(class) => class == 3,
        }
    }
}

/// One checked rule: every condition it has must hold, and it has at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Matches when the status is any of these (empty: any status).
    pub status: Vec<StatusMatch>,
    pub body_contains: Option<String>,
    /// Matches when the body is JSON with a value here (equal to `equals`, when given).
    pub pointer: Option<String>,
    pub equals: Option<Value>,
    pub means: Means,
}

/// Where the per-item results are in an answer; pointers as the config gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemsSpec {
    /// The array of results, one per record in the order sent.
    pub list: String,
    /// An item's status, within the item; a `*` segment is the one key of an object.
    pub status: String,
    /// A boolean that, present and false, says every item succeeded.
    pub errors: Option<String>,
    /// An item's message, within the item, kept with a dead letter.
    pub reason: Option<String>,
}

/// The body keys of `[sink]`, as written.
pub(super) struct RawBody {
    pub body: Option<BodyKind>,
    pub content_type: Option<String>,
    pub compress: Compress,
    pub ndjson_action: Option<String>,
}

/// `[[sink.answers]]`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(default)]
    status: Vec<RawStatus>,
    body_contains: Option<String>,
    pointer: Option<String>,
    equals: Option<toml::Value>,
    means: Means,
}

/// A code (`500`) or a class (`"5xx"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawStatus {
    Code(u16),
    Class(String),
}

/// `[sink.items]`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawItems {
    list: String,
    status: String,
    errors: Option<String>,
    reason: Option<String>,
}

impl RawBody {
    pub(super) fn check(self, mode: SinkMode, batch_size: usize, env: Env, secrets: &mut Redactor) -> Result<BodySpec> {
        let kind = self.body.unwrap_or(match mode {
            SinkMode::Record => BodyKind::Object,
            SinkMode::Batch => BodyKind::Array,
        });
        if kind == BodyKind::Object && mode == SinkMode::Batch && batch_size > 1 {
            bail!(
                "sink.body: \"object\" carries one record, but sink.mode = \"batch\" sends up to {batch_size}; use \"array\" or \"ndjson\" (or batch_size = 1)"
            );
        }
        let content_type = match self.content_type {
            None => kind.default_content_type().to_owned(),
            Some(text) if ureq::http::HeaderValue::from_str(&text).is_ok() && !text.trim().is_empty() => text,
            Some(text) => bail!("sink.content_type: {text:?} is not a value a Content-Type header can carry"),
        };
        let action = self.ndjson_action.map(|text| action(&text, kind, env, secrets)).transpose()?;
        Ok(BodySpec { kind, content_type, compress: self.compress, action })
    }
}

/// `sink.ndjson_action`: a one-line JSON template written before each record.
fn action(text: &str, kind: BodyKind, env: Env, secrets: &mut Redactor) -> Result<Template> {
    const KEY: &str = "sink.ndjson_action";
    if kind != BodyKind::Ndjson {
        bail!("{KEY}: an action line goes before each record of an NDJSON body; set sink.body = \"ndjson\"");
    }
    let template = check::template(KEY, text, &[Var::Uid], env, secrets)?;
    let sample = template.render(&Vars { uid: "uid-\"1\"\n", ..Vars::default() });
    if sample.contains(['\n', '\r']) {
        bail!(
            "{KEY}: must stay one line whatever the UID holds (a line break would start another NDJSON line); write the UID as {{uid:json}}"
        );
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
        bail!(
            "{KEY}: not JSON once filled in ({e}); write the UID as {{uid:json}}, e.g. '{{\"index\":{{\"_id\":{{uid:json}}}}}}'"
        );
    }
    Ok(template)
}

/// Checks `[[sink.answers]]`.
pub(super) fn rules(raw: Vec<RawRule>) -> Result<Vec<Rule>> {
    raw.into_iter().enumerate().map(|(n, rule)| rule.check(&format!("sink.answers[{n}]"))).collect()
}

impl RawRule {
    fn check(self, key: &str) -> Result<Rule> {
        let status = self.status.into_iter().map(|s| status(key, s)).collect::<Result<Vec<_>>>()?;
        if status.is_empty() && self.body_contains.is_none() && self.pointer.is_none() {
            bail!("{key}: a rule needs something to match: status, body_contains or pointer");
        }
        if self.body_contains.as_deref() == Some("") {
            bail!("{key}.body_contains: an empty text matches every answer; leave it out or give the text");
        }
        if self.means.acknowledges()
            && let Some(redirect) = status.iter().find(|s| s.covers_redirects())
        {
            let shown = match redirect {
                StatusMatch::Code(code) => code.to_string(),
                StatusMatch::Class(_) => "3xx".into(),
            };
            bail!(
                "{key}: {shown} is a redirect, never a delivery; framesync never follows one (put the final URL in sink.url)"
            );
        }
        let pointer =
            self.pointer.map(|p| pointer(&p, false).map_err(|e| anyhow!("{key}.pointer: {e}"))).transpose()?;
        let equals = match (self.equals, &pointer) {
            (Some(_), None) => bail!("{key}.equals: compares the value at a pointer; give pointer too"),
            (Some(value), Some(_)) => {
                Some(serde_json::to_value(value).map_err(|e| anyhow!("{key}.equals: not a JSON value: {e}"))?)
            }
            (None, _) => None,
        };
        Ok(Rule { status, body_contains: self.body_contains, pointer, equals, means: self.means })
    }
}

fn status(key: &str, raw: RawStatus) -> Result<StatusMatch> {
    match raw {
        RawStatus::Code(code) if (100..=599).contains(&code) => Ok(StatusMatch::Code(code)),
        RawStatus::Class(text) if text.len() == 3 && text.ends_with("xx") && ("1"..="5").contains(&&text[..1]) => {
            Ok(StatusMatch::Class(text[..1].parse().expect("a digit")))
        }
        RawStatus::Code(code) => bail!("{key}.status: {code} is not an HTTP status (100 to 599)"),
        RawStatus::Class(text) => bail!("{key}.status: {text:?} is neither a status nor a class such as \"5xx\""),
    }
}

impl RawItems {
    pub(super) fn check(self, mode: SinkMode, batch_size: usize) -> Result<ItemsSpec> {
        if mode != SinkMode::Batch || batch_size < 2 {
            bail!(
                "sink.items: per-item results are for batches; set sink.mode = \"batch\" and batch_size of 2 or more"
            );
        }
        let pointer = |key: &str, text: String, empty_ok| pointer(&text, empty_ok).map_err(|e| anyhow!("{key}: {e}"));
        Ok(ItemsSpec {
            list: pointer("sink.items.list", self.list, true)?,
            status: pointer("sink.items.status", self.status, false)?,
            errors: self.errors.map(|e| pointer("sink.items.errors", e, false)).transpose()?,
            reason: self.reason.map(|r| pointer("sink.items.reason", r, false)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Config;
    use super::*;

    fn parse(sink: &str) -> Result<Config> {
        let text = format!(
            "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://ss/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n[sink]\nurl = \"http://rs/in\"\n{sink}\n"
        );
        Config::parse(&text, std::path::Path::new("."), &|_| None)
    }

    fn error(sink: &str) -> String {
        format!("{:#}", parse(sink).expect_err(sink))
    }

    #[test]
    fn bodies_default_to_todays_by_mode() {
        let record = parse("").unwrap().sink.body;
        assert_eq!((record.kind, record.content_type.as_str()), (BodyKind::Object, "application/json"));
        assert_eq!(record.compress, Compress::None);
        let batch = parse("mode = \"batch\"").unwrap().sink.body;
        assert_eq!(batch.kind, BodyKind::Array);
        let ndjson = parse("mode = \"batch\"\nbody = \"ndjson\"\ncompress = \"gzip\"").unwrap().sink.body;
        assert_eq!((ndjson.content_type.as_str(), ndjson.compress), ("application/x-ndjson", Compress::Gzip));
        let own = parse("body = \"ndjson\"\ncontent_type = \"application/json; charset=utf-8\"").unwrap();
        assert_eq!(own.sink.body.content_type, "application/json; charset=utf-8");
        let es =
            parse("mode = \"batch\"\nbody = \"ndjson\"\nndjson_action = '{\"index\":{\"_id\":{uid:json}}}'").unwrap();
        assert!(es.sink.body.action.is_some_and(|a| a.uses(Var::Uid)));
    }

    #[test]
    fn bad_body_keys_are_refused_naming_the_key() {
        for (sink, want) in [
            ("mode = \"batch\"\nbody = \"object\"", "sink.body: \"object\" carries one record"),
            ("body = \"csv\"", "body"),
            ("compress = \"zstd\"", "compress"),
            ("content_type = \"a\\u0007b\"", "sink.content_type"),
            ("ndjson_action = '{\"index\":{}}'", "sink.ndjson_action: an action line goes before each record"),
            (
                "body = \"ndjson\"\nndjson_action = '{\"index\":{\"_id\":\"{uid}\"}}'",
                "sink.ndjson_action: {uid} between quotes",
            ),
            ("body = \"ndjson\"\nndjson_action = '{\"index\":{uid}}'", "sink.ndjson_action: must stay one line"),
            ("body = \"ndjson\"\nndjson_action = '{\"index\":{}'", "sink.ndjson_action: not JSON once filled in"),
            ("body = \"ndjson\"\nndjson_action = '{\"i\":{from}}'", "sink.ndjson_action: {from} cannot be used here"),
        ] {
            let e = error(sink);
            assert!(e.contains(want), "{sink}: {e}");
        }
        assert!(parse("mode = \"batch\"\nbatch_size = 1\nbody = \"object\"").is_ok(), "one record per request");
    }

    #[test]
    fn answer_rules_are_checked_into_their_conditions() {
        let config = parse(
            "[[sink.answers]]\nstatus = [500, \"4xx\"]\nbody_contains = \"Code: 27\"\nmeans = \"reject\"\n[[sink.answers]]\npointer = \"/error/type\"\nequals = { a = [1, true] }\nmeans = \"already_there\"",
        )
        .unwrap();
        let rules = config.sink.answers;
        assert_eq!(rules[0].status, [StatusMatch::Code(500), StatusMatch::Class(4)]);
        assert_eq!((rules[0].body_contains.as_deref(), rules[0].means), (Some("Code: 27"), Means::Reject));
        assert_eq!(rules[1].equals, Some(json!({ "a": [1, true] })));
    }

    #[test]
    fn bad_answer_rules_are_refused_naming_the_rule() {
        for (rule, want) in [
            ("means = \"retry\"", "sink.answers[0]: a rule needs something to match"),
            ("status = [302]\nmeans = \"acknowledged\"", "sink.answers[0]: 302 is a redirect, never a delivery"),
            ("status = [\"3xx\"]\nmeans = \"already_there\"", "3xx is a redirect"),
            ("status = [\"5xy\"]\nmeans = \"retry\"", "sink.answers[0].status: \"5xy\" is neither"),
            ("status = [600]\nmeans = \"retry\"", "sink.answers[0].status: 600 is not an HTTP status"),
            ("pointer = \"error\"\nmeans = \"retry\"", "sink.answers[0].pointer: \"error\" is not a JSON pointer"),
            (
                "status = [500]\nequals = 1\nmeans = \"retry\"",
                "sink.answers[0].equals: compares the value at a pointer",
            ),
            ("body_contains = \"\"\nmeans = \"retry\"", "sink.answers[0].body_contains: an empty text"),
            ("status = [500]\nmeans = \"ok\"", "means"),
            ("status = [500]\nmeans = \"retry\"\nwhen = 1", "when"),
        ] {
            let e = error(&format!("[[sink.answers]]\n{rule}"));
            assert!(e.contains(want), "{rule}: {e}");
        }
        assert!(parse("[[sink.answers]]\nstatus = [302]\nmeans = \"broken\"").is_ok(), "a redirect may be broken");
    }

    #[test]
    fn per_item_results_need_batches_and_pointers() {
        let batch = "mode = \"batch\"\nbatch_size = 100\n";
        let config =
            parse(&format!("{batch}[sink.items]\nlist = \"/items\"\nstatus = \"/*/status\"\nerrors = \"/errors\""))
                .unwrap();
        assert_eq!(config.sink.items.unwrap().status, "/*/status");
        for (sink, want) in [
            ("[sink.items]\nlist = \"/items\"\nstatus = \"/*/status\"", "sink.items: per-item results are for batches"),
            (
                &format!("{batch}[sink.items]\nlist = \"items\"\nstatus = \"/s\""),
                "sink.items.list: \"items\" is not a JSON pointer",
            ),
            (
                &format!("{batch}[sink.items]\nlist = \"/items\"\nstatus = \"\""),
                "sink.items.status: must be a JSON pointer",
            ),
            (&format!("{batch}[sink.items]\nlist = \"/items\""), "status"),
        ] {
            let e = error(sink);
            assert!(e.contains(want), "{sink}: {e}");
        }
    }
}
