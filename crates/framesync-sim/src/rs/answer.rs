//! How the simulated RS reads a request body and answers it: a JSON object or array, or
//! NDJSON (one record a line, with Elasticsearch-style action lines skipped and checked); and
//! the answer modes — plain (the whole request stored or refused with 400), bulk (200 with a
//! result per record, Elasticsearch's `_bulk` shape) and ClickHouse-like (a bad record fails
//! the whole request with 500 and a `Code: 27` text).

use serde_json::{Value, json};

/// How the RS answers a request (`--rs-answer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RsAnswer {
    /// 201 `{"stored": N}`; a bad record refuses the whole request with 400.
    #[default]
    Plain,
    /// 200 with `{"errors": bool, "items": [{"index": {"_id", "status", "error"}}]}`: bad
    /// records answered 400 and `--rs-item-429-rate` of the others 429, each not stored; the
    /// rest stored.
    Bulk,
    /// 200 with an empty body; a bad record fails the whole request with 500 and a body
    /// starting "Code: 27" (ClickHouse's CANNOT_PARSE_INPUT_ASSERTION_FAILED), nothing stored.
    Clickhouse,
}

/// A received record: its UID as text and its JSON as stored.
#[derive(Debug)]
pub struct Incoming {
    pub uid: String,
    pub body: String,
}

/// The records of a body, each readable or not (why not). Err: the body as a whole is not
/// something the RS reads.
pub fn records(body: &[u8], ndjson: bool, uid_pointer: &str) -> Result<Vec<Result<Incoming, String>>, String> {
    let items = if ndjson { ndjson_items(body)? } else { json_items(body)? };
    if items.is_empty() {
        return Err("empty batch".into());
    }
    let parse = |(n, (item, action)): (usize, (Value, Option<String>))| incoming(&item, n, uid_pointer, action);
    Ok(items.into_iter().enumerate().map(parse).collect())
}

fn json_items(body: &[u8]) -> Result<Vec<(Value, Option<String>)>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match value {
        Value::Object(_) => Ok(vec![(value, None)]),
        Value::Array(items) => Ok(items.into_iter().map(|i| (i, None)).collect()),
        _ => Err("body must be a JSON object or an array of objects".into()),
    }
}

/// One record a line; an action line (`{"index": {"_id": ...}}`) names the next record's UID.
fn ndjson_items(body: &[u8]) -> Result<Vec<(Value, Option<String>)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("NDJSON body: the last line does not end in \\n".into());
    }
    let mut items = Vec::new();
    let mut action: Option<Option<String>> = None;
    for (n, line) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("NDJSON line {}: {e}", n + 1))?;
        if let Some(id) = action_id(&value) {
            action = Some(id);
            continue;
        }
        items.push((value, action.take().flatten()));
    }
    if action.is_some() {
        return Err("NDJSON body: an action line with no record after it".into());
    }
    Ok(items)
}

/// `Some(_id)` of an action line, None for a record.
fn action_id(value: &Value) -> Option<Option<String>> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    let (op, meta) = map.iter().next()?;
    if !["index", "create", "update", "delete"].contains(&op.as_str()) || !meta.is_object() {
        return None;
    }
    Some(meta.get("_id").and_then(Value::as_str).map(str::to_owned))
}

fn incoming(item: &Value, n: usize, uid_pointer: &str, action: Option<String>) -> Result<Incoming, String> {
    if !item.is_object() {
        return Err(format!("item {n} is not a JSON object"));
    }
    let uid = match item.pointer(uid_pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("item {n} has no string or number UID at `{uid_pointer}`")),
    };
    if let Some(id) = action.filter(|id| *id != uid) {
        return Err(format!("item {n}: the action line's _id {id:?} is not the record's UID {uid:?}"));
    }
    if item.get("valid") == Some(&Value::Bool(false)) {
        return Err(format!("record {uid} rejected: invalid"));
    }
    Ok(Incoming { uid, body: item.to_string() })
}

/// What one record of a bulk request met.
pub enum ItemFate {
    Stored(String),
    Refused { uid: Option<String>, reason: String },
    Busy(String),
}

/// The bulk answer: one result per record, in order.
pub fn bulk_answer(fates: &[ItemFate]) -> Value {
    let items: Vec<Value> = fates
        .iter()
        .map(|fate| match fate {
            ItemFate::Stored(uid) => json!({ "index": { "_id": uid, "status": 201, "result": "created" } }),
            ItemFate::Refused { uid, reason } => json!({ "index": { "_id": uid, "status": 400,
                "error": { "type": "mapper_parsing_exception", "reason": reason } } }),
            ItemFate::Busy(uid) => json!({ "index": { "_id": uid, "status": 429,
                "error": { "type": "es_rejected_execution_exception", "reason": "rejected execution: queue full" } } }),
        })
        .collect();
    let errors = fates.iter().any(|f| !matches!(f, ItemFate::Stored(_)));
    json!({ "errors": errors, "items": items })
}

/// ClickHouse's answer to an INSERT with a record it cannot parse.
pub fn clickhouse_parse_error(row: usize, why: &str) -> Value {
    Value::String(format!(
        "Code: 27. DB::Exception: Cannot parse input: {why}: (at row {}): While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 24.8.4.13 (official build))\n",
        row + 1
    ))
}
