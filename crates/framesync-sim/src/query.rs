//! The RS's lookups by query, shaped like a database's HTTP interface answering in ClickHouse's
//! `FORMAT JSON`: `/rs/query?uid=U` answers `{"data": [{"n": "<rows>"}]}`, the count quoted as
//! ClickHouse quotes 64-bit integers; `/rs/query?uids=<JSON array>` (or `uids_hex=<hex,hex>`)
//! answers `{"data": [{"uid": "..."}, ...]}`, listing the UIDs asked for that the RS holds. A
//! POST takes the same names as a JSON object body (`{"uids": [...]}`).
//!
//! Two fault switches make it misbehave: `rs_lookup_lies` answers present for every UID (a
//! count of 1, every UID asked listed), `rs_lookup_unreadable` answers `{"rows": 0}`, without
//! `data`.

use anyhow::Result;
use serde_json::{Value, json};

use crate::http::Request;
use crate::rs::Rs;

pub const PATH: &str = "/rs/query";

/// What a lookup asks for.
#[derive(Debug, PartialEq)]
pub enum Asked {
    One(String),
    Many(Vec<String>),
}

/// How the answer misbehaves, from the fault switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mood {
    pub lies: bool,
    pub unreadable: bool,
}

/// The answer to a lookup; Ok(Err) for a request that asks nothing readable (a 400).
pub fn answer(rs: &Rs, request: &Request, mood: Mood) -> Result<Result<Value, String>> {
    let asked = match asked(request) {
        Ok(asked) => asked,
        Err(message) => return Ok(Err(message)),
    };
    if mood.unreadable {
        return Ok(Ok(json!({ "rows": 0 })));
    }
    Ok(Ok(match asked {
        Asked::One(uid) => {
            let rows = if mood.lies { 1 } else { rs.count(&uid)? };
            json!({ "data": [{ "n": rows.to_string() }], "rows": 1 })
        }
        Asked::Many(uids) => {
            let mut found = Vec::new();
            for uid in uids {
                if mood.lies || rs.count(&uid)? > 0 {
                    found.push(json!({ "uid": uid }));
                }
            }
            json!({ "rows": found.len(), "data": found })
        }
    }))
}

/// The UIDs a request asks for: from its query string (a GET) or its JSON body (a POST).
pub fn asked(request: &Request) -> Result<Asked, String> {
    let body: Value = match request.method.as_str() {
        "POST" => serde_json::from_slice(&request.body).map_err(|e| format!("the body is not JSON: {e}"))?,
        _ => Value::Object(request.query.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    if let Some(uid) = text("uid") {
        return Ok(Asked::One(uid.to_owned()));
    }
    if let Some(list) = body.get("uids") {
        let list = match list {
            Value::String(json) => serde_json::from_str(json).map_err(|e| format!("uids is not a JSON array: {e}"))?,
            other => other.clone(),
        };
        let uids: Option<Vec<String>> =
            list.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
        return uids.map(Asked::Many).ok_or_else(|| "uids must be a JSON array of strings".into());
    }
    if let Some(hex) = text("uids_hex") {
        let uids = hex.split(',').filter(|h| !h.is_empty()).map(unhex).collect::<Result<_, _>>()?;
        return Ok(Asked::Many(uids));
    }
    Err("ask for uid=U, uids=[JSON array of UIDs] or uids_hex=hex,hex".into())
}

fn unhex(hex: &str) -> Result<String, String> {
    let bad = || format!("{hex:?} is not hex-encoded UTF-8");
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;

    const NASTY: &str = "a'\"\\%,\n;";

    fn get(target: &str) -> Request {
        parse_request(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).unwrap()
    }

    fn post(body: &str) -> Request {
        let head = format!("POST {PATH} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        parse_request(head.as_bytes()).unwrap()
    }

    fn rs_holding(dir: &tempfile::TempDir, uids: &[&str]) -> Rs {
        let rs = Rs::open(&dir.path().join("rs.db"), "/id", false).unwrap();
        for uid in uids {
            rs.ingest(None, json!({ "id": uid }).to_string().as_bytes(), 1).unwrap();
        }
        rs
    }

    fn encoded(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn one_uid_is_answered_with_its_count_quoted_like_clickhouse() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs_holding(&dir, &[NASTY, NASTY]);
        let held = answer(&rs, &get(&format!("{PATH}?uid={}", encoded(NASTY))), Mood::default()).unwrap();
        assert_eq!(held.unwrap()["data"], json!([{ "n": "2" }]));
        let absent = answer(&rs, &get(&format!("{PATH}?uid=b")), Mood::default()).unwrap();
        assert_eq!(absent.unwrap()["data"], json!([{ "n": "0" }]));
    }

    #[test]
    fn many_uids_are_answered_with_the_list_of_those_held() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs_holding(&dir, &[NASTY, "c"]);
        let uids = json!([NASTY, "b", "c"]).to_string();
        let by_json = answer(&rs, &get(&format!("{PATH}?uids={}", encoded(&uids))), Mood::default()).unwrap();
        assert_eq!(by_json.unwrap()["data"], json!([{ "uid": NASTY }, { "uid": "c" }]));
        let hex: Vec<String> = [NASTY, "b"].iter().map(|u| u.bytes().map(|b| format!("{b:02x}")).collect()).collect();
        let by_hex = answer(&rs, &get(&format!("{PATH}?uids_hex={}", hex.join(","))), Mood::default()).unwrap();
        assert_eq!(by_hex.unwrap()["data"], json!([{ "uid": NASTY }]));
        let by_post = answer(&rs, &post(&json!({ "uids": ["b", "c"] }).to_string()), Mood::default()).unwrap();
        assert_eq!(by_post.unwrap()["data"], json!([{ "uid": "c" }]));
    }

    #[test]
    fn a_lying_or_unreadable_lookup_says_so_for_everything() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs_holding(&dir, &[]);
        let lies = Mood { lies: true, unreadable: false };
        assert_eq!(answer(&rs, &get(&format!("{PATH}?uid=x")), lies).unwrap().unwrap()["data"], json!([{ "n": "1" }]));
        let many = get(&format!("{PATH}?uids={}", encoded(r#"["x","y"]"#)));
        assert_eq!(answer(&rs, &many, lies).unwrap().unwrap()["data"], json!([{ "uid": "x" }, { "uid": "y" }]));
        let unreadable = Mood { lies: false, unreadable: true };
        assert_eq!(answer(&rs, &many, unreadable).unwrap().unwrap(), json!({ "rows": 0 }));
    }

    #[test]
    fn a_request_that_asks_nothing_readable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs_holding(&dir, &[]);
        for target in ["", "?uids=notjson", "?uids=%5B1%5D", "?uids_hex=zz", "?uids_hex=abc"] {
            assert!(answer(&rs, &get(&format!("{PATH}{target}")), Mood::default()).unwrap().is_err(), "{target}");
        }
    }
}
