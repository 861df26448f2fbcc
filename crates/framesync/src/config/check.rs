//! Checks shared by the sections: ranges, statuses, rates, URLs and their placeholders, and the
//! `${VAR}` expansion that keeps secrets out of the file. Each error names its key.
//!
//! Each check also bounds its value, so that the time arithmetic it feeds (frame bounds in
//! seconds and milliseconds, deadlines, backoff, retention cutoffs) cannot overflow.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

use super::Env;
use crate::redact::Redactor;
use crate::template::{Query, Template, Var};

/// The slowest pace `max_rps` sets: one request every 1000 s.
const LEAST_RATE: f64 = 0.001;

/// A key every config must give, with an example of it.
pub(super) fn required<T>(key: &str, value: Option<T>, example: &str) -> Result<T> {
    value.ok_or_else(|| anyhow!("{key}: missing; add it, e.g. {example}"))
}

pub(super) fn count(key: &str, n: usize, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    if !range.contains(&n) {
        bail!("{key}: {n} is out of range; use a number from {} to {}", range.start(), range.end());
    }
    Ok(n)
}

/// HTTP statuses a list may hold: 4xx answers that are not "retry later" (408, 425, 429).
pub(super) fn statuses(key: &str, codes: &[u16], example: &str) -> Result<()> {
    match codes.iter().find(|c| !(400..500).contains(*c) || [408, 425, 429].contains(*c)) {
        Some(code) => {
            bail!("{key}: {code} cannot be listed; list 4xx statuses other than 408, 425 and 429, such as {example}")
        }
        None => Ok(()),
    }
}

pub(super) fn rate(key: &str, value: Option<f64>) -> Result<Option<f64>> {
    match value {
        Some(r) if !(r.is_finite() && r > 0.0) => bail!("{key}: {r} is not a positive number of requests per second"),
        Some(r) if r < LEAST_RATE => {
            bail!("{key}: {r} is slower than one request every 1000 s; use at least {LEAST_RATE}")
        }
        other => Ok(other),
    }
}

/// A URL as written: `${VAR}` expanded, http(s) only, and no placeholder but `allowed`.
pub(super) fn url(key: &str, text: &str, allowed: &[&str], env: Env, secrets: &mut Redactor) -> Result<String> {
    let url = expand(key, text, env, secrets)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{key}: must start with http:// or https://");
    }
    check_placeholders(key, &url, allowed)?;
    Ok(url)
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

/// Replaces `${VAR}` with the environment's value and remembers the value as a secret;
/// `${VAR:-default}` takes `default` when VAR is unset or empty, as sh does. A default is
/// written in the file, so it is no secret: only a value taken from the environment is.
pub(super) fn expand(key: &str, text: &str, env: Env, secrets: &mut Redactor) -> Result<String> {
    substitute(key, text, env, &mut |value| secrets.add(value))
}

/// `expand` for a value that is no secret (a path, a name, a pointer): shown as it is.
pub(super) fn expand_plain(key: &str, text: &str, env: Env) -> Result<String> {
    substitute(key, text, env, &mut |_| ())
}

fn substitute(key: &str, text: &str, env: Env, from_env: &mut dyn FnMut(&str)) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let close = after.find('}').ok_or_else(|| anyhow!("{key}: an unclosed \"${{\""))?;
        let (name, default) = match after[..close].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&after[..close], None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{key}: ${{{name}}} is not an environment variable name");
        }
        match (env(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => {
                from_env(&value);
                out.push_str(&value);
            }
            (None, Some(default)) => out.push_str(default),
            (None, None) => bail!(
                "{key}: the environment variable {name} is not set (export it before running framesync, or write ${{{name}:-default}})"
            ),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn headers(
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

/// A template, as a config value gives it: placeholders limited to `allowed`, `${VAR}`
/// expanded in its text (a secret is never read as a placeholder).
pub(super) fn template(key: &str, text: &str, allowed: &[Var], env: Env, secrets: &mut Redactor) -> Result<Template> {
    Template::parse(text, allowed).map_err(|e| anyhow!("{key}: {e}"))?.map_text(|text| expand(key, text, env, secrets))
}

/// A `query` table: each parameter's name and template.
pub(super) fn query(
    key: &str,
    raw: BTreeMap<String, String>,
    allowed: &[Var],
    env: Env,
    secrets: &mut Redactor,
) -> Result<Query> {
    let params = raw
        .into_iter()
        .map(|(name, text)| {
            if name.is_empty() {
                bail!("{key}: a parameter needs a name");
            }
            Ok((name.clone(), template(&format!("{key}.{name}"), &text, allowed, env, secrets)?))
        })
        .collect::<Result<_>>()?;
    Ok(Query::new(params))
}

/// A JSON pointer: "" (the whole document, only where allowed) or a path starting with "/".
pub(super) fn pointer(text: &str, empty_ok: bool) -> Result<String, String> {
    if text.is_empty() && !empty_ok {
        return Err("must be a JSON pointer such as \"/id\"".into());
    }
    if !text.is_empty() && !text.starts_with('/') {
        return Err(format!("{text:?} is not a JSON pointer; write it as \"/{text}\""));
    }
    Ok(text.to_owned())
}
