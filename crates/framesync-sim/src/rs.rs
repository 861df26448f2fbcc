//! The simulated receiving server and its SQLite database (the "DB" of the design's picture):
//! `POST /rs/ingest` stores records, honoring `Idempotency-Key` or (by flag) ignoring it, and
//! `GET /rs/ingest/{uid}` looks one up (`/rs/query` looks UIDs up by query: [`crate::query`]).
//! Each request is one transaction, so a request is stored whole or not at all, and its key is
//! recorded with its records.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Value, json};

/// `IF NOT EXISTS` everywhere: the simulator may be restarted on the same database.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL,
    idempotency_key TEXT,
    body TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_uid ON records (uid);
-- The answer given to each key, replayed when the key comes again.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
";

pub struct Rs {
    conn: Mutex<Connection>,
    uid_pointer: String,
    honor_keys: bool,
}

/// The RS's answer to an ingest request.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The answer stored for an `Idempotency-Key` seen before; nothing was stored this time.
    pub replayed: bool,
}

/// A received record: its UID as text and its JSON as stored.
#[derive(Debug)]
struct Incoming {
    uid: String,
    body: String,
}

impl Rs {
    pub fn open(path: &Path, uid_pointer: &str, honor_keys: bool) -> Result<Rs> {
        let context = || format!("opening the RS database {}", path.display());
        let conn = Connection::open(path).with_context(context)?;
        configure(&conn).with_context(context)?;
        conn.execute_batch(SCHEMA).with_context(context)?;
        Ok(Rs { conn: Mutex::new(conn), uid_pointer: uid_pointer.into(), honor_keys })
    }

    pub fn ingest(&self, key: Option<&str>, body: &[u8], now_ms: i64) -> Result<Reply> {
        let records = match parse_records(body, &self.uid_pointer) {
            Ok(records) => records,
            Err(message) => return Ok(Reply::fresh(400, json!({ "error": message }))),
        };
        let honored_key = key.filter(|_| self.honor_keys);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(reply) = honored_key.map(|k| replay(&tx, k)).transpose()?.flatten() {
            return Ok(reply);
        }
        insert_records(&tx, &records, key, now_ms)?;
        let reply = Reply::fresh(201, json!({ "stored": records.len() }));
        if let Some(key) = honored_key {
            remember(&tx, key, &reply, now_ms)?;
        }
        tx.commit()?;
        Ok(reply)
    }

    /// How many stored records carry this UID.
    pub fn count(&self, uid: &str) -> Result<u64> {
        let sql = "SELECT COUNT(*) FROM records WHERE uid = ?1";
        Ok(self.lock().query_row(sql, [uid], |row| row.get(0))?)
    }

    /// Every stored UID with the number of rows that carry it.
    pub fn uid_counts(&self) -> Result<HashMap<String, u64>> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT uid, COUNT(*) FROM records GROUP BY uid")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A panic inside a request drops its transaction, which rolls back, so the connection is
    /// still sound after a poisoned lock.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reply {
    fn fresh(status: u16, body: Value) -> Reply {
        Reply { status, body, replayed: false }
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "could not switch to WAL mode (got `{mode}`)");
    // NORMAL under WAL survives a killed process, which is what the crash tests do to us.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// The whole request is rejected on the first bad record, so nothing of it is stored.
fn parse_records(body: &[u8], uid_pointer: &str) -> Result<Vec<Incoming>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let items = match value {
        Value::Object(_) => vec![value],
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => return Err("empty batch".into()),
        _ => return Err("body must be a JSON object or an array of objects".into()),
    };
    let parse = |(n, item)| incoming(item, n, uid_pointer);
    items.iter().enumerate().map(parse).collect()
}

fn incoming(item: &Value, n: usize, uid_pointer: &str) -> Result<Incoming, String> {
    if !item.is_object() {
        return Err(format!("item {n} is not a JSON object"));
    }
    let uid = match item.pointer(uid_pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(format!("item {n} has no string or number UID at `{uid_pointer}`"));
        }
    };
    if item.get("valid") == Some(&Value::Bool(false)) {
        return Err(format!("record {uid} rejected: invalid"));
    }
    Ok(Incoming { uid, body: item.to_string() })
}

fn replay(tx: &Transaction, key: &str) -> Result<Option<Reply>> {
    let sql = "SELECT status, response FROM idempotency_keys WHERE key = ?1";
    let row: Option<(u16, String)> = tx.query_row(sql, [key], |row| Ok((row.get(0)?, row.get(1)?))).optional()?;
    let Some((status, response)) = row else {
        return Ok(None);
    };
    let body = serde_json::from_str(&response).context("a stored idempotent response")?;
    Ok(Some(Reply { status, body, replayed: true }))
}

fn insert_records(tx: &Transaction, records: &[Incoming], key: Option<&str>, now_ms: i64) -> Result<()> {
    let sql = "INSERT INTO records (uid, idempotency_key, body, received_at) VALUES (?1, ?2, ?3, ?4)";
    let mut statement = tx.prepare_cached(sql)?;
    for record in records {
        statement.execute(params![record.uid, key, record.body, now_ms])?;
    }
    Ok(())
}

fn remember(tx: &Transaction, key: &str, reply: &Reply, now_ms: i64) -> Result<()> {
    let sql = "INSERT INTO idempotency_keys (key, status, response, received_at) VALUES (?1, ?2, ?3, ?4)";
    tx.execute(sql, params![key, reply.status, reply.body.to_string(), now_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(dir: &tempfile::TempDir, honor_keys: bool) -> Rs {
        Rs::open(&dir.path().join("rs.db"), "/id", honor_keys).unwrap()
    }

    fn post(rs: &Rs, key: Option<&str>, body: &str) -> Reply {
        rs.ingest(key, body.as_bytes(), 1).unwrap()
    }

    #[test]
    fn a_repeated_key_replays_the_answer_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs(&dir, true);
        let first = post(&rs, Some("ev-1"), r#"{"id": "ev-1"}"#);
        assert_eq!(first, Reply::fresh(201, json!({ "stored": 1 })));
        let again = post(&rs, Some("ev-1"), r#"{"id": "ev-1"}"#);
        assert_eq!(again, Reply { replayed: true, ..first });
        assert_eq!(rs.count("ev-1").unwrap(), 1);
    }

    #[test]
    fn ignoring_keys_stores_every_post() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs(&dir, false);
        post(&rs, Some("ev-1"), r#"{"id": "ev-1"}"#);
        let again = post(&rs, Some("ev-1"), r#"{"id": "ev-1"}"#);
        assert_eq!(again.status, 201);
        assert_eq!(rs.count("ev-1").unwrap(), 2);
    }

    #[test]
    fn a_batch_is_stored_whole_with_numeric_uids_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs(&dir, true);
        let reply = post(&rs, Some("batch-1"), r#"[{"id": 17}, {"id": "b"}, {"id": 17}]"#);
        assert_eq!(reply.body, json!({ "stored": 3 }));
        let counts = rs.uid_counts().unwrap();
        assert_eq!(counts, HashMap::from([("17".to_string(), 2), ("b".to_string(), 1)]));
    }

    #[test]
    fn one_bad_record_rejects_the_whole_request() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs(&dir, true);
        let poison = post(&rs, Some("k"), r#"[{"id": "a"}, {"id": "p", "valid": false}]"#);
        assert_eq!(poison, Reply::fresh(400, json!({ "error": "record p rejected: invalid" })));
        let no_uid = post(&rs, Some("k"), r#"[{"id": "a"}, {"uid": "x"}]"#);
        assert_eq!(no_uid.status, 400);
        for bad in ["not json", "[]", "5", "[1]", r#"{"id": null}"#] {
            assert_eq!(post(&rs, None, bad).status, 400, "{bad}");
        }
        assert!(rs.uid_counts().unwrap().is_empty());
        // A rejected request does not burn its key: the corrected request is stored.
        assert_eq!(post(&rs, Some("k"), r#"{"id": "a"}"#).status, 201);
    }

    #[test]
    fn the_uid_pointer_can_reach_into_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let rs = Rs::open(&dir.path().join("rs.db"), "/meta/event_id", true).unwrap();
        assert_eq!(post(&rs, None, r#"{"meta": {"event_id": "e9"}}"#).status, 201);
        assert_eq!(rs.count("e9").unwrap(), 1);
    }

    #[test]
    fn reopening_the_database_keeps_records_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        post(&rs(&dir, true), Some("ev-1"), r#"{"id": "ev-1"}"#);
        let reopened = rs(&dir, true);
        assert!(post(&reopened, Some("ev-1"), r#"{"id": "ev-1"}"#).replayed);
        assert_eq!(reopened.count("ev-1").unwrap(), 1);
    }
}
