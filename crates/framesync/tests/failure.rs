//! framesync under failure: a locked, full, corrupt or remote ledger; competing and killed runs;
//! a clock that jumps; hostile SS answers. Needs the `test-hooks` feature (scripts/test sets it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;

fn small_pipeline(sim: &Sim, dir: tempfile::TempDir, minutes: i64, run_extra: &str) -> Pipeline {
    Pipeline::new(sim, dir, aligned_minutes_ago(minutes), "", "retries = 0", run_extra)
}

fn integrity(p: &Pipeline) -> String {
    p.query("PRAGMA integrity_check")
}

// ---- the ledger --------------------------------------------------------------------------

#[test]
fn a_ledger_locked_by_another_writer_makes_the_run_wait_then_exit_3_and_nothing_is_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = small_pipeline(&sim, dir, 10, "busy_timeout = \"1s\"");
    framesync::ledger::Ledger::open(&p.ledger_path(), framesync::ledger::Synchronous::Normal).unwrap();
    // The run pauses once its first records may be on their way; meanwhile another process
    // takes the ledger's write lock and keeps it past busy_timeout.
    let run = p
        .command(&["run"])
        .env("FRAMESYNC_TEST_PAUSE_AT", "after-mark-sending:700")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let blocker = rusqlite::Connection::open(p.ledger_path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = run.wait_with_output().unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("database is locked") && stderr(&out).contains("busy_timeout"), "{}", stderr(&out));
    // The record acknowledged while the ledger was locked is sent again with the same key.
    p.run_until_complete(3);
    p.assert_exactly_once(&sim);
    assert_eq!(integrity(&p), "ok");
}

#[test]
fn a_full_disk_stops_the_run_without_corruption_and_it_converges_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "20"]);
    let p = small_pipeline(&sim, dir, 60, "max_frames = 5");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let pages: i64 = p.query("PRAGMA page_count");
    let full = p.command(&["run"]).env("FRAMESYNC_TEST_MAX_PAGE_COUNT", (pages + 2).to_string()).output().unwrap();
    let full = if full.status.code() == Some(3) {
        full
    } else {
        // Freed pages may have absorbed a run; the next one runs out.
        p.command(&["run"]).env("FRAMESYNC_TEST_MAX_PAGE_COUNT", (pages + 2).to_string()).output().unwrap()
    };
    assert_eq!(full.status.code(), Some(3), "{}", stderr(&full));
    assert!(stderr(&full).contains("full"), "{}", stderr(&full));
    assert_eq!(integrity(&p), "ok");
    p.run_until_complete(20);
    p.assert_exactly_once(&sim);
    assert_eq!(integrity(&p), "ok");
}

#[test]
fn a_corrupt_ledger_is_refused_with_exit_3_and_never_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "20"]);
    let p = small_pipeline(&sim, dir, 30, "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    // Fold the WAL into the file, then overwrite everything after the header page.
    let conn = rusqlite::Connection::open(p.ledger_path()).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(conn);
    let mut bytes = std::fs::read(p.ledger_path()).unwrap();
    assert!(bytes.len() > 8192);
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(p.ledger_path(), &bytes).unwrap();
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("malformed") || stderr(&out).contains("not a database"), "{}", stderr(&out));
    assert_eq!(std::fs::read(p.ledger_path()).unwrap(), bytes, "the file is left as it was");
}

#[test]
fn a_ledger_on_a_network_filesystem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let p = small_pipeline(&sim, dir, 10, "");
    let folder = std::fs::canonicalize(p.dir.path()).unwrap();
    let mountinfo = p.dir.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        format!("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:35 / {} rw - nfs4 srv:/export rw\n", folder.display()),
    )
    .unwrap();
    let out = p.command(&["run"]).env("FRAMESYNC_TEST_MOUNTINFO", &mountinfo).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nfs4 network filesystem"), "{}", stderr(&out));
    assert!(!p.ledger_path().exists(), "nothing created there");
}

// ---- locking -----------------------------------------------------------------------------

#[test]
fn ten_simultaneous_starts_a_hundred_times_give_exactly_one_holder_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    // Nothing to pull (the reference is in the future), so a run is only the lock, held 300 ms.
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(-600), "", "", "");
    for round in 0..100 {
        let children: Vec<_> = (0..10)
            .map(|_| {
                p.command(&["run"])
                    .env("FRAMESYNC_TEST_PAUSE_AT", "after-lock:300")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<i32> = children.into_iter().map(|mut c| c.wait().unwrap().code().unwrap()).collect();
        let holders = codes.iter().filter(|c| **c == 0).count();
        let refused = codes.iter().filter(|c| **c == 75).count();
        assert_eq!((holders, refused), (1, 9), "round {round}: {codes:?}");
    }
    assert!(p.ledger_path().with_extension("db.pull.lock").exists());
    assert!(p.ledger_path().with_extension("db.push.lock").exists());
}

#[test]
fn a_holder_killed_with_sigkill_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = small_pipeline(&sim, dir, 10, "");
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "after-lock").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed by a signal");
    let next = p.framesync(&["run"]);
    assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
    p.assert_exactly_once(&sim);
    assert!(p.ledger_path().with_extension("db.pull.lock").exists(), "the lock file is never deleted");
}

// ---- the clock ---------------------------------------------------------------------------

#[test]
fn a_clock_that_jumps_back_an_hour_re_pushes_nothing_and_un_delivers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = small_pipeline(&sim, dir, 90, "");
    p.run_until_complete(3);
    let (stored, delivered): (i64, i64) =
        (sim.stored(), p.query("SELECT COUNT(*) FROM frames WHERE state = 'delivered'"));
    let back = p.command(&["run"]).env("FRAMESYNC_TEST_NOW", "-3600").output().unwrap();
    assert_eq!(back.status.code(), Some(0), "{}", stderr(&back));
    assert_eq!(sim.stored(), stored, "nothing sent again");
    let after: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state = 'delivered'");
    assert_eq!(after, delivered, "nothing un-delivered");
    p.assert_exactly_once(&sim);
}

#[test]
fn a_clock_that_jumps_a_year_ahead_does_bounded_work_stages_nothing_the_ss_has_not_closed_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = small_pipeline(&sim, dir, 30, "max_frames = 5");
    let ahead = p.command(&["run"]).env("FRAMESYNC_TEST_NOW", "+31536000").output().unwrap();
    assert_eq!(ahead.status.code(), Some(1), "{}", stderr(&ahead));
    assert!(stderr(&ahead).contains("ahead of the SS"), "{}", stderr(&ahead));
    let requests = sim.stats()["requests"]["ss_events"]["total"].as_i64().unwrap();
    assert!(requests <= 5, "bounded by max_frames: {requests}");
    let staged: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state <> 'missing'");
    assert_eq!(staged, 0, "no future frame is staged or delivered");
    assert_eq!(sim.stored(), 0);
    // Back to the right time: the pipeline catches up as if nothing happened.
    let out = p.command(&["run"]).env("FRAMESYNC_TEST_NOW", "+0").output().unwrap();
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1));
    p.run_until_complete(40);
    p.assert_exactly_once(&sim);
}

// ---- hostile SS answers ------------------------------------------------------------------

/// A server that answers with headers announcing 1 GiB, then streams it; counts what it sent.
fn endless_server() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{{\"items\":[\"", 1u64 << 30);
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).is_ok() {
                if counter.fetch_add(chunk.len() as u64, Ordering::SeqCst) > 1 << 30 {
                    break;
                }
            }
        }
    });
    (addr, sent)
}

#[test]
fn a_gigabyte_answer_is_cut_off_at_the_size_limit_without_reading_it() {
    let (ss, sent) = endless_server();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "max_bytes = 1048576", "", "max_frames = 1");
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace(&format!("{}/ss/events", sim.base()), &format!("http://{ss}/ss"));
    std::fs::write(&p.config, text).unwrap();
    let mut child = p.command(&["run"]).stderr(Stdio::piped()).spawn().unwrap();
    // Peak memory of the run, sampled while it runs.
    let pid = child.id();
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = status.lines().find(|l| l.starts_with("VmHWM:"));
            if let Some(kb) = hwm.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()) {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("source.max_bytes"), "{}", stderr(&out));
    assert!(
        sent.load(Ordering::SeqCst) < 256 << 20,
        "the client stopped reading: {} bytes sent",
        sent.load(Ordering::SeqCst)
    );
    assert!(peak_kb < 64 * 1024, "peak RSS {peak_kb} kB");
    let staged: i64 = p.query("SELECT COUNT(*) FROM frames WHERE state <> 'missing'");
    assert_eq!(staged, 0);
}
