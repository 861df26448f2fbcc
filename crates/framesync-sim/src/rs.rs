//! The simulated receiving server and its SQLite database (the "DB" of the design's picture):
//! `POST /rs/ingest` stores records, honoring `Idempotency-Key` or (by flag) ignoring it, and
//! `GET /rs/ingest/{uid}` looks one up (`/rs/query` looks UIDs up by query: [`crate::query`]).
//! Each request is one transaction, so what a request stores is stored whole or not at all, and
//! its key is recorded with its records. How a body is read and answered (plain, bulk,
//! ClickHouse-like) is in [`answer`].

pub mod answer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Value, json};

use self::answer::{Incoming, ItemFate, RsAnswer};
use crate::data::{splitmix64, unit};

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
    answer: RsAnswer,
    /// In bulk answers, the fraction of readable records answered 429 (not stored).
    item_429_rate: f64,
    seed: u64,
    /// Records answered in bulk so far: the n-th one's 429 is rolled from (seed, n).
    items_seen: AtomicU64,
}

/// The RS's answer to an ingest request.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The answer stored for an `Idempotency-Key` seen before; nothing was stored this time.
    pub replayed: bool,
}

impl Rs {
    pub fn open(path: &Path, uid_pointer: &str, honor_keys: bool) -> Result<Rs> {
        let context = || format!("opening the RS database {}", path.display());
        let conn = Connection::open(path).with_context(context)?;
        configure(&conn).with_context(context)?;
        conn.execute_batch(SCHEMA).with_context(context)?;
        Ok(Rs {
            conn: Mutex::new(conn),
            uid_pointer: uid_pointer.into(),
            honor_keys,
            answer: RsAnswer::Plain,
            item_429_rate: 0.0,
            seed: 0,
            items_seen: AtomicU64::new(0),
        })
    }

    /// Answers in `answer` mode; in bulk, `item_429_rate` of the records meet a 429, rolled
    /// from `seed`.
    pub fn answering(self, answer: RsAnswer, item_429_rate: f64, seed: u64) -> Rs {
        Rs { answer, item_429_rate, seed, ..self }
    }

    /// A JSON body (an object or an array).
    #[cfg(test)]
    pub fn ingest(&self, key: Option<&str>, body: &[u8], now_ms: i64) -> Result<Reply> {
        self.ingest_as(key, body, false, now_ms)
    }

    /// A JSON body, or NDJSON.
    pub fn ingest_as(&self, key: Option<&str>, body: &[u8], ndjson: bool, now_ms: i64) -> Result<Reply> {
        let records = match answer::records(body, ndjson, &self.uid_pointer) {
            Ok(records) => records,
            Err(message) => return Ok(Reply::fresh(400, json!({ "error": message }))),
        };
        if self.answer == RsAnswer::Bulk {
            return self.bulk(key, records, now_ms);
        }
        let records: Result<Vec<Incoming>, _> =
            records.into_iter().enumerate().map(|(n, r)| r.map_err(|e| (n, e))).collect();
        let records = match records {
            Ok(records) => records,
            Err((row, message)) if self.answer == RsAnswer::Clickhouse => {
                return Ok(Reply::fresh(500, answer::clickhouse_parse_error(row, &message)));
            }
            Err((_, message)) => return Ok(Reply::fresh(400, json!({ "error": message }))),
        };
        let reply = match self.answer {
            RsAnswer::Clickhouse => Reply::fresh(200, Value::String(String::new())),
            _ => Reply::fresh(201, json!({ "stored": records.len() })),
        };
        self.store(key, &records, reply, now_ms)
    }

    /// Stores `records` and answers `reply`, or replays the answer a key got before.
    fn store(&self, key: Option<&str>, records: &[Incoming], reply: Reply, now_ms: i64) -> Result<Reply> {
        let honored_key = key.filter(|_| self.honor_keys);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(reply) = honored_key.map(|k| replay(&tx, k)).transpose()?.flatten() {
            return Ok(reply);
        }
        insert_records(&tx, records, key, now_ms)?;
        if let Some(key) = honored_key {
            remember(&tx, key, &reply, now_ms)?;
        }
        tx.commit()?;
        Ok(reply)
    }

    /// A result per record: bad ones refused (400), some busy (429), the rest stored. The
    /// answer is kept for the key whatever it says, as a server that honors keys does.
    fn bulk(&self, key: Option<&str>, records: Vec<Result<Incoming, String>>, now_ms: i64) -> Result<Reply> {
        let honored_key = key.filter(|_| self.honor_keys);
        if let Some(reply) = honored_key.map(|k| replay(&self.lock(), k)).transpose()?.flatten() {
            return Ok(reply);
        }
        let (mut fates, mut stored) = (Vec::new(), Vec::new());
        for record in records {
            match record {
                Err(reason) => fates.push(ItemFate::Refused { uid: None, reason }),
                Ok(record) if self.busy() => fates.push(ItemFate::Busy(record.uid)),
                Ok(record) => {
                    fates.push(ItemFate::Stored(record.uid.clone()));
                    stored.push(record);
                }
            }
        }
        self.store(key, &stored, Reply::fresh(200, answer::bulk_answer(&fates)), now_ms)
    }

    /// Whether the next record of a bulk request meets a 429.
    fn busy(&self) -> bool {
        let n = self.items_seen.fetch_add(1, Ordering::Relaxed);
        unit(splitmix64(splitmix64(self.seed ^ 0x4255_4c4b) ^ n)) < self.item_429_rate
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

fn replay(tx: &Connection, key: &str) -> Result<Option<Reply>> {
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

    fn answering(dir: &tempfile::TempDir, answer: RsAnswer, item_429_rate: f64) -> Rs {
        rs(dir, true).answering(answer, item_429_rate, 1)
    }

    #[test]
    fn an_ndjson_body_is_one_record_a_line_with_action_lines_checked_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let rs = rs(&dir, true);
        let body = "{\"index\":{\"_id\":\"a\"}}\n{\"id\":\"a\"}\n{\"id\":\"b\"}\n";
        assert_eq!(rs.ingest_as(None, body.as_bytes(), true, 1).unwrap().status, 201);
        assert_eq!((rs.count("a").unwrap(), rs.count("b").unwrap()), (1, 1));
        for bad in ["{\"id\":\"c\"}", "{\"index\":{\"_id\":\"x\"}}\n{\"id\":\"c\"}\n", "{\"index\":{}}\n", "[1]\n"] {
            assert_eq!(rs.ingest_as(None, bad.as_bytes(), true, 1).unwrap().status, 400, "{bad}");
        }
        assert_eq!(rs.count("c").unwrap(), 0);
    }

    #[test]
    fn a_bulk_answer_has_a_result_per_record_and_stores_only_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let rs = answering(&dir, RsAnswer::Bulk, 0.0);
        let reply = rs.ingest(Some("k"), br#"[{"id":"a"},{"id":"p","valid":false},{"id":"b"}]"#, 1).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["errors"], json!(true));
        let statuses: Vec<&Value> =
            reply.body["items"].as_array().unwrap().iter().map(|i| &i["index"]["status"]).collect();
        assert_eq!(statuses, [&json!(201), &json!(400), &json!(201)]);
        assert_eq!(reply.body["items"][1]["index"]["error"]["reason"], json!("record p rejected: invalid"));
        assert_eq!((rs.count("a").unwrap(), rs.count("p").unwrap()), (1, 0));
        let again = rs.ingest(Some("k"), br#"[{"id":"a"},{"id":"p","valid":false},{"id":"b"}]"#, 1).unwrap();
        assert!(again.replayed && again.body == reply.body, "the key's answer is kept, failures and all");
        let busy = answering(&tempfile::tempdir().unwrap(), RsAnswer::Bulk, 1.0);
        let reply = busy.ingest(None, br#"[{"id":"a"}]"#, 1).unwrap();
        assert_eq!(reply.body["items"][0]["index"]["status"], json!(429));
        assert_eq!(busy.count("a").unwrap(), 0);
        let ok = rs.ingest(None, br#"[{"id":"c"}]"#, 1).unwrap();
        assert_eq!(ok.body["errors"], json!(false));
    }

    #[test]
    fn a_clickhouse_like_rs_fails_a_request_with_a_bad_record_with_code_27() {
        let dir = tempfile::tempdir().unwrap();
        let rs = answering(&dir, RsAnswer::Clickhouse, 0.0);
        let reply = rs.ingest(Some("k"), br#"[{"id":"a"},{"id":"p","valid":false}]"#, 1).unwrap();
        assert_eq!(reply.status, 500);
        let text = reply.body.as_str().unwrap();
        assert!(
            text.starts_with("Code: 27. DB::Exception: Cannot parse input") && text.contains("(at row 2)"),
            "{text}"
        );
        assert_eq!(rs.count("a").unwrap(), 0, "nothing of the request is stored");
        let ok = rs.ingest(Some("k"), br#"[{"id":"a"}]"#, 1).unwrap();
        assert_eq!((ok.status, ok.body.as_str()), (200, Some("")));
        assert_eq!(rs.count("a").unwrap(), 1);
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
