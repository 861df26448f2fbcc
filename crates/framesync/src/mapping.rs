//! The schema mapping that turns an SS record into an RS record: each target field takes a
//! source field (JSON pointer, optionally converting a time) or a constant. A record the
//! mapping cannot satisfy is dead-lettered by the caller, never sent half-built.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use serde_json::{Map, Value};

use crate::record::{self, TimeError, TimeFormat};

/// The mapping, as `sink.map` writes it: a table of target fields, each a JSON pointer
/// (`"/id"`) or a table (`{ from = "/t", time = "epoch_ms", optional = true }`, `{ const = 2 }`).
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

impl<'de> Deserialize<'de> for Mapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = BTreeMap::<String, Rule>::deserialize(deserializer)?;
        if fields.is_empty() {
            return Err(de::Error::custom(
                "an empty mapping would send empty records; remove it to send records as they are",
            ));
        }
        Ok(Self { fields: fields.into_iter().collect() })
    }
}

impl Mapping {
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

/// A target field's table form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    from: Option<String>,
    #[serde(rename = "const")]
    constant: Option<Value>,
    time: Option<TimeFormat>,
    #[serde(default)]
    optional: bool,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RuleVisitor)
    }
}

struct RuleVisitor;

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = Rule;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON pointer such as \"/id\" or a table such as { const = \"x\" }")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Rule, E> {
        Ok(Rule::From { pointer: pointer(text)?, time: None, optional: false })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
        let table = RuleTable::deserialize(MapAccessDeserializer::new(map))?;
        match (table.from, table.constant) {
            (Some(_), Some(_)) => Err(de::Error::custom("give either from or const, not both")),
            (None, Some(value)) => Ok(Rule::Const(value)),
            (Some(from), None) => {
                Ok(Rule::From { pointer: pointer(&from)?, time: table.time, optional: table.optional })
            }
            (None, None) => Err(de::Error::custom("needs from = \"/pointer\" or const = value")),
        }
    }
}

fn pointer<E: de::Error>(text: &str) -> Result<String, E> {
    if !text.starts_with('/') {
        return Err(E::custom(format!(
            "{text:?} is not a JSON pointer; write \"/{text}\", or {{ const = {text:?} }} for a constant"
        )));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(text: &str) -> Result<Mapping, toml::de::Error> {
        toml::from_str(text)
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
    fn bad_mappings_say_what_is_wrong() {
        for (text, want) in [
            (r#"a = "id""#, r#""id" is not a JSON pointer; write "/id""#),
            (r#"a = { from = "/x", const = 1 }"#, "either"),
            (r#"a = { form = "/x" }"#, "form"),
            (r#"a = { from = "/x", time = "iso" }"#, "iso"),
            (r#"a = { const = 1, optional = "yes" }"#, "a boolean"),
            (r#"a = {}"#, "needs from"),
            (r#"a = 3"#, "a JSON pointer such as"),
            ("", "empty mapping"),
        ] {
            let e = mapping(text).unwrap_err().message().to_owned();
            assert!(e.contains(want), "{want} not in {e}");
        }
    }
}
