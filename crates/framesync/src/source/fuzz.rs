//! Hostile SS answers: whatever the bytes, parsing returns records or an error, never panics.

use super::*;
use crate::config::Config;
use crate::frames::FrameSize;
use proptest::prelude::*;

fn config() -> SourceConfig {
    let text = "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h/e?from={from}&to={to}\"\nrecords = \"/items\"\nuid = \"/id\"\ntimestamp = \"/t\"\nnext = \"/next\"\n[sink]\nurl = \"http://h/rs\"\n";
    Config::parse(text, std::path::Path::new("."), &|_| None).unwrap().source
}

/// Any JSON value, nested a few levels, with awkward strings and numbers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC*".prop_map(Value::String),
        "[\\x00-\\x1f\\r\\n\"\\\\ü✓]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("items".to_string()),
                    Just("next".to_string()),
                    Just("t".to_string()),
                    "[a-z]{1,3}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_page(&String::from_utf8_lossy(&bytes), &config());
    }

    #[test]
    fn arbitrary_json_never_panics_the_parser_or_the_collector(doc in json()) {
        let config = config();
        let body = doc.to_string();
        if let Ok(page) = parse_page(&body, &config) {
            let frame = FrameSize::new(60).unwrap().frame_at(0);
            let pulled = collect(frame, page.records.clone(), &config);
            prop_assert_eq!(pulled.records.len() + pulled.invalid.len(), page.records.len());
            for record in &pulled.records {
                prop_assert!(!record.uid.is_empty());
            }
        }
    }

    #[test]
    fn truncated_json_is_an_error_not_a_panic(doc in json(), cut in 0usize..200) {
        let body = serde_json::json!({"items": [doc]}).to_string();
        let cut = body.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(body.len());
        if cut < body.len() {
            prop_assert!(parse_page(&body[..cut], &config()).is_err());
        }
    }
}
