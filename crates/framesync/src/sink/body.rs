//! What one request to the RS carries: its records as one JSON object, a JSON array, or
//! newline-delimited JSON (one record a line, each line ending in `\n`, optionally after an
//! action line such as Elasticsearch's `{"index":{"_id":...}}`), gzipped or not.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::Outgoing;
use crate::config::{BodyKind, BodySpec, Compress};
use crate::template::Vars;

/// Rendering and compressing: what the RS client does with the spec the config checked.
impl BodySpec {
    /// The bytes sent: the rendered records, compressed if so configured.
    pub fn encode(&self, records: &[Outgoing]) -> Vec<u8> {
        let text = self.render(records);
        match self.compress {
            Compress::None => text.into_bytes(),
            Compress::Gzip => gzip(text.as_bytes()),
        }
    }

    /// The `Content-Encoding` header, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        match self.compress {
            Compress::None => None,
            Compress::Gzip => Some("gzip"),
        }
    }

    /// The records as text. An object body carries one record (the config refuses it for
    /// batches of more); should it ever be given more, they go as an array rather than be
    /// dropped.
    pub fn render(&self, records: &[Outgoing]) -> String {
        match (self.kind, records) {
            (BodyKind::Object, [one]) => one.body.clone(),
            (BodyKind::Object | BodyKind::Array, _) => {
                let items: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
                format!("[{}]", items.join(","))
            }
            (BodyKind::Ndjson, _) => self.ndjson(records),
        }
    }

    fn ndjson(&self, records: &[Outgoing]) -> String {
        let mut out = String::new();
        for record in records {
            if let Some(action) = &self.action {
                out.push_str(&one_line(&action.render(&Vars { uid: &record.uid, ..Vars::default() })));
                out.push('\n');
            }
            out.push_str(&one_line(&record.body));
            out.push('\n');
        }
        out
    }
}

/// JSON text on one line. A raw line break can only be whitespace between JSON tokens (a
/// string cannot hold one), so replacing it with a space keeps what the record says.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) { text.replace(['\n', '\r'], " ").into() } else { text.into() }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::template::{Template, Var};

    fn records() -> Vec<Outgoing> {
        [("a", r#"{"id":"a"}"#), ("b\"q", "{\"id\":\n\"b\"}")]
            .into_iter()
            .map(|(uid, body)| Outgoing { uid: uid.into(), body: body.into() })
            .collect()
    }

    #[test]
    fn bodies_are_an_object_an_array_or_one_record_a_line() {
        let all = records();
        assert_eq!(BodySpec::of(BodyKind::Object).render(&all[..1]), r#"{"id":"a"}"#);
        assert_eq!(BodySpec::of(BodyKind::Array).render(&all[..1]), r#"[{"id":"a"}]"#, "a batch of one");
        assert_eq!(BodySpec::of(BodyKind::Array).render(&all), "[{\"id\":\"a\"},{\"id\":\n\"b\"}]");
        assert_eq!(
            BodySpec::of(BodyKind::Ndjson).render(&all),
            "{\"id\":\"a\"}\n{\"id\": \"b\"}\n",
            "every line ends in \\n; a line break inside a record is whitespace"
        );
        assert_eq!(BodySpec::of(BodyKind::Ndjson).content_type, "application/x-ndjson");
        assert_eq!(BodySpec::of(BodyKind::Array).content_type, "application/json");
    }

    #[test]
    fn an_action_line_goes_before_each_record_with_its_uid_as_json() {
        let action = Template::parse(r#"{"index":{"_id":{uid:json}}}"#, &[Var::Uid]).unwrap();
        let spec = BodySpec { action: Some(action), ..BodySpec::of(BodyKind::Ndjson) };
        let text = spec.render(&records());
        assert_eq!(
            text,
            "{\"index\":{\"_id\":\"a\"}}\n{\"id\":\"a\"}\n{\"index\":{\"_id\":\"b\\\"q\"}}\n{\"id\": \"b\"}\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn a_gzipped_body_inflates_to_the_rendered_records() {
        let spec = BodySpec { compress: Compress::Gzip, ..BodySpec::of(BodyKind::Ndjson) };
        let bytes = spec.encode(&records());
        assert_eq!(&bytes[..2], [0x1f, 0x8b], "the gzip magic");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, spec.render(&records()));
        assert_eq!(spec.content_encoding(), Some("gzip"));
        assert_eq!(BodySpec::of(BodyKind::Array).content_encoding(), None);
    }
}
