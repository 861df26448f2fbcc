//! `pull` and `push` run side by side (two cron lines, two locks): neither waits for the other's
//! network I/O, because every ledger write is a short transaction.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Regression: a pull held SQLite's write lock from its first page to its last, so a `push`
/// beside a slow many-page pull waited `run.busy_timeout` and exited 3.
#[test]
fn a_push_runs_to_completion_while_a_pull_is_fetching_a_slow_many_page_frame() {
    let dir = tempfile::tempdir().unwrap();
    // 40 records a minute in pages of 2: 20 pages a frame.
    let sim = Sim::start(dir.path(), &["--records-per-minute", "40", "--page-size", "2", "--seed", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(4), "", "", "max_frames = 1\nbusy_timeout = \"1s\"");

    let first = p.framesync(&["pull"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let staged: i64 = p.query("SELECT COUNT(*) FROM staged");
    assert_eq!(staged, 40, "the first frame is staged, ready to push");

    // Every SS page now takes 200 ms: the next frame's pull takes about 4 s, four times the
    // push's busy_timeout.
    let requests = || sim.stats()["requests"]["ss_events"]["total"].as_i64().unwrap_or(0);
    let before = requests();
    sim.faults("ss_latency_ms=200");
    let mut pull = p.command(&["pull"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests() < before + 3 {
        assert!(Instant::now() < deadline, "the pull did not get going: {}", sim.stats());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The pull is a few pages into the frame: the push runs beside it, to the end.
    let push = p.framesync(&["push"]);
    assert_eq!(push.status.code(), Some(0), "{}", stderr(&push));
    assert!(pull.try_wait().unwrap().is_none(), "the pull was still fetching pages when the push ended");
    assert_eq!(sim.stored(), 40, "the first frame is delivered");

    let pulled = pull.wait_with_output().unwrap();
    assert_eq!(pulled.status.code(), Some(0), "{}", stderr(&pulled));
    let push = p.framesync(&["push"]);
    assert_eq!(push.status.code(), Some(0), "{}", stderr(&push));
    assert_eq!(sim.stored(), 80);
    let delivered: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state = 'delivered'");
    assert_eq!(delivered, 2);
    for nth in [0, 1] {
        let start: i64 =
            p.query(&format!("SELECT start FROM frames WHERE state = 'delivered' ORDER BY start LIMIT 1 OFFSET {nth}"));
        let check = sim.check(start, start + 60);
        for key in ["missing", "extra", "duplicates"] {
            assert_eq!(check[key], 0, "{key} in {check:#}");
        }
    }
}
