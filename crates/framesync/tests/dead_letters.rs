//! `dead-letters list | retry | drop` against the real binaries and the simulator, whose RS
//! refuses "poison" records (`"valid": false`) with HTTP 400.

mod common;

use serde_json::Value;

use common::*;

/// A delivered pipeline with some dead letters.
fn with_dead_letters(dir: tempfile::TempDir, sim: &Sim) -> Pipeline {
    let p = Pipeline::new(sim, dir, aligned_minutes_ago(30), "", "", "");
    p.run_until_complete(5);
    assert!(p.query::<i64>("SELECT COUNT(*) FROM dead_letters") >= 3, "{}", p.status_text());
    p
}

fn list(p: &Pipeline, filters: &[&str]) -> Vec<Value> {
    let out = p.framesync(&[&["dead-letters", "list", "--json"], filters].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// Rows the RS database holds for this UID.
fn stored(sim: &Sim, uid: &str) -> i64 {
    let conn = rusqlite::Connection::open(&sim.db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM records WHERE uid = ?1", [uid], |r| r.get(0)).unwrap()
}

#[test]
fn a_retried_dead_letter_reaches_the_rs_once_after_a_push_and_leaves_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let letters = list(&p, &[]);
    let uid = letters[0]["uid"].as_str().unwrap().to_owned();
    assert_eq!(letters[0]["reason"], "rejected");
    assert_eq!(letters[0]["status"], 400);
    assert_eq!(stored(&sim, &uid), 0, "the RS refused it");
    let dead_before: i64 = p.query("SELECT SUM(dead) FROM frames");

    // The operator fixes the cause: a mapping that no longer sends the field the RS refuses.
    let config = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, config.replace("[run]", "map = { id = \"/id\", created_at = \"/created_at\" }\n[run]"))
        .unwrap();
    let retry = p.framesync(&["dead-letters", "retry", "--uid", &uid]);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 staged again"), "{:?}", retry);
    assert_eq!(stored(&sim, &uid), 0, "retry itself sends nothing");
    let staged: i64 = p.query(&format!("SELECT COUNT(*) FROM staged WHERE uid = '{uid}'"));
    assert_eq!(staged, 1);

    let push = p.framesync(&["push"]);
    assert_eq!(push.status.code(), Some(0), "{}", stderr(&push));
    assert_eq!(stored(&sim, &uid), 1, "the record reached the RS");
    assert!(list(&p, &["--uid", &uid]).is_empty(), "its dead letter is gone");
    let delivered: i64 = p.query(&format!("SELECT COUNT(*) FROM delivered WHERE uid = '{uid}'"));
    assert_eq!(delivered, 1);
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM staged"), 0, "a delivered frame has no staged records");
    assert_eq!(p.query::<i64>("SELECT SUM(dead) FROM frames"), dead_before - 1);
    assert_eq!(p.missing_frames(), 0);

    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    assert_eq!(stored(&sim, &uid), 1, "and only once");
}

#[test]
fn drop_deletes_only_the_selected_dead_letters_which_stay_counted_and_are_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let letters = list(&p, &[]);
    let frame = letters[0]["frame"].as_str().unwrap().to_owned();
    let in_frame = list(&p, &["--frame-from", &frame, "--frame-to", &rfc3339(parse(&frame) + 60)]);
    assert!(!in_frame.is_empty() && in_frame.iter().all(|l| l["frame"] == frame.as_str()));
    let dead_before: i64 = p.query("SELECT SUM(dead) FROM frames");

    let out = p.framesync(&["dead-letters", "drop", "--reason", "rejected", "--status", "400", "--frame-from", &frame]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left = list(&p, &[]);
    assert!(left.iter().all(|l| parse(l["frame"].as_str().unwrap()) < parse(&frame)), "{left:#?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("dropped {}", letters.len() - left.len())));
    assert_eq!(p.query::<i64>("SELECT SUM(dead) FROM frames"), dead_before, "still counted");

    let stored_before = sim.stored();
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    assert!(letters.iter().all(|l| stored(&sim, l["uid"].as_str().unwrap()) == 0), "nothing dropped is sent");
    assert!(sim.stored() - stored_before <= 10, "only frames that became eligible meanwhile");
}

#[test]
fn bulk_retry_and_drop_need_a_filter_or_all() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let count = list(&p, &[]).len();
    for action in ["retry", "drop"] {
        let out = p.framesync(&["dead-letters", action]);
        assert_eq!(out.status.code(), Some(2), "{action}");
        assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    }
    assert_eq!(list(&p, &[]).len(), count, "nothing changed");
    let out = p.framesync(&["dead-letters", "drop", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(list(&p, &[]).is_empty());
}

#[test]
fn list_prints_a_table_and_filters_by_uid_reason_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let out = p.framesync(&["dead-letters", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("id "), "{text}");
    assert!(text.contains("rejected") && text.contains("HTTP 400"), "{text}");
    let uid = list(&p, &[])[1]["uid"].as_str().unwrap().to_owned();
    assert_eq!(list(&p, &["--uid", &uid]).len(), 1);
    assert!(list(&p, &["--reason", "invalid"]).is_empty());
    assert!(list(&p, &["--status", "500"]).is_empty());
    assert_eq!(list(&p, &["--limit", "2"]).len(), 2);
    assert_eq!(p.framesync(&["dead-letters", "list", "--reason", "lost"]).status.code(), Some(2));
}

#[test]
fn retry_and_drop_take_the_push_lock_and_say_so_when_a_run_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let count = list(&p, &[]).len();
    let held = framesync::lock::acquire(&p.ledger_path(), framesync::lock::Side::Push).unwrap();
    for action in ["retry", "drop"] {
        let out = p.framesync(&["dead-letters", action, "--all"]);
        assert_eq!(out.status.code(), Some(75), "{action}: {}", stderr(&out));
        assert!(stderr(&out).contains("push.lock"), "{}", stderr(&out));
    }
    assert_eq!(list(&p, &[]).len(), count, "list needs no lock; nothing changed");
    drop(held);
    assert_eq!(p.framesync(&["dead-letters", "retry", "--all"]).status.code(), Some(0));
}

fn parse(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp()
}

#[test]
fn list_by_id_shows_one_dead_letter_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = with_dead_letters(dir, &sim);
    let newest = &list(&p, &[])[0];
    let id = newest["id"].as_i64().unwrap().to_string();
    let out = p.framesync(&["dead-letters", "list", "--id", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for field in ["id:", "frame:", "uid:", "reason:   rejected", "status:   400", "detail:", "response:", "body:"] {
        assert!(text.contains(field), "{field:?} not in\n{text}");
    }
    assert!(text.contains(newest["body"].as_str().unwrap()), "the whole body:\n{text}");
    assert!(text.contains(newest["response"].as_str().unwrap()), "the whole answer:\n{text}");
    let json: Value =
        serde_json::from_slice(&p.framesync(&["dead-letters", "list", "--id", &id, "--json"]).stdout).unwrap();
    assert_eq!(&json, newest, "--json prints the one object");
    let missing = p.framesync(&["dead-letters", "list", "--id", "999999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("no dead letter has id 999999"));
    let both = p.framesync(&["dead-letters", "list", "--id", &id, "--uid", "x"]);
    assert_eq!(both.status.code(), Some(2), "--id names one: no filter goes with it");
}
