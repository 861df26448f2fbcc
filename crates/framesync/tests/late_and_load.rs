//! Late data, load and time (issue: the problems a plain scheduler leaves open), end to end
//! against the simulator, scaled down in time: 1-second frames stand for 1-minute ones.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn second_frames(
    sim: &Sim,
    dir: tempfile::TempDir,
    seconds_back: i64,
    frames: &str,
    sink: &str,
    run: &str,
) -> Pipeline {
    Pipeline::build(sim, dir, now() - seconds_back, frames, "timeout = \"5s\"", sink, run)
}

fn ok(out: &Output) -> bool {
    out.status.code() == Some(0)
}

#[test]
fn late_records_are_found_by_the_recheck_and_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &["--records-per-minute", "600", "--late-fraction", "0.05", "--max-lateness", "8s", "--seed", "41"],
    );
    // Scaled from delay 1m, re-check 10m, lateness up to 5m. The range starts now, so each
    // frame is first pulled as soon as it is eligible, as cron would, and misses its late records.
    let p = second_frames(&sim, dir, -1, "size = \"1s\"\ndelay = \"2s\"\nrecheck = [\"12s\"]", "", "retain = \"1h\"");
    let range = (p.reference, p.reference + 20);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = p.framesync(&["run"]);
        assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
        let rechecked: i64 = p.query(&format!(
            "SELECT COUNT(*) FROM frames WHERE start >= {} AND start < {} AND rechecks >= 1 AND state = 'delivered'",
            range.0, range.1
        ));
        if rechecked == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "re-checks not done: {rechecked}/20\n{}", p.status_text());
        std::thread::sleep(Duration::from_millis(500));
    }
    let check = sim.check(range.0, range.1);
    for key in ["missing", "extra", "duplicates"] {
        assert_eq!(check[key], 0, "{key}: {check:#}");
    }
    let late: i64 =
        p.query(&format!("SELECT COUNT(*) FROM late_records WHERE frame >= {} AND frame < {}", range.0, range.1));
    let counted: i64 =
        p.query(&format!("SELECT SUM(late) FROM frames WHERE start >= {} AND start < {}", range.0, range.1));
    assert!(late > 0, "the simulator made some records late: {check:#}");
    assert_eq!(late, counted);
    let lateness: i64 = p.query("SELECT MAX(found_at - ts / 1000) FROM late_records");
    assert!((1..=60).contains(&lateness), "{lateness}");
    let status: serde_json::Value = serde_json::from_slice(&p.framesync(&["status", "--json"]).stdout).unwrap();
    let reported = &status["late"];
    assert!(reported["records_24h"].as_i64().unwrap() >= late, "{reported:#}");
    assert!(reported["lateness_p99_seconds"].as_i64().is_some_and(|s| s >= 1), "{reported:#}");
    assert!(reported["delay_needed_at_most_seconds"].as_i64().is_some(), "{reported:#}");
    let text = String::from_utf8_lossy(&p.framesync(&["status"]).stdout).into_owned();
    assert!(text.contains("late:"), "{text}");
    let delivered: i64 =
        p.query(&format!("SELECT COUNT(*) FROM delivered WHERE frame >= {} AND frame < {}", range.0, range.1));
    assert_eq!(delivered, check["expected"].as_i64().unwrap(), "every record once, late ones included");
}

#[test]
fn after_a_long_rs_outage_the_backlog_drains_while_fresh_frames_stay_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "120", "--seed", "42"]);
    // Scaled from 1-minute frames and a 24-hour outage: 1-second frames, 90 seconds missing.
    let p = second_frames(
        &sim,
        dir,
        90,
        "size = \"1s\"\ndelay = \"2s\"",
        "retries = 0",
        "max_frames = 8\nfresh = \"3s\"\nretry_base = \"0s\"\nretry_max = \"1s\"",
    );
    sim.faults("rs_down=1");
    for _ in 0..3 {
        p.framesync(&["run"]);
        std::thread::sleep(Duration::from_millis(700));
    }
    sim.faults("rs_down=0");
    let back = now();
    let missing_at_start = p.missing_frames();
    assert!(missing_at_start >= 80, "{}", p.status_text());
    let mut runs = 0;
    while !(ok(&p.framesync(&["run"])) && p.missing_frames() == 0) {
        runs += 1;
        assert!(runs < 60, "not caught up: {}", p.status_text());
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(runs >= 5, "the backlog took several runs ({runs}): it is bounded by max_frames");
    // Every frame that became eligible after the RS came back was delivered within
    // 2 x delay + one frame of becoming eligible (end + delay).
    let late_fresh: Vec<(i64, i64)> = {
        let conn = rusqlite::Connection::open(p.ledger_path()).unwrap();
        let mut stmt = conn
            .prepare("SELECT start, delivered_at - (end + 2) FROM frames WHERE end + 2 > ?1 AND delivered_at - (end + 2) > 5")
            .unwrap();
        stmt.query_map([back + 1], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert!(late_fresh.is_empty(), "fresh frames delivered late during catch-up: {late_fresh:?}");
    p.assert_exactly_once(&sim);
}

#[test]
fn with_a_backfill_window_no_old_frame_is_pulled_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "2"]);
    let hour = (now() % 86_400) / 3600;
    let closed = format!("backfill_window = \"{:02}:00-{:02}:00\"", (hour + 2) % 24, (hour + 3) % 24);
    let open = format!("backfill_window = \"{:02}:00-{:02}:00\"", hour, (hour + 1) % 24);
    let reference = aligned_minutes_ago(60);
    let p = Pipeline::new(&sim, dir, reference, "", "", &format!("fresh = \"5m\"\n{closed}"));
    assert!(ok(&p.framesync(&["run"])));
    let horizon = (now() - 60) / 60 * 60;
    let oldest: i64 = p.query("SELECT MIN(start) FROM frames");
    assert!(oldest >= horizon - 6 * 60, "an old frame was pulled outside the window: {}", rfc3339(oldest));
    assert!(p.missing_frames() >= 50, "the old gap waits for the window");
    let text = std::fs::read_to_string(&p.config).unwrap().replace(&closed, &open);
    std::fs::write(&p.config, text).unwrap();
    assert!(ok(&p.framesync(&["run"])));
    assert_eq!(
        p.query::<i64>("SELECT MIN(start) FROM frames"),
        reference,
        "inside the window the oldest gap goes first"
    );
    p.assert_exactly_once(&sim);
}

#[test]
fn an_ss_asking_for_30s_of_quiet_gets_no_request_until_then_even_from_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--ss-429-rate", "1", "--retry-after", "30"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "", "");
    let requests = || sim.stats()["requests"]["ss_events"]["total"].as_i64().unwrap_or(0);
    let first = p.framesync(&["run"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(stderr(&first).contains("429"), "{}", stderr(&first));
    assert_eq!(requests(), 1, "one request, then quiet");
    let quiet_for: i64 = p.query("SELECT quiet_until - updated_at FROM servers WHERE name = 'source'");
    assert!(quiet_for >= 30, "{quiet_for}");
    for _ in 0..3 {
        let next = p.framesync(&["run"]);
        assert_eq!(next.status.code(), Some(0), "waiting is not a failure: {}", stderr(&next));
    }
    assert_eq!(requests(), 1, "no request before Retry-After has passed, from any run");
}

#[test]
fn the_rate_limits_hold_at_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "30", "--page-size", "10", "--seed", "44"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(8), "max_rps = 10", "max_rps = 60", "");
    let started = Instant::now();
    let out = p.framesync(&["run"]);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(ok(&out), "{}", stderr(&out));
    let stats = sim.stats();
    let ss = stats["requests"]["ss_events"]["total"].as_f64().unwrap();
    let rs = stats["requests"]["rs_ingest"]["total"].as_f64().unwrap();
    assert!(ss >= 20.0 && rs >= 200.0, "{stats:#}");
    // Paced requests: the n-th starts no sooner than (n - 1) / rate after the first.
    assert!(ss <= 1.0 + 10.0 * elapsed, "{ss} SS requests in {elapsed:.2}s");
    assert!(rs <= 1.0 + 60.0 * elapsed, "{rs} RS requests in {elapsed:.2}s");
    p.assert_exactly_once(&sim);
}

#[test]
fn in_batch_mode_a_failed_batch_is_sent_again_with_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "20", "--rs-drop-response-rate", "0.1", "--seed", "45"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(20), "", "mode = \"batch\"\nbatch_size = 6\nretries = 0", "");
    p.run_until_complete(60);
    assert!(sim.stats()["faults"]["rs_dropped_responses"].as_i64().unwrap() > 0);
    p.assert_exactly_once(&sim);
}
