//! The schema mapping that turns an SS record into an RS record: each target field takes a
//! source field (JSON pointer, optionally converting a time) or a constant. A record the
//! mapping cannot satisfy is dead-lettered by the caller, never sent half-built.

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value};

use crate::record::{self, TimeError, TimeFormat};

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    fields: Vec<(String, Rule)>,
}

/// Why a record cannot be mapped: the field it could not fill, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("field {target}: the record has nothing at {pointer}")]
    Missing { target: String, pointer: String },
    #[error("field {target}: {why}")]
    Time { target: String, why: TimeError },
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    From { pointer: String, time: Option<TimeFormat>, optional: bool },
    Const(Value),
}

impl Mapping {
    /// `key` is the config key (`sink.map`), used in error messages.
    pub fn from_toml(key: &str, table: &toml::Table) -> Result<Self> {
        if table.is_empty() {
            bail!("{key}: an empty mapping would send empty records; remove it to send records as they are");
        }
        let fields = table
            .iter()
            .map(|(target, spec)| Ok((target.clone(), rule(&format!("{key}.{target}"), spec)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { fields })
    }

    /// Builds the RS record, or says which field could not be filled.
    pub fn apply(&self, source: &Value) -> Result<Value, MapError> {
        let mut out = Map::new();
        for (target, rule) in &self.fields {
            match rule {
                Rule::Const(value) => {
                    out.insert(target.clone(), value.clone());
                }
                Rule::From { pointer, time, optional } => match source.pointer(pointer) {
                    None | Some(Value::Null) if *optional => {}
                    None => return Err(MapError::Missing { target: target.clone(), pointer: pointer.clone() }),
                    Some(value) => {
                        let value = match time {
                            None => value.clone(),
                            Some(format) => {
                                let ms = record::time_ms(value, None)
                                    .map_err(|why| MapError::Time { target: target.clone(), why })?;
                                record::format_time(ms, *format)
                            }
                        };
                        out.insert(target.clone(), value);
                    }
                },
            }
        }
        Ok(Value::Object(out))
    }
}

fn rule(key: &str, spec: &toml::Value) -> Result<Rule> {
    match spec {
        toml::Value::String(pointer) => {
            Ok(Rule::From { pointer: pointer_of(key, pointer)?, time: None, optional: false })
        }
        toml::Value::Table(t) => {
            for name in t.keys() {
                if !["from", "const", "time", "optional"].contains(&name.as_str()) {
                    bail!("{key}: unknown key {name:?}; use from, time, optional or const");
                }
            }
            match (t.get("from"), t.get("const")) {
                (Some(_), Some(_)) => bail!("{key}: give either from or const, not both"),
                (None, Some(value)) => {
                    Ok(Rule::Const(serde_json::to_value(value).map_err(|e| anyhow!("{key}.const: {e}"))?))
                }
                (Some(toml::Value::String(pointer)), None) => Ok(Rule::From {
                    pointer: pointer_of(key, pointer)?,
                    time: match t.get("time") {
                        None => None,
                        Some(toml::Value::String(f)) => Some(time_format(&format!("{key}.time"), f)?),
                        Some(other) => {
                            bail!("{key}.time: {other} is not a time format; use rfc3339, epoch_s or epoch_ms")
                        }
                    },
                    optional: match t.get("optional") {
                        None => false,
                        Some(toml::Value::Boolean(b)) => *b,
                        Some(other) => bail!("{key}.optional: {other} is not true or false"),
                    },
                }),
                (Some(other), None) => bail!("{key}.from: {other} is not a JSON pointer string such as \"/id\""),
                (None, None) => bail!("{key}: needs from = \"/pointer\" or const = value"),
            }
        }
        other => {
            bail!("{key}: {other} is neither a JSON pointer such as \"/id\" nor a table such as {{ const = \"x\" }}")
        }
    }
}

fn time_format(key: &str, text: &str) -> Result<TimeFormat> {
    match text {
        "rfc3339" => Ok(TimeFormat::Rfc3339),
        "epoch_s" => Ok(TimeFormat::EpochS),
        "epoch_ms" => Ok(TimeFormat::EpochMs),
        other => bail!("{key}: {other:?} is not a time format; use rfc3339, epoch_s or epoch_ms"),
    }
}

fn pointer_of(key: &str, text: &str) -> Result<String> {
    if !text.starts_with('/') {
        bail!("{key}: {text:?} is not a JSON pointer; write \"/{text}\", or {{ const = {text:?} }} for a constant");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(text: &str) -> Result<Mapping> {
        let table: toml::Table = toml::from_str(text).unwrap();
        Mapping::from_toml("sink.map", &table)
    }

    #[test]
    fn fields_come_from_pointers_constants_and_converted_times() {
        let m = mapping(
            r#"
event_id = "/id"
amount = "/payload/amount"
source = { const = "orders" }
version = { const = 2 }
at = { from = "/created_at", time = "epoch_ms" }
note = { from = "/note", optional = true }
"#,
        )
        .unwrap();
        let out = m.apply(&json!({"id": 7, "created_at": "1970-01-01T00:00:01Z", "payload": {"amount": 3}})).unwrap();
        assert_eq!(out, json!({"event_id": 7, "amount": 3, "source": "orders", "version": 2, "at": 1000}));
    }

    #[test]
    fn a_record_missing_a_required_field_is_refused_with_the_field_named() {
        let m = mapping(r#"amount = "/payload/amount""#).unwrap();
        let e = m.apply(&json!({"id": 1})).unwrap_err().to_string();
        assert!(e.contains("amount") && e.contains("/payload/amount"), "{e}");
    }

    #[test]
    fn an_unreadable_time_is_refused() {
        let m = mapping(r#"at = { from = "/t", time = "rfc3339" }"#).unwrap();
        assert!(m.apply(&json!({"t": "soon"})).unwrap_err().to_string().contains("field at"));
        assert_eq!(m.apply(&json!({"t": 1})).unwrap(), json!({"at": "1970-01-01T00:00:01.000Z"}));
    }

    #[test]
    fn bad_mappings_name_the_key() {
        for (text, want) in [
            (r#"a = "id""#, "sink.map.a"),
            (r#"a = { from = "/x", const = 1 }"#, "either"),
            (r#"a = { form = "/x" }"#, "form"),
            (r#"a = { from = "/x", time = "iso" }"#, "sink.map.a.time"),
            (r#"a = 3"#, "sink.map.a"),
        ] {
            let e = format!("{:#}", mapping(text).unwrap_err());
            assert!(e.contains(want), "{want} not in {e}");
        }
    }
}
