use serde_json::json;

use super::*;

#[test]
fn presence_is_read_from_every_kind_of_value() {
    let present =
        [json!(1), json!(7.5), json!("1"), json!("42"), json!(" 3 "), json!(true), json!([0]), json!({"n": 0})];
    for value in present {
        assert_eq!(presence(&value), Ok(true), "{value}");
    }
    // "yes", "abc": a non-empty string other than "0" says present.
    for value in [json!("yes"), json!("abc"), json!("NaN")] {
        assert_eq!(presence(&value), Ok(true), "{value}");
    }
    let absent =
        [json!(0), json!(0.0), json!("0"), json!("0.0"), json!(false), json!(null), json!([]), json!({}), json!("")];
    for value in absent {
        assert_eq!(presence(&value), Ok(false), "{value}");
    }
    for value in [json!(-1), json!("-2")] {
        let error = presence(&value).unwrap_err();
        assert!(error.contains("not a count"), "{value}: {error}");
    }
}

#[test]
fn clickhouse_counts_quoted_as_strings_are_read_at_the_pointer() {
    let answer = json!({"meta": [{"name": "n", "type": "UInt64"}], "data": [{"n": "1"}], "rows": 1});
    assert_eq!(present_at(&answer, "/data/0/n"), Ok(true));
    let none = json!({"data": [{"n": "0"}], "rows": 1});
    assert_eq!(present_at(&none, "/data/0/n"), Ok(false));
    assert_eq!(present_at(&json!(1), ""), Ok(true), "the pointer \"\" is the whole answer");
}

/// Pins a lookup that cannot say absent being read as "absent": an answer without the pointer
/// is an error.
#[test]
fn an_answer_without_the_pointer_is_an_error_not_absent() {
    let error = present_at(&json!({"data": []}), "/data/0/n").unwrap_err();
    assert!(error.contains("no value at \"/data/0/n\"") && error.contains("not believed"), "{error}");
}

#[test]
fn a_batched_answer_lists_the_uids_present_as_strings_or_in_objects() {
    let asked = ["a", "b'\"\\", "c,d\n%"];
    let strings = json!({"found": ["c,d\n%", "a"]});
    assert_eq!(found(&strings, "/found", "", &asked), Ok(vec![true, false, true]));
    let objects = json!({"data": [{"uid": "b'\"\\"}], "rows": 1});
    assert_eq!(found(&objects, "/data", "/uid", &asked), Ok(vec![false, true, false]));
    assert_eq!(found(&json!([]), "", "", &asked), Ok(vec![false, false, false]), "an empty list: all absent");
    assert_eq!(found(&json!([17]), "", "", &["17"]), Ok(vec![true]), "a numeric UID");
    assert_eq!(found(&json!(["a", "a"]), "", "", &["a", "a"]), Ok(vec![true, true]), "listed or asked twice");
}

#[test]
fn a_batched_answer_that_lists_a_uid_not_asked_for_is_an_error() {
    let error = found(&json!({"data": [{"uid": "a"}, {"uid": "zzz"}]}), "/data", "/uid", &["a", "b"]).unwrap_err();
    assert!(error.contains("\"zzz\", a UID that was not asked for"), "{error}");
}

#[test]
fn a_batched_answer_without_its_list_or_uids_is_an_error() {
    let missing = found(&json!({"rows": 0}), "/data", "/uid", &["a"]).unwrap_err();
    assert!(missing.contains("no value at \"/data\"") && missing.contains("not believed"), "{missing}");
    let not_list = found(&json!({"data": {"uid": "a"}}), "/data", "/uid", &["a"]).unwrap_err();
    assert!(not_list.contains("not an array"), "{not_list}");
    let no_uid = found(&json!({"data": [{"id": "a"}]}), "/data", "/uid", &["a"]).unwrap_err();
    assert!(no_uid.contains("no UID at \"/uid\""), "{no_uid}");
    let not_text = found(&json!({"data": [{"uid": null}]}), "/data", "/uid", &["a"]).unwrap_err();
    assert!(not_text.contains("not a string"), "{not_text}");
}

#[test]
fn a_status_lookup_says_present_or_absent_and_nothing_else() {
    assert_eq!(by_status(200, "", "sink.lookup_url"), Ok(true));
    assert_eq!(by_status(204, "", "sink.lookup_url"), Ok(true));
    assert_eq!(by_status(404, "", "sink.lookup_url"), Ok(false));
    assert_eq!(by_status(410, "", "sink.lookup_url"), Ok(false));
    for status in [301, 302, 400, 401, 403, 405, 429, 500, 503] {
        assert!(by_status(status, "/login", "sink.lookup_url").is_err(), "{status}");
    }
    let redirect = by_status(302, "/login", "sink.lookup_url").unwrap_err();
    assert!(redirect.contains("/login") && redirect.contains("sink.lookup_url"), "{redirect}");
}

#[test]
fn an_answer_read_at_a_pointer_must_be_2xx_json() {
    let reply = |status: u16, body: &str| Reply { status, body: body.into(), location: "/elsewhere".into() };
    assert_eq!(json_answer(&reply(200, "[1]"), "sink.lookup"), Ok(json!([1])));
    for (status, body) in [(404, r#"{"data":[]}"#), (500, "{}"), (302, "")] {
        assert!(json_answer(&reply(status, body), "sink.lookup").is_err(), "{status}: a 404 is not absent here");
    }
    let html = json_answer(&reply(200, "<html>maintenance</html>"), "sink.lookup").unwrap_err();
    assert!(html.contains("not JSON") && html.contains("maintenance"), "{html}");
}
