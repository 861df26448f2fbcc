//! The model RS's newer shapes: a batch answered with a result per record (Elasticsearch's
//! `_bulk`: 201 stored, 409 already there, 429 later, 400 a bad record, 500 a crashing one),
//! and lookups by a JSON pointer or batched — each with the lies of the fault phase: a list of
//! results of the wrong length or whose items say nothing; a lookup answer without its
//! pointer, or listing a UID that was not asked for; and, where the lookup lies, "present" for
//! every UID.

use serde_json::{Value, json};

use super::net::{Net, Reply, Request, html, json};
use super::records::Poison;
use super::rs::{after_storing, remember_key, store};
use super::scenario::Lookup;
use super::shapes::LookupBy;

/// What ClickHouse answers for a record it cannot parse.
pub const CODE_27: &str = "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'oops': (at row 1). (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 24.8.4.13 (official build))";

/// A batch answered item by item: what each record became, in the order sent. The records it
/// stores are stored whatever the answer then says (a lie too).
pub fn per_item(net: &mut Net, request: &Request, uids: &[String], key: &str) -> Reply {
    if net.scenario.capacity.is_some_and(|c| uids.len() > c) {
        net.count("rs-413");
        return json(413, r#"{"error":"batch too large"}"#);
    }
    let (mut items, mut stored, mut errors) = (Vec::new(), Vec::new(), false);
    for uid in uids {
        let poison = net.catalog.by_uid(uid).map_or(Poison::None, |r| r.poison);
        let (status, reason) = match poison {
            Poison::Bad => (net.scenario.poison_status, "mapper_parsing_exception: failed to parse field [amount]"),
            Poison::Crash => (500, "NullPointerException"),
            Poison::None if net.faults_on && net.dice.chance(net.scenario.shapes.item_retry_rate) => {
                net.count("rs-item-429");
                (429, "es_rejected_execution_exception: queue full")
            }
            Poison::None if net.rs.has(uid) || stored.contains(uid) => {
                net.count("rs-item-409");
                (409, "version_conflict_engine_exception: document already exists")
            }
            Poison::None => {
                stored.push(uid.clone());
                (201, "")
            }
        };
        errors |= status >= 300;
        let item = if status < 300 {
            json!({"create": {"_id": uid, "status": status}})
        } else {
            json!({"create": {"_id": uid, "status": status, "error": {"reason": reason}}})
        };
        items.push(item);
    }
    store(net, &stored, key);
    let lie = net.faults_on && net.dice.chance(net.scenario.shapes.rs_lie_rate);
    if lie {
        errors = true;
        if net.dice.chance(0.5) {
            net.count("rs-lie-items-length");
            if items.len() > 1 && net.dice.chance(0.5) {
                items.pop();
            } else {
                items.push(json!({"create": {"_id": "unasked", "status": 201}}));
            }
        } else {
            net.count("rs-lie-items-no-status");
            items = uids.iter().map(|uid| json!({"create": {"_id": uid}})).collect();
        }
    }
    let answer = json!({"took": 3, "errors": errors, "items": items}).to_string();
    if !lie {
        remember_key(net, request, key.to_owned(), 200, &answer);
    }
    after_storing(net, stored.len(), Some(&answer))
}

/// The UIDs a lookup asks about: `uid` (one), `ids` (a JSON array), or a POSTed `{"uids": [...]}`.
pub fn asked(request: &Request) -> Vec<String> {
    let list = |v: Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|u| u.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    if let Some(uid) = request.query("uid") {
        return vec![uid];
    }
    if let Some(ids) = request.query("ids") {
        return serde_json::from_str(&ids).map(list).unwrap_or_default();
    }
    serde_json::from_str::<Value>(&request.body).map(|v| list(v["uids"].clone())).unwrap_or_default()
}

/// A lookup by pointer or batched: the truth, or in the fault phase a lie framesync must take
/// for an error; where the lookup always lies, "present" for every UID.
pub fn lookup(net: &mut Net, request: &Request) -> Reply {
    let uids = asked(request);
    let by = net.scenario.shapes.lookup_by;
    let expected = match by {
        LookupBy::Pointer => request.method == "GET" && uids.len() == 1,
        LookupBy::Batched { size, post, .. } => (request.method == "POST") == post && (1..=size).contains(&uids.len()),
        LookupBy::Status => false,
    };
    if !expected {
        net.rs.violations.push(format!("{} {}: a lookup the RS does not serve", request.method, request.target));
        return json(400, r#"{"error":"bad lookup"}"#);
    }
    if net.scenario.lookup == Lookup::LiesAlways {
        return present_for_all(net, request);
    }
    if net.faults_on && net.dice.chance(net.scenario.rs_fault_rate / 2.0) {
        net.count("rs-lookup-503");
        return json(503, "unavailable");
    }
    let lie = net.faults_on && net.dice.chance(net.scenario.shapes.rs_lie_rate);
    match by {
        LookupBy::Pointer if lie => {
            net.count("rs-lie-lookup-no-pointer");
            json(200, r#"{"meta":[{"name":"n"}],"data":[],"rows":0}"#)
        }
        LookupBy::Pointer => {
            let n = u8::from(net.rs.has(&uids[0]));
            // ClickHouse quotes 64-bit integers: a count comes as text in some answers.
            let n = if net.dice.chance(0.5) { json!(n) } else { json!(n.to_string()) };
            json(200, &json!({"data": [{"n": n}], "rows": 1}).to_string())
        }
        _ => {
            let mut held: Vec<String> = uids.iter().filter(|u| net.rs.has(u)).cloned().collect();
            if lie {
                net.count("rs-lie-lookup-unasked-uid");
                held.push(format!("{}-not-asked", uids[0]));
            }
            found(by, &held)
        }
    }
}

/// "Present" for every UID asked: what a lookup that lies says.
pub fn present_for_all(net: &mut Net, request: &Request) -> Reply {
    let uids = asked(request);
    net.count("rs-lookup-lie");
    net.rs.lied_about.extend(uids.iter().cloned());
    match net.scenario.shapes.lookup_by {
        LookupBy::Status => html(200),
        LookupBy::Pointer => json(200, r#"{"data":[{"n":1}],"rows":1}"#),
        by @ LookupBy::Batched { .. } => found(by, &uids),
    }
}

/// A batched lookup's answer listing `held`.
fn found(by: LookupBy, held: &[String]) -> Reply {
    let objects = matches!(by, LookupBy::Batched { objects: true, .. });
    let data: Vec<Value> = held.iter().map(|u| if objects { json!({"uid": u}) } else { json!(u) }).collect();
    json(200, &json!({"data": data, "rows": data.len()}).to_string())
}
