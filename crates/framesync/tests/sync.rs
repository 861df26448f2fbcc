//! The sync job end to end: the real binaries, the simulator as a real process, loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn pipeline(sim: &Sim, dir: tempfile::TempDir, minutes_back: i64, sink_extra: &str) -> Pipeline {
    Pipeline::new(sim, dir, aligned_minutes_ago(minutes_back), "", sink_extra, "")
}

#[test]
fn a_fresh_ledger_three_hours_back_delivers_every_record_once_and_a_second_run_resends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--page-size", "3", "--seed", "11"]);
    let p = pipeline(&sim, dir, 180, "");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "a successful run prints nothing");
    assert!(p.missing_frames() <= 1, "{}", p.status_text());
    let expected = p.assert_exactly_once(&sim);
    assert!(expected >= 170 * 5, "{expected}");
    let delivered: i64 = p.query("SELECT COUNT(*) FROM delivered");
    assert_eq!(delivered, sim.stored(), "the ledger records exactly what the RS stored");

    let before = sim.stored();
    let frames_before: i64 = p.query("SELECT COUNT(*) FROM frames");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let new_frames: i64 = p.query::<i64>("SELECT COUNT(*) FROM frames") - frames_before;
    assert!(new_frames <= 2, "only frames that became eligible meanwhile are pulled: {new_frames}");
    assert!(sim.stored() - before <= new_frames * 5, "nothing delivered before is sent again");
    p.assert_exactly_once(&sim);
    let staged: i64 = p.query("SELECT COUNT(*) FROM staged");
    assert_eq!(staged, 0);
}

#[test]
fn an_rs_that_is_down_leaves_gaps_that_later_runs_fill() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "4", "--seed", "12"]);
    let p = pipeline(&sim, dir, 30, "retries = 0");
    sim.faults("rs_down=1");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1), "some work failed: {}", stderr(&out));
    assert!(stderr(&out).contains("will be retried"), "{}", stderr(&out));
    assert!(p.missing_frames() >= 28, "{}", p.status_text());
    let failing: i64 = p.query("SELECT COUNT(*) FROM failing_frames");
    assert!(failing >= 1);
    assert_eq!(sim.stored(), 0);

    sim.faults("rs_down=0");
    let runs = p.run_until_complete(10);
    assert!(runs >= 1);
    p.assert_exactly_once(&sim);
}

/// Starts `framesync run`, waits until the RS has stored `after` records, then SIGKILLs it.
fn kill_mid_push(p: &Pipeline, sim: &Sim, after: i64) {
    let mut child = p.command(&["run"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.stored() < after {
        assert!(Instant::now() < deadline, "the run never got to {after} records");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(sim.stored() < 60 * 6, "killed midway, not at the end");
}

#[test]
fn a_run_killed_mid_push_resends_with_the_same_key_and_an_rs_honoring_keys_stores_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "6", "--latency", "3ms", "--seed", "13"]);
    let p = pipeline(&sim, dir, 60, "");
    kill_mid_push(&p, &sim, 100);
    p.run_until_complete(5);
    p.assert_exactly_once(&sim);
}

#[test]
fn a_run_killed_mid_push_leaves_no_duplicate_at_an_rs_that_ignores_keys_but_offers_a_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--records-per-minute",
            "6",
            "--latency",
            "3ms",
            "--rs-ignore-keys",
            "--uid-style",
            "unicode",
            "--seed",
            "14",
        ],
    );
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = pipeline(&sim, dir, 60, &lookup);
    for after in [60, 150] {
        kill_mid_push(&p, &sim, after);
    }
    p.run_until_complete(5);
    p.assert_exactly_once(&sim);
}

#[test]
fn lost_responses_are_resent_with_the_same_key_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--rs-drop-response-rate", "0.05", "--seed", "15"]);
    let p = pipeline(&sim, dir, 40, "");
    p.run_until_complete(10);
    p.assert_exactly_once(&sim);
    let dropped = sim.stats()["faults"]["rs_dropped_responses"].as_i64().unwrap_or(0);
    assert!(dropped > 0, "the fault was injected: {:#}", sim.stats());
}

#[test]
fn two_simultaneous_runs_one_works_and_the_other_exits_75_silently() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--latency", "5ms", "--seed", "16"]);
    let p = pipeline(&sim, dir, 60, "");
    let mut first = p.command(&["run"]).spawn().unwrap();
    // Wait until the first run holds the lock and is working.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stored() == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = p.framesync(&["run"]);
    assert_eq!(second.status.code(), Some(75));
    assert!(
        second.stdout.is_empty() && second.stderr.is_empty(),
        "silent at the default log level: {}",
        stderr(&second)
    );
    let push_only = p.framesync(&["push"]);
    assert_eq!(push_only.status.code(), Some(75), "push shares the run's push lock");
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert!(p.ledger_path().with_extension("db.pull.lock").exists(), "the lock file is never deleted");
    p.assert_exactly_once(&sim);
}

#[test]
fn pull_and_push_as_separate_commands_deliver_everything() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--seed", "17"]);
    let p = pipeline(&sim, dir, 20, "");
    let pull = p.framesync(&["pull"]);
    assert_eq!(pull.status.code(), Some(0), "{}", stderr(&pull));
    assert_eq!(sim.stored(), 0, "pull pushes nothing");
    let staged: i64 = p.query("SELECT COUNT(*) FROM staged");
    assert!(staged >= 18 * 5);
    let push = p.framesync(&["push"]);
    assert_eq!(push.status.code(), Some(0), "{}", stderr(&push));
    assert_eq!(sim.stored(), staged);
    p.assert_exactly_once(&sim);
}

#[test]
fn a_record_the_rs_rejects_lands_in_dead_letters_and_its_frame_completes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "10", "--poison-fraction", "0.05", "--seed", "18"]);
    let p = pipeline(&sim, dir, 20, "");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1), "a run that dead-letters exits 1: {}", stderr(&out));
    p.assert_exactly_once(&sim);
    let check = sim.check(p.reference, p.complete_until());
    let rejected = check["rejected_poison"].as_i64().unwrap();
    assert!(rejected > 0, "{check:#}");
    let dead: i64 = p.query("SELECT COUNT(*) FROM dead_letters WHERE reason = 'rejected' AND status = 400");
    assert_eq!(dead, rejected);
    let undelivered: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state <> 'delivered'");
    assert_eq!(undelivered, 0);
    let said = stderr(&out);
    assert!(said.contains(&format!("{dead} records were dead-lettered this run ({dead} rejected)")), "{said}");
    assert_eq!(said.matches("dead-lettered").count(), 1, "one line, not one per record: {said}");
    // Nothing more to dead-letter: the next run exits 0.
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
}

#[test]
fn batch_mode_delivers_every_record_once_and_isolates_a_rejected_record() {
    let dir = tempfile::tempdir().unwrap();
    // 600 records: which minutes hold a poison record depends on the wall clock, and with 200
    // the SS served none about once in fifty runs.
    let sim = Sim::start(dir.path(), &["--records-per-minute", "30", "--poison-fraction", "0.02", "--seed", "19"]);
    let p = pipeline(&sim, dir, 20, "mode = \"batch\"\nbatch_size = 7");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1), "a run that dead-letters exits 1: {}", stderr(&out));
    p.assert_exactly_once(&sim);
    let check = sim.check(p.reference, p.complete_until());
    let dead: i64 = p.query("SELECT COUNT(*) FROM dead_letters WHERE reason = 'rejected'");
    assert_eq!(dead, check["rejected_poison"].as_i64().unwrap(), "only the bad records: {check:#}");
}

#[test]
fn numeric_uids_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--uid-style", "numeric", "--seed", "20"]);
    let p = pipeline(&sim, dir, 15, "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    p.assert_exactly_once(&sim);
    let non_numeric: i64 = p.query("SELECT COUNT(*) FROM delivered WHERE uid GLOB '*[^0-9]*'");
    assert_eq!(non_numeric, 0);
}

#[test]
fn non_ascii_uids_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--uid-style", "unicode", "--seed", "21"]);
    let p = pipeline(&sim, dir, 15, "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    p.assert_exactly_once(&sim);
    let unicode: i64 = p.query("SELECT COUNT(*) FROM delivered WHERE uid LIKE 'ünï-%✓'");
    let all: i64 = p.query("SELECT COUNT(*) FROM delivered");
    assert_eq!(unicode, all);
}

#[test]
fn a_flaky_ss_and_rs_converge_to_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--records-per-minute",
            "5",
            "--page-size",
            "2",
            "--ss-error-rate",
            "0.1",
            "--rs-error-rate",
            "0.1",
            "--seed",
            "22",
        ],
    );
    let p = pipeline(&sim, dir, 30, "retries = 1");
    p.run_until_complete(20);
    p.assert_exactly_once(&sim);
}
