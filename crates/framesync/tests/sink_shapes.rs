//! Sink bodies and answers against the simulator: NDJSON and gzip bodies, a ClickHouse-like RS
//! whose bad records answer 500 "Code: 27", and a bulk RS answering a result per record.

mod common;

use common::*;

/// The RS's stored answers (its idempotency table) that contain `text`.
fn answers_containing(sim: &Sim, text: &str) -> i64 {
    let conn = rusqlite::Connection::open(&sim.db).unwrap();
    let sql = "SELECT COUNT(*) FROM idempotency_keys WHERE response LIKE '%' || ?1 || '%'";
    conn.query_row(sql, [text], |r| r.get(0)).unwrap()
}

fn dead_letters(p: &Pipeline) -> Vec<(i64, String, String)> {
    let conn = rusqlite::Connection::open(p.ledger_path()).unwrap();
    let mut stmt = conn.prepare("SELECT status, response, uid FROM dead_letters ORDER BY uid").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn an_ndjson_batch_with_an_action_line_is_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "7"]);
    let sink =
        "mode = \"batch\"\nbatch_size = 4\nbody = \"ndjson\"\nndjson_action = '{\"index\":{\"_id\":{uid:json}}}'";
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(6), "", sink, "");
    p.run_until_complete(3);
    assert!(p.assert_exactly_once(&sim) >= 20);
    assert_eq!(sim.stats()["requests"]["rs_ingest"]["by_status"]["400"], serde_json::Value::Null, "none refused");
}

#[test]
fn gzipped_bodies_are_delivered_exactly_once() {
    for body in ["array", "ndjson"] {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
        let sink = format!("mode = \"batch\"\nbatch_size = 3\nbody = \"{body}\"\ncompress = \"gzip\"");
        let p = Pipeline::new(&sim, dir, aligned_minutes_ago(5), "", &sink, "");
        p.run_until_complete(3);
        assert!(p.assert_exactly_once(&sim) >= 15, "{body}");
    }
}

/// ClickHouse answers an INSERT holding a record it cannot parse with 500 and "Code: 27",
/// storing nothing of it. Without a rule that is retried forever; with one, the batch is
/// split to find the bad record, which alone is dead-lettered.
#[test]
fn a_clickhouse_code_27_dead_letters_only_the_bad_record_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--records-per-minute", "10", "--poison-fraction", "0.1", "--rs-answer", "clickhouse"];
    let sim = Sim::start(dir.path(), &flags);
    let sink = "mode = \"batch\"\nbatch_size = 5\nbody = \"ndjson\"\n\
                [[sink.answers]]\nstatus = [500]\nbody_contains = \"Code: 27\"\nmeans = \"reject\"";
    let reference = aligned_minutes_ago(8);
    let p = Pipeline::new(&sim, dir, reference, "", sink, "");
    let first = p.framesync(&["run"]);
    assert_eq!(first.status.code(), Some(1), "dead letters: {}", stderr(&first));
    p.run_until_complete(3);
    p.assert_exactly_once(&sim);
    let poison = sim.check(reference, p.complete_until())["rejected_poison"].as_i64().unwrap();
    let letters = dead_letters(&p);
    assert!(poison > 0 && letters.len() as i64 == poison, "{poison} poison, {letters:?}");
    for (status, response, _) in &letters {
        assert_eq!(*status, 500);
        assert!(response.starts_with("Code: 27. DB::Exception: Cannot parse input"), "{response}");
    }
}

/// A bulk RS answers 200 with a result per record: poison records 400 (dead-lettered with the
/// item's reason), a fifth of the others 429 (sent again, alone, until stored — once).
#[test]
fn a_bulk_rs_failing_some_items_gets_each_good_record_once_and_dead_letters_the_bad() {
    let dir = tempfile::tempdir().unwrap();
    let flags =
        ["--records-per-minute", "10", "--poison-fraction", "0.1", "--rs-answer", "bulk", "--rs-item-429-rate", "0.2"];
    let sim = Sim::start(dir.path(), &flags);
    let sink = "mode = \"batch\"\nbatch_size = 6\nbody = \"ndjson\"\nretries = 1\n\
                ndjson_action = '{\"index\":{\"_id\":{uid:json}}}'\n\
                [sink.items]\nlist = \"/items\"\nstatus = \"/*/status\"\nerrors = \"/errors\"\nreason = \"/*/error/reason\"";
    let reference = aligned_minutes_ago(8);
    let p = Pipeline::new(&sim, dir, reference, "", sink, "");
    p.run_until_complete(6);
    assert!(p.assert_exactly_once(&sim) >= 50);
    assert!(answers_containing(&sim, "\"status\":429") > 0, "the RS did answer 429 for some records");
    let poison = sim.check(reference, p.complete_until())["rejected_poison"].as_i64().unwrap();
    let letters = dead_letters(&p);
    assert!(poison > 0 && letters.len() as i64 == poison, "{poison} poison, {letters:?}");
    for (status, response, uid) in &letters {
        assert_eq!((*status, response.as_str()), (400, format!("record {uid} rejected: invalid").as_str()));
    }
}

/// Killed with SIGKILL where a per-item answer is settled (inside its transaction, after it,
/// after a dead letter), then run to the end: each good record stored once, each bad one a
/// dead letter. The RS honors keys, so it replays a batch's answer for a batch sent again. One
/// request in flight (`sink.ordered`): the simulator draws its 429s in the order the records
/// arrive, so with requests racing the first run may stop before the kill point's n-th pass;
/// the test above covers per-item answers with requests in flight.
#[test]
fn a_run_killed_while_settling_per_item_answers_loses_and_doubles_nothing() {
    for (n, point) in ["mid-ack-commit:2", "after-ack:3", "after-dead-letter:1", "mid-ack-commit:5"].iter().enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let seed = (n + 3).to_string();
        let flags = ["--seed", &seed, "--poison-fraction", "0.1", "--rs-answer", "bulk", "--rs-item-429-rate", "0.3"];
        let sim = Sim::start(dir.path(), &flags);
        let sink = "mode = \"batch\"\nbatch_size = 5\nbody = \"ndjson\"\nretries = 1\nack_group = 3\nordered = true\n\
                    [sink.items]\nlist = \"/items\"\nstatus = \"/*/status\"\nreason = \"/*/error/reason\"";
        let reference = aligned_minutes_ago(6);
        let p = Pipeline::new(&sim, dir, reference, "", sink, "");
        let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", point).output().unwrap();
        assert_eq!(killed.status.code(), None, "{point}: killed by a signal: {}", stderr(&killed));
        p.run_until_complete(6);
        p.assert_exactly_once(&sim);
        let poison = sim.check(reference, p.complete_until())["rejected_poison"].as_i64().unwrap();
        assert_eq!(dead_letters(&p).len() as i64, poison, "{point}");
    }
}
