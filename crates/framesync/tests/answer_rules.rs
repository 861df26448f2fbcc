//! Answer rules by JSON pointer, end to end: the simulator as the SS, and an RS of the test's
//! own on loopback that says what became of a record in its body — `{"ok": false, "error":
//! ...}` — rather than by its status alone.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::Value;

/// How the test's RS answers a record.
#[derive(Clone, Copy)]
enum Mode {
    /// A record the SS marks `"valid": false` is answered 200 `{"ok": false, "error": ...}` and
    /// not stored; the others are stored and answered 200 `{"ok": true}`.
    OkFlag,
    /// Every other new record is stored and its answer lost (the connection closes); a record
    /// it holds already is answered 422 `{"ok": false, "error": "exists"}`.
    Exists,
}

/// The test's RS: one record a POST; what it stores, by UID, with its copies.
struct OkRs {
    addr: String,
    stored: Arc<Mutex<HashMap<String, u32>>>,
    exists_answers: Arc<Mutex<u32>>,
}

impl OkRs {
    fn start(mode: Mode) -> OkRs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stored = Arc::new(Mutex::new(HashMap::new()));
        let exists_answers = Arc::new(Mutex::new(0));
        let (held, exists) = (stored.clone(), exists_answers.clone());
        std::thread::spawn(move || {
            let mut new_records = 0u32;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((_, body)) = framesync_testkit::http::read_request(&stream) else { continue };
                let record: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let uid = match &record["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut held = held.lock().unwrap();
                let (status, answer) = match mode {
                    Mode::OkFlag if record["valid"] == false => {
                        (200, format!(r#"{{"ok": false, "error": "record {uid}: amount is not a number"}}"#))
                    }
                    Mode::OkFlag => {
                        *held.entry(uid).or_insert(0) += 1;
                        (200, r#"{"ok": true}"#.to_owned())
                    }
                    Mode::Exists if held.contains_key(&uid) => {
                        *exists.lock().unwrap() += 1;
                        (422, r#"{"ok": false, "error": "exists"}"#.to_owned())
                    }
                    Mode::Exists => {
                        *held.entry(uid).or_insert(0) += 1;
                        new_records += 1;
                        if new_records % 2 == 1 {
                            continue; // stored, and the answer lost: the connection closes
                        }
                        (201, r#"{"ok": true}"#.to_owned())
                    }
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        OkRs { addr, stored, exists_answers }
    }

    fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }
}

fn ledger_rows(p: &Pipeline, sql: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(p.ledger_path()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A 200 whose body says `"ok": false` is a refusal of that record when a rule says so: the
/// record becomes a dead letter keeping the RS's body as its reason, and the other records are
/// delivered, each stored once.
#[test]
fn a_rule_by_pointer_dead_letters_the_records_a_200_refuses_and_delivers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "10", "--poison-fraction", "0.2"]);
    let rs = OkRs::start(Mode::OkFlag);
    let sink =
        format!("url = \"{}\"\n[[sink.answers]]\npointer = \"/ok\"\nequals = false\nmeans = \"reject\"", rs.url());
    let reference = aligned_minutes_ago(6);
    let p = Pipeline::new(&sim, dir, reference, "", &sink, "");
    let first = p.framesync(&["run"]);
    assert_eq!(first.status.code(), Some(1), "dead letters make the run exit 1: {}", stderr(&first));
    p.run_until_complete(3);
    let expected = sim.check(reference, p.complete_until());
    let poison = expected["rejected_poison"].as_i64().unwrap();
    let letters = ledger_rows(&p, "SELECT uid, COALESCE(response, '') FROM dead_letters ORDER BY uid");
    assert!(poison > 0 && letters.len() as i64 >= poison, "{poison} poison records, dead letters {letters:?}");
    for (uid, response) in &letters {
        assert!(
            response.contains(&format!("record {uid}: amount is not a number")),
            "the body is the reason: {response}"
        );
    }
    let delivered: Vec<String> = ledger_rows(&p, "SELECT uid, '' FROM delivered").into_iter().map(|r| r.0).collect();
    let stored = rs.stored.lock().unwrap();
    assert!(delivered.iter().all(|uid| stored.contains_key(uid)), "every record acknowledged is stored");
    assert_eq!(delivered.len(), stored.len(), "every record stored is acknowledged");
    assert!(stored.values().all(|&copies| copies == 1), "each once: {stored:?}");
    assert!(letters.iter().all(|(uid, _)| !stored.contains_key(uid)), "no refused record is stored");
    let good = expected["expected"].as_i64().unwrap() - poison;
    assert!(stored.len() as i64 >= good, "every good record of the delivered frames is stored: {expected:#}");
}

/// An RS that stores a record, loses the answer, and then refuses the record sent again with
/// 422 `{"ok": false, "error": "exists"}`: without a rule that is a refusal (a dead letter);
/// with `pointer = "/ok", equals = false, means = "already_there"` the record is delivered.
#[test]
fn a_rule_by_pointer_takes_a_refusal_that_says_exists_as_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "8"]);
    let rs = OkRs::start(Mode::Exists);
    let sink = format!(
        "url = \"{}\"\nretries = 2\n[[sink.answers]]\npointer = \"/ok\"\nequals = false\nmeans = \"already_there\"",
        rs.url()
    );
    let reference = aligned_minutes_ago(5);
    let p = Pipeline::new(&sim, dir, reference, "", &sink, "");
    p.run_until_complete(4);
    let expected = sim.check(reference, p.complete_until())["expected"].as_i64().unwrap();
    assert!(expected > 0);
    let letters = ledger_rows(&p, "SELECT uid, COALESCE(response, '') FROM dead_letters");
    assert!(letters.is_empty(), "no dead letters: {letters:?}");
    let stored = rs.stored.lock().unwrap();
    assert!(stored.len() as i64 >= expected, "every record of the delivered frames is stored");
    assert!(stored.values().all(|&copies| copies == 1), "each once: {stored:?}");
    let delivered: Vec<String> = ledger_rows(&p, "SELECT uid, '' FROM delivered").into_iter().map(|r| r.0).collect();
    assert!(delivered.iter().all(|uid| stored.contains_key(uid)), "every record acknowledged is stored");
    assert_eq!(delivered.len(), stored.len(), "every record stored is acknowledged");
    assert!(*rs.exists_answers.lock().unwrap() > 0, "the RS did answer \"exists\"");
}
