//! The config's TOML tree before serde reads it: `${VAR}` expanded in every string value, and
//! `FRAMESYNC__SECTION__KEY` overrides from the environment set in it. Working on the parsed
//! tree keeps each value's place in the text, so serde's errors still name their key.
//!
//! Keys whose values may carry credentials or addresses (URLs, headers, query parameters,
//! templates, auth) are left as written here: their own checks expand them, keep their written
//! form for the ledger's identity, and remember what came from the environment as secrets.
//! Every other string (the ledger path, file paths, pointers, names) is expanded here and is
//! no secret: it is shown as it is in messages.

use anyhow::Result;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Env;
use super::check;

/// Keys (and the tables under them) that their own checks expand, as secrets.
const EXPANDED_BY_THEIR_CHECK: [&str; 14] = [
    "source.url",
    "source.query",
    "source.headers",
    "source.auth",
    "sink.url",
    "sink.query",
    "sink.headers",
    "sink.auth",
    "sink.lookup_url",
    "sink.lookup.url",
    "sink.lookup.query",
    "sink.lookup.batch_query",
    "sink.lookup.body",
    "sink.ndjson_action",
];

/// Expands `${VAR}` in every string of `table` that is not expanded by its own check.
pub(super) fn expand(table: &mut DeTable<'_>, env: Env) -> Result<()> {
    expand_table(table, "", env)
}

fn expand_table(table: &mut DeTable<'_>, path: &str, env: Env) -> Result<()> {
    for (key, value) in table.iter_mut() {
        let child = if path.is_empty() { key.get_ref().to_string() } else { format!("{path}.{}", key.get_ref()) };
        expand_value(value, &child, env)?;
    }
    Ok(())
}

fn expand_value(value: &mut Spanned<DeValue<'_>>, path: &str, env: Env) -> Result<()> {
    if own_check(path) {
        return Ok(());
    }
    match value.get_mut() {
        DeValue::String(text) if text.contains("${") => *text = check::expand_plain(path, text, env)?.into(),
        DeValue::Table(table) => expand_table(table, path, env)?,
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn own_check(path: &str) -> bool {
    EXPANDED_BY_THEIR_CHECK
        .iter()
        .any(|key| path.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '['])))
}
