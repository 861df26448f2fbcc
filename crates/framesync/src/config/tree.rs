//! The config's TOML tree before serde reads it: `${VAR}` expanded in every string value, and
//! `FRAMESYNC__SECTION__KEY` overrides from the environment set in it. Working on the parsed
//! tree keeps each value's place in the text, so serde's errors still name their key.
//!
//! Keys whose values may carry credentials or addresses (URLs, headers, query parameters,
//! templates, auth) are left as written here: their own checks expand them, keep their written
//! form for the ledger's identity, and remember what came from the environment as secrets.
//! Every other string (the ledger path, file paths, pointers, names) is expanded here and is
//! no secret: it is shown as it is in messages.

use anyhow::{Result, bail};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Env;
use super::check;

/// Keys (and the tables under them) that their own checks expand, as secrets.
const EXPANDED_BY_THEIR_CHECK: [&str; 15] = [
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
    "run.pushgateway",
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

/// The prefix of an override: `FRAMESYNC__SINK__BATCH_SIZE=1000` sets `sink.batch_size`.
pub const OVERRIDE_PREFIX: &str = "FRAMESYNC__";

/// The process's overrides, sorted by name so they apply in a known order.
pub fn overrides_from_process() -> Vec<(String, String)> {
    let mut vars: Vec<_> = std::env::vars().filter(|(name, _)| name.starts_with(OVERRIDE_PREFIX)).collect();
    vars.sort();
    vars
}

/// Sets each override's key in `table`: the name after the prefix, split at `__` and lowercased,
/// is the key's dotted path; the value is read as a TOML value, or else taken as a string.
/// Override `i` gets the place `at + i` (past the file's text), so an error on it can be told
/// from one in the file and name its variable.
pub(super) fn set_overrides<'i>(table: &mut DeTable<'i>, overrides: &'i [(String, String)], at: usize) -> Result<()> {
    for (i, (name, text)) in overrides.iter().enumerate() {
        let span = at + i..at + i + 1;
        let path: Vec<String> =
            name.strip_prefix(OVERRIDE_PREFIX).unwrap_or(name).split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            bail!("{name}: name a key as {OVERRIDE_PREFIX}SECTION__KEY, e.g. {OVERRIDE_PREFIX}SINK__BATCH_SIZE");
        }
        let value = match DeValue::parse(text) {
            Ok(value) => respan(value.into_inner(), &span),
            Err(_) => DeValue::String(text.as_str().into()),
        };
        let (last, tables) = path.split_last().expect("split yields at least one part");
        let mut here = &mut *table;
        for (depth, key) in tables.iter().enumerate() {
            here = match child(here, key, &span) {
                DeValue::Table(inner) => inner,
                _ => {
                    bail!("{name}: {} is not a table, so it has no key {:?}", path[..=depth].join("."), path[depth + 1])
                }
            };
        }
        *child(here, last, &span) = value;
    }
    Ok(())
}

/// The value under `key`, an empty table inserted when there is none.
fn child<'t, 'i>(table: &'t mut DeTable<'i>, key: &str, span: &std::ops::Range<usize>) -> &'t mut DeValue<'i> {
    if !table.iter().any(|(k, _)| k.get_ref() == key) {
        let empty = Spanned::new(span.clone(), DeValue::Table(DeTable::default()));
        table.insert(Spanned::new(span.clone(), key.to_owned().into()), empty);
    }
    let (_, value) = table.iter_mut().find(|(k, _)| k.get_ref() == key).expect("inserted above");
    value.get_mut()
}

/// `value` with every place in it set to `span`: the override's, not the variable's text.
fn respan<'i>(value: DeValue<'i>, span: &std::ops::Range<usize>) -> DeValue<'i> {
    match value {
        DeValue::Array(mut items) => {
            for item in items.iter_mut() {
                let inner = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false))).into_inner();
                *item = Spanned::new(span.clone(), respan(inner, span));
            }
            DeValue::Array(items)
        }
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(k, v)| {
                    (
                        Spanned::new(span.clone(), k.into_inner()),
                        Spanned::new(span.clone(), respan(v.into_inner(), span)),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}
