//! Per-item results (`[sink.items]`): a batch API that answers 2xx with one result per record,
//! in order, such as Elasticsearch's `_bulk` (`{"errors": true, "items": [{"index":
//! {"status": 201}}, {"index": {"status": 429, "error": {...}}}]}`). Each item's status is
//! classified like the status of a request of its own.
//!
//! An answer whose list is missing, has another length than the batch, or an item without a
//! status is not a delivery: framesync cannot tell which records the RS took, so the request
//! is [`Verdict::Broken`] — the frame fails loudly and pushing stops, the records keep their
//! key for a later run. Not a retry: the same RS would answer the same way, and failures to
//! retry count against the records until they are dead-lettered, when it is the RS or the
//! config (a wrong pointer) that is wrong.

use serde_json::Value;

use super::{Statuses, Verdict};
use crate::config::ItemsSpec;
use crate::http;
use crate::plural::plural;

/// Follows a JSON pointer in which a `*` segment stands for the one member of an object (the
/// operation name of a `_bulk` item: `index`, `create`, ...).
pub fn find<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    let mut at = value;
    for segment in pointer.strip_prefix('/')?.split('/') {
        at = match (segment, at) {
            ("*", Value::Object(map)) if map.len() == 1 => map.values().next()?,
            (segment, Value::Object(map)) => map.get(&segment.replace("~1", "/").replace("~0", "~"))?,
            (segment, Value::Array(items)) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// What a 2xx answer with per-item results says of the `count` records sent.
pub fn judge(spec: &ItemsSpec, body: &str, count: usize, statuses: Statuses) -> Verdict {
    let broken = |why: String| Verdict::Broken {
        reason: format!(
            "per-item results (sink.items): {why}; framesync cannot tell which records the RS took: {}",
            http::excerpt(body)
        ),
    };
    let Ok(json) = serde_json::from_str::<Value>(body) else { return broken("the answer is not JSON".into()) };
    if let Some(errors) = &spec.errors
        && find(&json, errors) == Some(&Value::Bool(false))
    {
        return Verdict::Acknowledged;
    }
    let Some(list) = find(&json, &spec.list).and_then(Value::as_array) else {
        return broken(format!("no array at {:?}", spec.list));
    };
    if list.len() != count {
        return broken(format!("{} for {}", plural(list.len(), "result"), plural(count, "record")));
    }
    let mut verdicts = Vec::with_capacity(count);
    for (n, item) in list.iter().enumerate() {
        let Some(status) = find(item, &spec.status).and_then(status_of) else {
            return broken(format!("item {n} has no status at {:?}", spec.status));
        };
        let reason = spec.reason.as_deref().and_then(|p| find(item, p)).map_or_else(
            || http::excerpt(&item.to_string()),
            |r| http::excerpt(r.as_str().map_or(&r.to_string(), |s| s)),
        );
        verdicts.push(classify(status, reason, statuses));
    }
    Verdict::PerItem(verdicts)
}

fn status_of(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// One item's status, as a request's would be: 2xx or `already_there` acknowledged, 408, 425,
/// 429 and 5xx to retry, `reject` (and 413) a bad record, anything else the RS or the config
/// is wrong.
fn classify(status: u16, reason: String, statuses: Statuses) -> Verdict {
    match status {
        200..=299 => Verdict::Acknowledged,
        s if statuses.already_there.contains(&s) => Verdict::Acknowledged,
        408 | 425 | 429 | 500..=599 => Verdict::RetryLater {
            reason: format!("item status {status}: {reason}"),
            retry_after: None,
            status: Some(status),
        },
        413 => Verdict::Rejected { status, response: reason },
        s if statuses.reject.contains(&s) => Verdict::Rejected { status, response: reason },
        _ => Verdict::Broken {
            reason: format!("item status {status}, which says the RS or the config is wrong: {reason}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUSES: Statuses = Statuses { already_there: &[409], reject: &[400, 422] };

    fn bulk() -> ItemsSpec {
        ItemsSpec {
            list: "/items".into(),
            status: "/*/status".into(),
            errors: Some("/errors".into()),
            reason: Some("/*/error/reason".into()),
        }
    }

    const ES: &str = r#"{"took":3,"errors":true,"items":[
        {"index":{"_id":"a","status":201}},
        {"create":{"_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
        {"index":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
        {"index":{"_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
        {"index":{"_id":"e","status":"503"}}
    ]}"#;

    #[test]
    fn an_elasticsearch_bulk_answer_gives_one_verdict_per_record() {
        let Verdict::PerItem(verdicts) = judge(&bulk(), ES, 5, STATUSES) else { panic!("per item") };
        assert_eq!(verdicts[0], Verdict::Acknowledged);
        assert_eq!(verdicts[1], Verdict::Acknowledged, "409 is already there");
        assert_eq!(
            verdicts[2],
            Verdict::RetryLater { reason: "item status 429: queue full".into(), retry_after: None, status: Some(429) }
        );
        assert_eq!(verdicts[3], Verdict::Rejected { status: 400, response: "failed to parse field [n]".into() });
        assert!(
            matches!(&verdicts[4], Verdict::RetryLater { status: Some(503), reason, .. } if reason.contains(r#""status":"503""#)),
            "no reason: the item itself; a status as text"
        );
    }

    #[test]
    fn errors_false_acknowledges_every_item_without_reading_them() {
        assert_eq!(judge(&bulk(), r#"{"errors":false,"items":[]}"#, 3, STATUSES), Verdict::Acknowledged);
        let without = ItemsSpec { errors: None, ..bulk() };
        assert!(matches!(judge(&without, r#"{"errors":false,"items":[]}"#, 3, STATUSES), Verdict::Broken { .. }));
        let absent = r#"{"items":[{"index":{"status":200}}]}"#;
        assert_eq!(judge(&bulk(), absent, 1, STATUSES), Verdict::PerItem(vec![Verdict::Acknowledged]));
    }

    #[test]
    fn a_list_of_another_length_or_an_item_without_status_is_not_a_delivery() {
        for (body, count, why) in [
            (ES, 4, "5 results for 4 records"),
            (ES, 6, "5 results for 6 records"),
            (r#"{"errors":true}"#, 1, "no array at \"/items\""),
            (r#"{"errors":true,"items":[{"index":{"_id":"a"}}]}"#, 1, "item 0 has no status"),
            (r#"{"errors":true,"items":[{"index":{},"extra":{}}]}"#, 1, "item 0 has no status"),
            ("<html>", 1, "not JSON"),
        ] {
            let Verdict::Broken { reason } = judge(&bulk(), body, count, STATUSES) else { panic!("{why}") };
            assert!(reason.contains(why), "{reason}");
        }
    }

    #[test]
    fn an_item_status_that_blames_the_rs_is_broken() {
        let body = r#"{"items":[{"index":{"status":404,"error":{"reason":"no such index [x]"}}}]}"#;
        let Verdict::PerItem(verdicts) = judge(&bulk(), body, 1, STATUSES) else { panic!() };
        assert!(matches!(&verdicts[0], Verdict::Broken { reason } if reason.contains("no such index")));
    }

    #[test]
    fn pointers_take_a_star_for_the_one_member_of_an_object() {
        let v: Value = serde_json::json!({"a/b": [{"x": {"s": 1}}], "m": {"p": 1, "q": 2}});
        assert_eq!(find(&v, "/a~1b/0/*/s"), Some(&serde_json::json!(1)));
        assert_eq!(find(&v, "/m/*"), None, "two members: no one to pick");
        assert_eq!(find(&v, ""), Some(&v));
        assert_eq!(find(&v, "/a~1b/1"), None);
    }
}
