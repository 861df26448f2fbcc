//! Frames read from the SS at once (`source.concurrency`), end to end against the simulator:
//! every record once at the RS, more than one SS request in flight (never more than the
//! setting), and a kill in the middle of the reading costs nothing the next run does not make up.

mod common;

use common::*;

/// An SS with 20 ms a page and five records a page: each frame takes a few pages.
fn slow_ss(dir: &std::path::Path) -> Sim {
    let flags = ["--records-per-minute", "20", "--page-size", "5", "--ss-latency", "20ms", "--seed", "7"];
    Sim::start(dir, &flags)
}

#[test]
fn run_with_source_concurrency_four_reads_frames_at_once_and_delivers_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = slow_ss(dir.path());
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(12), "concurrency = 4", "", "");
    p.run_until_complete(5);
    assert!(p.assert_exactly_once(&sim) >= 100);
    let most = sim.stats()["ss_max_in_flight"].as_i64().unwrap();
    assert!((2..=4).contains(&most), "SS requests in flight at once: {most}");
}

#[test]
fn pull_alone_with_source_concurrency_reads_frames_at_once_and_stages_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let sim = slow_ss(dir.path());
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(8), "concurrency = 3", "", "");
    let pulled = p.framesync(&["pull"]);
    assert_eq!(pulled.status.code(), Some(0), "{}", stderr(&pulled));
    let most = sim.stats()["ss_max_in_flight"].as_i64().unwrap();
    assert!((2..=3).contains(&most), "SS requests in flight at once: {most}");
    assert_eq!(sim.stored(), 0, "a pull pushes nothing");
    let pushed = p.framesync(&["push"]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    assert!(p.assert_exactly_once(&sim) >= 100);
}

#[test]
fn a_run_killed_while_frames_are_read_at_once_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = slow_ss(dir.path());
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(12), "concurrency = 4", "", "");
    // The 9th page after a frame's first, on whichever thread: frames are being read ahead.
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "mid-pull:9").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed: {}", stderr(&killed));
    assert!(sim.stats()["ss_max_in_flight"].as_i64().unwrap() >= 2, "frames were read at once: {}", sim.stats());
    let staged_after_kill: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state <> 'missing'");
    assert!(staged_after_kill < 11, "the kill came before every frame was pulled");
    p.run_until_complete(5);
    assert!(p.assert_exactly_once(&sim) >= 100);
}

/// The SS's clock 3 minutes behind ours, `frames.delay` 1 minute, four frames read at once: the
/// frames our clock says are due but the SS's says are still open wait, with the clock to fix
/// named, and none is staged short of the records the SS has yet to receive; once the SS's
/// clock is put right, every record reaches the RS exactly once.
#[test]
fn frames_read_at_once_from_an_ss_three_minutes_behind_wait_for_its_clock_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--records-per-minute", "20", "--page-size", "5", "--ss-latency", "5ms", "--ss-clock-skew", "-180"];
    let sim = Sim::start(dir.path(), &flags);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(12), "concurrency = 4", "", "");
    let first = p.framesync(&["run"]);
    let ss_now = now() - 180;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(stderr(&first).contains("180s ahead of the SS's"), "{}", stderr(&first));
    let waiting: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state = 'missing' AND last_error LIKE '%too early%'");
    assert!(waiting >= 2, "frames open at the SS wait for its clock: {}", p.status_text());
    let open_taken = format!("SELECT COUNT(*) FROM frames WHERE \"end\" + 60 > {ss_now} AND state <> 'missing'");
    assert_eq!(p.query::<i64>(&open_taken), 0, "no frame open at the SS staged: {}", p.status_text());
    assert!(p.assert_exactly_once(&sim) >= 100, "the frames closed at the SS, whole");
    sim.faults("ss_clock_skew_secs=0");
    p.run_until_complete(5);
    assert!(p.assert_exactly_once(&sim) >= 220);
}

/// Every frame due by our clock still open at the SS, 3 minutes behind: the run's first frames
/// are read at once before any answer has told the SS's clock. Their pages are dropped, none is
/// staged, and they come whole once the SS's clock is put right.
#[test]
fn frames_read_at_once_before_the_ss_clock_is_known_are_not_staged_while_it_says_they_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--records-per-minute", "20", "--page-size", "5", "--ss-latency", "20ms", "--ss-clock-skew", "-180"];
    let sim = Sim::start(dir.path(), &flags);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(4), "concurrency = 4", "", "");
    let first = p.framesync(&["run"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(sim.stats()["ss_max_in_flight"].as_i64().unwrap() >= 2, "frames were read at once: {}", sim.stats());
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM frames WHERE state <> 'missing'"), 0, "{}", p.status_text());
    assert_eq!(sim.stored(), 0);
    sim.faults("ss_clock_skew_secs=0");
    p.run_until_complete(5);
    assert!(p.assert_exactly_once(&sim) >= 60);
}
