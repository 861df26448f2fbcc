//! A TOML error in one line that names the key it is about. The key is found from the error's
//! place in the text, so the value checks run during deserialization need not know their key.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// `source.timeout: "soon" is not a duration ...`; `line 3: ...` for text that is not TOML.
pub(super) fn one_line(text: &str, error: &toml::de::Error) -> String {
    let message = &plain(error.message());
    let Some(at) = error.span().map(|span| span.start) else {
        return message.to_owned();
    };
    match DeTable::parse(text) {
        Err(_) => format!("line {}: {message}", line_of(text, at)),
        Ok(document) => match in_table(document.get_ref(), at, "") {
            Some(key) if !key.is_empty() => format!("{key}: {message}"),
            _ => message.to_owned(),
        },
    }
}

/// A value written as a string and read by `read`. The error is raised while the deserializer
/// is on the value, so it carries the value's place (and so its key, down to a list item).
pub(super) fn read_str<'de, D, T>(deserializer: D, read: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<F>(F);

    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for Text<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(Text(read))
}

/// serde's words for the expected form, said as the config is written: `expected usize` is
/// `expected a whole number`, `a sequence` is `a list`. Lines are joined, so the error stays one.
pub(super) fn plain(message: &str) -> String {
    const WORDS: [(&str, &str); 15] = [
        ("wanted string or table", "invalid type, expected a string"),
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list such as [1, 2]"),
        ("expected a map", "expected a table such as { a = 1 }"),
        ("expected a boolean", "expected true or false"),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: a table"),
    ];
    let mut out = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    for (serde, ours) in WORDS {
        out = out.replace(serde, ours);
    }
    out
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key of the innermost value at byte `at` (`frames.recheck[1]`), or of the table
/// holding the key written at `at` (an unknown key is reported on its table).
fn in_table(table: &DeTable<'_>, at: usize, path: &str) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let child = if path.is_empty() { key.get_ref().to_string() } else { format!("{path}.{}", key.get_ref()) };
        in_value(value, at, child).or_else(|| key.span().contains(&at).then(|| path.to_owned()))
    })
}

fn in_value(value: &Spanned<DeValue<'_>>, at: usize, path: String) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => in_table(table, at, &path),
        DeValue::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| in_value(item, at, format!("{path}[{i}]")))
        }
        _ => None,
    };
    inner.or_else(|| value.span().contains(&at).then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, at: &str) -> Option<String> {
        in_table(DeTable::parse(text).unwrap().get_ref(), text.find(at).unwrap(), "")
    }

    #[test]
    fn values_are_named_by_their_dotted_key() {
        let text = "ledger = \"l\"\n[frames]\nrecheck = [\"1m\", \"2y\"]\n[sink]\nmap = { a = { time = \"iso\" } }\n";
        assert_eq!(key(text, "\"l\"").as_deref(), Some("ledger"));
        assert_eq!(key(text, "\"2y\"").as_deref(), Some("frames.recheck[1]"));
        assert_eq!(key(text, "\"iso\"").as_deref(), Some("sink.map.a.time"));
    }

    #[test]
    fn a_key_is_reported_on_its_table() {
        let text = "[source]\nurl = \"x\"\nuidd = 1\n";
        assert_eq!(key(text, "uidd").as_deref(), Some("source"));
    }
}
