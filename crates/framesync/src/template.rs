//! Templates for the values framesync fills in: a query parameter, a header, a request body.
//!
//! A template is text with placeholders: `{from}`, `{to}` and `{last}` (a frame's bounds, in the
//! source's time format), `{uid}` (one record's UID) and `{uids}` (the UIDs of a batched lookup).
//! A placeholder may name a filter that renders the value for the language it lands in:
//!
//! - `{uid}` — the value as it is. In a query parameter the whole rendered value is
//!   percent-encoded by framesync, so no value can end its parameter or start another.
//! - `{uid:hex}` — the value's UTF-8 bytes as lowercase hex: only `0-9a-f`, which no language
//!   reads as anything but a literal. SQL turns it back with `unhex('{uid:hex}')` (ClickHouse,
//!   MySQL) or `convert_from(decode('{uid:hex}', 'hex'), 'UTF8')` (PostgreSQL).
//! - `{uid:json}` — a JSON string literal, quotes included; `{uids:json}` is a JSON array of them.
//! - `{uids:hex}` — each UID as hex, joined by commas.
//!
//! A UID can come from anyone who writes to the SS, so it may hold quotes, backslashes, `%` or
//! newlines. A template that puts a bare `{uid}` or `{uids}` between quotes (`'{uid}'`) would let
//! such a UID change the meaning of a query: it is refused, with the safe form in the message.
//!
//! Braces that are not a placeholder stay as they are: JSON (`{"term": 1}`) and a server's own
//! parameters (`{id:String}`, ClickHouse's bound parameters) pass through. A bare `{name}` that
//! names nothing framesync fills is refused, so a typo such as `{form}` is not sent as is.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The characters left as they are in a URL query name or value (RFC 3986 unreserved).
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `value` percent-encoded for a URL: every character but [`QUERY_VALUE`]'s.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `url` with `name=value` added to its query (after its own parameters, if it has any), both
/// percent-encoded.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{}={}", encode(name), encode(value))
}

/// A value framesync fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    From,
    To,
    Last,
    Uid,
    Uids,
}

impl Var {
    const ALL: [Var; 5] = [Var::From, Var::To, Var::Last, Var::Uid, Var::Uids];

    pub fn name(self) -> &'static str {
        match self {
            Var::From => "from",
            Var::To => "to",
            Var::Last => "last",
            Var::Uid => "uid",
            Var::Uids => "uids",
        }
    }

    fn named(name: &str) -> Option<Var> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// UIDs come from whoever writes to the SS: they are the values a filter must guard.
    fn is_uid(self) -> bool {
        matches!(self, Var::Uid | Var::Uids)
    }
}

/// How a value is written into the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// As it is (a list joined by commas).
    Plain,
    /// UTF-8 bytes as lowercase hex (a list joined by commas).
    Hex,
    /// A JSON string (a list: a JSON array of strings).
    Json,
}

impl Filter {
    fn named(name: &str) -> Option<Filter> {
        match name {
            "hex" => Some(Filter::Hex),
            "json" => Some(Filter::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Var, Filter),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values of one rendering. A template only names values its place allows (checked when
/// the config is read), so each one it names is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub last: &'a str,
    pub uid: &'a str,
    pub uids: &'a [&'a str],
}

impl Template {
    /// Parses `text`, allowing only the values in `allowed`. `${NAME}` (an environment
    /// variable, expanded by the config) is text to the template.
    pub fn parse(text: &str, allowed: &[Var]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let dollar = rest[..open].ends_with('$');
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}');
            let inner = close.map(|c| &after[..c]);
            match inner.filter(|_| !dollar).and_then(|inner| placeholder(inner, allowed).transpose()) {
                Some(value) => {
                    let (var, filter) = value?;
                    guard_quotes(&literal, after[close.unwrap_or(0) + 1..].chars().next(), var, filter)?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(var, filter));
                    rest = &after[close.unwrap_or(0) + 1..];
                }
                None => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// A template of fixed text.
    pub fn text(text: &str) -> Template {
        Template { parts: vec![Part::Text(text.to_owned())] }
    }

    /// Whether the template names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Value(v, _) if *v == var))
    }

    /// Rewrites the fixed text (the config expands `${VAR}` there, after parsing, so a value
    /// from the environment is never read as a placeholder).
    pub fn map_text<E>(self, mut f: impl FnMut(&str) -> Result<String, E>) -> Result<Template, E> {
        let parts = self
            .parts
            .into_iter()
            .map(|part| match part {
                Part::Text(text) => f(&text).map(Part::Text),
                value => Ok(value),
            })
            .collect::<Result<_, E>>()?;
        Ok(Template { parts })
    }

    pub fn render(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(Var::Uids, filter) => render_list(&mut out, vars.uids, *filter),
                Part::Value(var, filter) => {
                    let value = match var {
                        Var::From => vars.from,
                        Var::To => vars.to,
                        Var::Last => vars.last,
                        Var::Uid | Var::Uids => vars.uid,
                    };
                    render_one(&mut out, value, *filter);
                }
            }
        }
        out
    }
}

/// Query parameters, name → template, as a config's `query` table gives them: each value is
/// rendered, then percent-encoded whole (name too) and added to a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    params: Vec<(String, Template)>,
}

impl Query {
    pub fn new(params: Vec<(String, Template)>) -> Query {
        Query { params }
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn uses(&self, var: Var) -> bool {
        self.params.iter().any(|(_, t)| t.uses(var))
    }

    /// `url` with the parameters added (after its own, if it has any).
    pub fn apply(&self, url: &str, vars: &Vars) -> String {
        self.params.iter().fold(url.to_owned(), |url, (name, template)| with_param(&url, name, &template.render(vars)))
    }
}

/// `inner` (the text between braces) as a placeholder: None when it is not one (JSON, a
/// server's own `{name:Type}`), an error when it looks like one but names nothing known.
fn placeholder(inner: &str, allowed: &[Var]) -> Result<Option<(Var, Filter)>, String> {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let (name, filter) = match inner.split_once(':') {
        Some((name, filter)) => (name, Some(filter)),
        None => (inner, None),
    };
    if !word(name) || filter.is_some_and(|f| !word(f)) {
        return Ok(None);
    }
    let known: Vec<String> = allowed.iter().map(|v| format!("{{{}}}", v.name())).collect();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    let Some(var) = Var::named(name) else {
        return match filter {
            // A server's own bound parameter, such as ClickHouse's {id:String}.
            Some(_) => Ok(None),
            None => Err(format!("unknown placeholder {{{name}}}; this value may use {known}")),
        };
    };
    if !allowed.contains(&var) {
        return Err(format!("{{{name}}} cannot be used here; this value may use {known}"));
    }
    let filter = match filter {
        None => Filter::Plain,
        Some(f) => Filter::named(f).ok_or_else(|| {
            format!("{{{name}:{f}}}: unknown filter {f:?}; use {{{name}}}, {{{name}:hex}} or {{{name}:json}}")
        })?,
    };
    if var == Var::Uids && filter == Filter::Plain {
        return Err("{uids} needs a filter: {uids:json} (a JSON array) or {uids:hex} (hex, joined by commas); plain, a UID holding a comma would read as two".into());
    }
    Ok(Some((var, filter)))
}

/// Refuses a bare UID between quotes: a UID holding that quote would end the string.
fn guard_quotes(before: &str, after: Option<char>, var: Var, filter: Filter) -> Result<(), String> {
    let quote = |c: Option<char>| matches!(c, Some('\'' | '"' | '`'));
    if var.is_uid() && filter == Filter::Plain && (quote(before.chars().last()) || quote(after)) {
        return Err(format!(
            "{{{0}}} between quotes: a UID holding a quote would change what the text means; write the value as hex and decode it where it lands, e.g. unhex('{{{0}:hex}}'), or use {{{0}:json}} in JSON",
            var.name()
        ));
    }
    Ok(())
}

fn render_one(out: &mut String, value: &str, filter: Filter) {
    match filter {
        Filter::Plain => out.push_str(value),
        Filter::Hex => {
            for byte in value.bytes() {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Filter::Json => out.push_str(&serde_json::Value::from(value).to_string()),
    }
}

fn render_list(out: &mut String, values: &[&str], filter: Filter) {
    if filter == Filter::Json {
        out.push_str(&serde_json::Value::from(values.to_vec()).to_string());
        return;
    }
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        render_one(out, value, filter);
    }
}

#[cfg(test)]
mod tests;
