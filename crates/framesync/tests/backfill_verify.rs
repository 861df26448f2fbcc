//! `backfill` and `verify` against the simulator.

mod common;

use common::*;

#[test]
fn backfill_fills_a_range_by_hand_ignoring_the_window_and_skips_delivered_frames() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "51"]);
    let hour = (now() % 86_400) / 3600;
    let closed = format!("backfill_window = \"{:02}:00-{:02}:00\"\nfresh = \"2m\"", (hour + 2) % 24, (hour + 3) % 24);
    let reference = aligned_minutes_ago(40);
    let p = Pipeline::new(&sim, dir, reference, "", "", &closed);
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    assert!(p.missing_frames() >= 30, "the window holds the old gap back");
    let (from, to) = (rfc3339(reference), rfc3339(reference + 20 * MINUTE));
    let plan = p.framesync(&["backfill", "--from", &from, "--to", &to, "--dry-run"]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("pull")).count(), 20, "{text}");
    let out = p.framesync(&["backfill", "--from", &from, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("backfill {from}..{to}: 20 frames pulled")),
        "one summary line off a terminal: {said}"
    );
    assert_eq!((said.lines().count(), stderr(&out)), (1, String::new()), "{said}");
    let delivered: i64 = p.query(&format!(
        "SELECT COUNT(*) FROM frames WHERE state = 'delivered' AND start >= {reference} AND start < {}",
        reference + 20 * MINUTE
    ));
    assert_eq!(delivered, 20);
    let check = sim.check(reference, reference + 20 * MINUTE);
    assert_eq!((check["missing"].as_i64(), check["duplicates"].as_i64()), (Some(0), Some(0)), "{check:#}");
    // Delivered frames are skipped: a second backfill sends nothing.
    let stored = sim.stored();
    assert_eq!(p.framesync(&["backfill", "--from", &from, "--to", &to]).status.code(), Some(0));
    assert_eq!(sim.stored(), stored);
}

#[test]
fn backfill_redelivers_only_when_asked_and_with_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "52"]);
    let reference = aligned_minutes_ago(10);
    let p = Pipeline::new(&sim, dir, reference, "", "", "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let requests = || sim.stats()["requests"]["rs_ingest"]["total"].as_i64().unwrap();
    let before = requests();
    let (from, to) = (rfc3339(reference), rfc3339(reference + 5 * MINUTE));
    let out = p.framesync(&["backfill", "--from", &from, "--to", &to, "--redeliver"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests() - before, 25, "5 frames x 5 records sent again");
    p.assert_exactly_once(&sim); // the RS honors the keys: nothing doubled
    let pushed: i64 = p.query(&format!("SELECT SUM(pushed) FROM frames WHERE start < {}", reference + 5 * MINUTE));
    assert_eq!(pushed, 25);
}

#[test]
fn backfill_rejects_a_backwards_range() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "", "");
    let out = p.framesync(&["backfill", "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--to"), "{}", stderr(&out));
}

#[test]
fn verify_finds_nothing_on_a_complete_range_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "53"]);
    let reference = aligned_minutes_ago(10);
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = Pipeline::new(&sim, dir, reference, "", &lookup, "");
    p.run_until_complete(3);
    let out = p.framesync(&["verify", "--from", &rfc3339(reference), "--to", &rfc3339(p.complete_until())]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("0 differ, 0 records missing"), "{text}");
}

#[test]
fn verify_reports_what_the_rs_lost_and_repair_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "54"]);
    let reference = aligned_minutes_ago(10);
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = Pipeline::new(&sim, dir, reference, "", &lookup, "");
    p.run_until_complete(3);
    let until = p.complete_until();
    rs_loses_records(&sim, 3);
    let args = ["verify", "--from", &rfc3339(reference), "--to", &rfc3339(until)];
    let out = p.framesync(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 records missing") && text.contains("the RS does not have"), "{text}");
    let mut repair = args.to_vec();
    repair.push("--repair");
    let out = p.framesync(&repair);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("repair: 3 records acknowledged by the RS"), "{text}");
    assert!(text.contains("the RS now holds all 3 records sent again"), "{text}");
    assert_eq!(p.framesync(&args).status.code(), Some(0), "nothing differs after the repair");
    p.assert_exactly_once(&sim);
}

/// Pins a repair that claimed success: the RS replayed the answer it stored for the records'
/// Idempotency-Keys and still lacked them, while verify --repair printed "0 failures" and
/// exited 0.
#[test]
fn a_repair_the_rs_only_pretends_to_take_is_reported_not_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "56"]);
    let reference = aligned_minutes_ago(10);
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = Pipeline::new(&sim, dir, reference, "", &lookup, "");
    p.run_until_complete(3);
    let until = p.complete_until();
    // The RS's database loses three records, but it remembers their Idempotency-Keys.
    let rs = rusqlite::Connection::open(&sim.db).unwrap();
    rs.execute("DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT 3)", []).unwrap();
    drop(rs);
    let args = ["verify", "--from", &rfc3339(reference), "--to", &rfc3339(until), "--repair"];
    let out = p.framesync(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("3 of 3 records sent again are still missing at the RS although it acknowledged them"),
        "{text}"
    );
}

/// Pins repairs that failed with "frame … is not delivered" once the frames' rows were pruned:
/// they work on any frame of the timeline.
#[test]
fn verify_repair_and_backfill_redeliver_work_on_pruned_frames_and_look_up_first() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "57", "--rs-ignore-keys"]);
    let reference = aligned_minutes_ago(10);
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = Pipeline::new(&sim, dir, reference, "", &lookup, "retain = \"1s\"");
    p.run_until_complete(3);
    let until = p.complete_until();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1s retention
    assert_eq!(p.framesync(&["prune"]).status.code(), Some(0));
    assert_eq!(p.query::<i64>(&format!("SELECT COUNT(*) FROM frames WHERE start < {until}")), 0, "rows pruned");
    let (from, to) = (rfc3339(reference), rfc3339(until));
    // A redelivery of pruned frames: every record is looked up first, and the RS, which ignores
    // keys, gets none twice.
    let stored = sim.stored();
    let out = p.framesync(&["backfill", "--from", &from, "--to", &to, "--redeliver"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sim.stored(), stored, "all present: nothing sent again");
    // The RS loses three records: verify finds them by lookup and the repair sends them.
    let rs = rusqlite::Connection::open(&sim.db).unwrap();
    rs.execute("DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT 3)", []).unwrap();
    drop(rs);
    let out = p.framesync(&["verify", "--from", &from, "--to", &to, "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("3 records missing") && text.contains("the RS now holds all 3"), "{text}");
    p.assert_exactly_once(&sim);
}

#[test]
fn verify_reports_records_the_ledger_never_saw_and_repair_delivers_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "55"]);
    let reference = aligned_minutes_ago(10);
    let p = Pipeline::new(&sim, dir, reference, "", "", "");
    p.run_until_complete(3);
    let until = p.complete_until();
    // The ledger forgets two deliveries (as if the SS had served them only later).
    let ledger = rusqlite::Connection::open(p.ledger_path()).unwrap();
    let uids: Vec<String> = {
        let mut stmt = ledger.prepare("SELECT uid FROM delivered ORDER BY uid LIMIT 2").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    for uid in &uids {
        ledger.execute("DELETE FROM delivered WHERE uid = ?1", [uid]).unwrap();
    }
    drop(ledger);
    let args = ["verify", "--from", &rfc3339(reference), "--to", &rfc3339(until)];
    let out = p.framesync(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("records the ledger never saw") && text.contains(&uids[0]), "{text}");
    let mut repair = args.to_vec();
    repair.push("--repair");
    assert_eq!(p.framesync(&repair).status.code(), Some(0));
    assert_eq!(p.framesync(&args).status.code(), Some(0));
    p.assert_exactly_once(&sim); // re-sent with the same keys: the RS keeps one of each
}
