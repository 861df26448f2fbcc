//! Retention: `framesync prune` and the prune at the end of every run delete old delivered
//! UIDs, frame rows and runs, never make a frame look missing, survive a kill mid-batch, and keep
//! the ledger's size bounded (the bytes per delivered record are measured here for the README).

mod common;

use framesync::frames::{Epoch, FrameSize};
use framesync::ledger::{Ledger, Synchronous};
use framesync::model::StagedRecord;

use common::*;

const DAY: i64 = 86_400;

fn missing_ranges(p: &Pipeline) -> String {
    let conn = rusqlite::Connection::open(p.ledger_path()).unwrap();
    let mut stmt = conn.prepare("SELECT from_epoch, to_epoch FROM missing_ranges").unwrap();
    let rows: Vec<(i64, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    format!("{rows:?}")
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test-hooks feature")]
fn prune_deletes_old_uids_frame_rows_and_runs_and_nothing_looks_missing_or_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(60), "", "", "");
    p.run_until_complete(5);
    let (uids, stored, spans) = (p.query::<i64>("SELECT COUNT(*) FROM delivered"), sim.stored(), missing_ranges(&p));
    assert!(uids > 200);

    // 40 days on, with the default run.retain of 30 days, everything delivered is old.
    let out = p.command(&["prune"]).env("FRAMESYNC_TEST_NOW", format!("+{}", 40 * DAY)).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("pruned {uids} delivered UIDs")), "{text}");
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM delivered"), 0);
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM frames"), 0);
    assert_eq!(p.query::<i64>("SELECT uids_pruned FROM totals"), uids);
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM runs"), 1, "the newest run stays");
    assert_eq!(p.query::<i64>("SELECT records_pushed FROM totals"), stored, "the counter does not go down");
    assert_eq!(missing_ranges(&p), spans, "pruned frames stay delivered");

    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(sim.stored() - stored <= 10, "only frames that became eligible meanwhile are sent");
    p.assert_exactly_once(&sim);
}

/// Pins a ledger that grew for ever: `pull` and `push` as two cron lines never pruned.
#[test]
fn pull_and_push_as_two_cron_lines_prune_on_the_push_side() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(30), "", "", "retain = \"1s\"");
    assert_eq!(p.framesync(&["pull"]).status.code(), Some(0));
    assert_eq!(p.framesync(&["push"]).status.code(), Some(0));
    let delivered: i64 = p.query("SELECT (SELECT COUNT(*) FROM delivered) + uids_pruned FROM totals");
    assert!(delivered > 100);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1s retention
    assert_eq!(p.framesync(&["pull"]).status.code(), Some(0));
    assert_eq!(p.framesync(&["push"]).status.code(), Some(0));
    assert!(p.query::<i64>("SELECT uids_pruned FROM totals") >= delivered, "the push pruned");
    assert_eq!(missing_ranges(&p), "[]", "pruned frames stay delivered");
    p.assert_exactly_once(&sim);
}

#[test]
fn every_run_prunes_what_is_older_than_run_retain() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(30), "", "", "retain = \"1s\"");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    // A first run slower than a second prunes some of its own UIDs already: count those too.
    let delivered: i64 = p.query("SELECT (SELECT COUNT(*) FROM delivered) + uids_pruned FROM totals");
    assert!(delivered > 100);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1s retention
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let old: i64 = p.query(
        "SELECT COUNT(*) FROM delivered d JOIN frames f ON f.start = d.frame
         WHERE f.delivered_at < (SELECT MAX(started_at) FROM runs) - 1",
    );
    assert_eq!(old, 0, "the second run pruned the first run's UIDs");
    assert!(p.query::<i64>("SELECT uids_pruned FROM totals") >= delivered);
    assert_eq!(missing_ranges(&p), "[]", "pruned frames stay delivered");
    p.assert_exactly_once(&sim);
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test-hooks feature")]
fn a_prune_killed_inside_its_transaction_changes_nothing_and_the_next_one_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(30), "", "", "");
    p.run_until_complete(5);
    let (uids, frames, spans) = (
        p.query::<i64>("SELECT COUNT(*) FROM delivered"),
        p.query::<i64>("SELECT COUNT(*) FROM frames"),
        missing_ranges(&p),
    );
    let later = format!("+{}", 40 * DAY);
    let killed =
        p.command(&["prune"]).env("FRAMESYNC_TEST_NOW", &later).env("FRAMESYNC_TEST_KILL_AT", "mid-prune").output();
    assert_eq!(killed.unwrap().status.code(), None, "killed by a signal");
    assert_eq!(p.query::<String>("PRAGMA integrity_check"), "ok");
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM delivered"), uids, "the batch rolled back whole");
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM frames"), frames);
    assert_eq!(p.query::<i64>("SELECT uids FROM pruned"), 0);
    let out = p.command(&["prune"]).env("FRAMESYNC_TEST_NOW", &later).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.query::<i64>("SELECT uids FROM pruned"), uids);
    assert_eq!(missing_ranges(&p), spans);
}

// ---- the size of the ledger ----------------------------------------------------------------

/// Bytes the ledger's live pages take, after a checkpoint and VACUUM (what the file shrinks to).
fn ledger_bytes(ledger: &Ledger) -> i64 {
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    conn.query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |r| r.get(0)).unwrap()
}

/// Delivers `records` records, `per_frame` a frame, as a run would: stage, acknowledge, complete.
fn deliver(ledger: &mut Ledger, start: Epoch, records: usize, per_frame: usize) {
    let size = FrameSize::new(60).unwrap();
    for f in 0..records / per_frame {
        let frame = size.frame_at(start + 60 * f as i64);
        let minute = frame.start / 60;
        let batch: Vec<StagedRecord> = (0..per_frame)
            .map(|i| StagedRecord {
                uid: format!("ev-{minute}-{i}"),
                ts_ms: Some(frame.start * 1000 + i as i64),
                body: format!(r#"{{"id":"ev-{minute}-{i}","created_at":"2026-11-25T05:35:00.000Z","payload":{{"amount":1234,"note":"a typical record of about 150 bytes of JSON"}}}}"#),
            })
            .collect();
        ledger.stage_frame(frame, &batch, &[], frame.end()).unwrap();
        let uids: Vec<&str> = batch.iter().map(|r| r.uid.as_str()).collect();
        ledger.acknowledge(frame.start, &uids, frame.end()).unwrap();
        assert!(ledger.complete_frame(frame, None, frame.end()).unwrap());
    }
}

#[test]
fn a_hundred_thousand_delivered_records_take_bounded_bytes_each_and_almost_none_once_pruned() {
    const RECORDS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
    let empty = ledger_bytes(&ledger);
    let start = 1_700_000_040; // 2023-11-14: long past any retention
    deliver(&mut ledger, start, RECORDS, 20); // 20 records a minute: 5,000 frames
    let before = ledger_bytes(&ledger);
    let pruned = framesync::prune::prune(&mut ledger, 30 * DAY, now(), &|| false).unwrap();
    assert_eq!(pruned.uids, RECORDS as i64);
    let after = ledger_bytes(&ledger);
    let per_record = |bytes: i64| (bytes - empty) as f64 / RECORDS as f64;
    println!(
        "ledger bytes per delivered record: {:.1} before pruning, {:.3} after ({} -> {} bytes, empty {})",
        per_record(before),
        per_record(after),
        before,
        after,
        empty
    );
    assert!(per_record(before) < 120.0, "{}", per_record(before));
    assert!(per_record(after) < 0.1, "{}", per_record(after));
    assert_eq!(ledger.delivered_spans(0, i64::MAX).unwrap(), vec![(start, start + 60 * 5_000)]);
}
