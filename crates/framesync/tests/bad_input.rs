//! Bad input (design §7) gets a clear error, and nothing is lost or wrongly marked delivered:
//! bad configs, bad SS answers, RS answers of every class, unusable ledgers.

mod common;

use std::net::TcpListener;
use std::sync::atomic::Ordering;

use common::*;
use framesync_testkit::Canned;

fn config_text(ss: &str, rs: &str, extra_source: &str) -> String {
    format!(
        r#"ledger = "ledger.db"
[frames]
start = "{start}"
delay = "1m"
[source]
url = "{ss}/ss?from={{from}}&to={{to}}"
records = "/items"
uid = "/id"
timeout = "3s"
{extra_source}
[sink]
url = "{rs}/rs"
timeout = "3s"
retries = 0
[run]
max_frames = 3
retry_base = "1s"
"#,
        start = rfc3339(aligned_minutes_ago(5)),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Setup {
    fn new(text: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("framesync.toml");
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        let conn = rusqlite::Connection::open(self.dir.path().join("ledger.db")).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

// ---- config ------------------------------------------------------------------------------

#[test]
fn a_bad_config_exits_2_naming_the_key_and_touches_nothing() {
    let cases = [
        ("timeout = \"3s\"", "timeout = \"soon\"", "source.timeout"),
        ("uid = \"/id\"", "uid = \"id\"", "source.uid"),
        ("max_frames = 3", "max_frames = 0", "run.max_frames"),
        ("delay = \"1m\"", "delay = \"1m\"\nsize = \"7m\"", "frames.size"),
        (
            "records = \"/items\"",
            "records = \"/items\"\nheaders = { Authorization = \"Bearer ${FRAMESYNC_TEST_UNSET}\" }",
            "FRAMESYNC_TEST_UNSET",
        ),
        ("retries = 0", "retries = 0\nmode = \"stream\"", "sink.mode"),
        ("uid = \"/id\"", "uid = \"/id\"\nuidd = 1", "uidd"),
    ];
    for (from, to, key) in cases {
        let text = config_text("http://127.0.0.1:9", "http://127.0.0.1:9", "").replacen(from, to, 1);
        let s = Setup::new(&text);
        let out = s.run(&["run"]);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{key} not named: {}", stderr(&out));
        assert!(!s.dir.path().join("ledger.db").exists(), "nothing created");
    }
}

/// Regression: this reference time panicked with an arithmetic overflow (aligning it down to a
/// frame) instead of being refused as a bad config.
#[test]
fn a_reference_time_that_would_overflow_exits_2_naming_the_key_and_the_valid_range() {
    let text = config_text("http://127.0.0.1:9", "http://127.0.0.1:9", "");
    let text: String = text
        .lines()
        .map(|l| if l.starts_with("start = ") { "start = \"-9223372036854775000\"\n".into() } else { format!("{l}\n") })
        .collect();
    let s = Setup::new(&text);
    let out = s.run(&["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("frames.start") && err.contains("1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!s.dir.path().join("ledger.db").exists(), "nothing created");
}

#[test]
fn no_config_at_all_exits_2_and_says_how_to_give_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
        .arg("run")
        .env_remove("FRAMESYNC_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config") && stderr(&out).contains("FRAMESYNC_CONFIG"));
}

#[test]
fn the_config_can_come_from_the_environment() {
    let s = Setup::new(&config_text("http://127.0.0.1:9", "http://127.0.0.1:9", ""));
    // A dry run reads the ledger and creates none: a run would have made it.
    framesync::ledger::Ledger::open(&s.dir.path().join("ledger.db"), framesync::ledger::Synchronous::Normal).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
        .args(["run", "--dry-run"])
        .env("FRAMESYNC_CONFIG", &s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pull"));
}

// ---- SS answers --------------------------------------------------------------------------

/// Runs against an SS giving `response`, and checks: exit 1, the error names `want`, the
/// frames stay missing with their error, nothing is staged or delivered, the RS got nothing.
fn ss_answer_is_refused(ss: Canned, extra_source: &str, want: &str) {
    let rs = Canned::json(201, "{}");
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), extra_source));
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{want}: {}", stderr(&out));
    assert!(stderr(&out).contains(want), "{want:?} not in: {}", stderr(&out));
    let missing: i64 = s.query("SELECT COUNT(*) FROM frames WHERE state = 'missing' AND attempts = 1");
    assert!(missing >= 1, "{want}");
    let error: String = s.query("SELECT last_error FROM frames LIMIT 1");
    assert!(error.contains(want), "{error}");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM staged"), 0);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM frames WHERE state <> 'missing'"), 0);
    assert_eq!(rs.requests.load(Ordering::SeqCst), 0, "nothing pushed");
}

#[test]
fn an_ss_answer_that_is_not_json_is_refused() {
    ss_answer_is_refused(Canned::json(200, "<html>maintenance</html>"), "", "not JSON");
}

#[test]
fn an_ss_answer_without_a_records_array_is_refused() {
    ss_answer_is_refused(Canned::json(200, r#"{"data": []}"#), "", "no records array at \"/items\"");
}

#[test]
fn a_truncated_ss_answer_is_refused() {
    let body = r#"{"items": [{"id": "a"}, {"id": "#;
    let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len() + 50);
    ss_answer_is_refused(Canned::start(response.into_bytes()), "", "GET");
}

#[test]
fn an_ss_answer_larger_than_the_limit_is_refused() {
    let items: Vec<String> = (0..200).map(|i| format!(r#"{{"id":"r{i}","pad":"{}"}}"#, "x".repeat(50))).collect();
    let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
    ss_answer_is_refused(Canned::json(200, &body), "max_bytes = 1000", "source.max_bytes");
}

#[test]
fn more_records_than_the_limit_are_refused() {
    let body = r#"{"items":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#;
    ss_answer_is_refused(Canned::json(200, body), "max_records = 2", "source.max_records");
}

#[test]
fn an_ss_error_status_is_recorded_with_its_excerpt() {
    ss_answer_is_refused(Canned::json(500, r#"{"error":"db down"}"#), "", "HTTP 500");
}

#[test]
fn an_ss_that_asks_for_quiet_gets_one_request_per_run() {
    let ss = Canned::start(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let rs = Canned::json(201, "{}");
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), ""));
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ss.requests.load(Ordering::SeqCst), 1);
    let wait: i64 = s.query("SELECT next_attempt - updated_at FROM frames");
    assert!(wait >= 30, "the frame waits for Retry-After: {wait}");
}

#[test]
fn records_without_uid_are_dead_lettered_and_duplicates_in_a_frame_are_sent_once() {
    let ss = Canned::json(200, r#"{"items":[{"id":"a","v":1},{"v":2},{"id":"a","v":1},{"id":"b"}]}"#);
    let rs = Canned::json(201, "{}");
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), ""));
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "a run that dead-letters a record exits 1: {}", stderr(&out));
    assert!(stderr(&out).contains("1 record was dead-lettered this run (1 invalid)"), "{}", stderr(&out));
    let invalid: i64 =
        s.query("SELECT COUNT(*) FROM dead_letters WHERE reason = 'invalid' AND detail LIKE '%no UID at /id%'");
    assert_eq!(invalid, 1, "the record without UID is dead-lettered, once however often it is pulled");
    let frames: i64 = s.query("SELECT COUNT(*) FROM frames WHERE state = 'delivered'");
    assert_eq!(frames, 3);
    assert_eq!(s.query::<i64>("SELECT SUM(duplicates) FROM frames"), frames, "the repeat of a is counted per frame");
    let seen = rs.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "a and b are each sent once, though every frame returned them: {seen:?}");
}

// ---- RS answers --------------------------------------------------------------------------

fn rs_answer(status: u16, body: &str) -> (Setup, Canned, std::process::Output) {
    let ss = Canned::json(200, r#"{"items":[{"id":"a"}]}"#);
    let rs = Canned::json(status, body);
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), "").replace("max_frames = 3", "max_frames = 1"));
    let out = s.run(&["run"]);
    (s, rs, out)
}

#[test]
fn rs_acknowledgements_and_already_there_deliver_the_frame() {
    for status in [200, 201, 204, 409] {
        let (s, _rs, out) = rs_answer(status, "{}");
        assert_eq!(out.status.code(), Some(0), "{status}: {}", stderr(&out));
        assert_eq!(s.query::<String>("SELECT state FROM frames"), "delivered", "{status}");
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM delivered"), 1, "{status}");
    }
}

#[test]
fn rs_retryable_answers_keep_the_record_for_later_and_mark_nothing_delivered() {
    for status in [429, 500, 502, 503, 408] {
        let (s, _rs, out) = rs_answer(status, r#"{"error":"busy"}"#);
        assert_eq!(out.status.code(), Some(1), "{status}");
        assert!(stderr(&out).contains(&format!("HTTP {status}")), "{status}: {}", stderr(&out));
        assert_eq!(s.query::<String>("SELECT state FROM frames"), "pushing", "{status}");
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM delivered"), 0, "{status}");
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM staged"), 1, "{status}: the record stays staged");
        let error: String = s.query("SELECT last_error FROM frames");
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
    }
}

#[test]
fn rs_permanent_rejections_dead_letter_the_record_with_the_answer_and_the_run_says_so() {
    for status in [400, 422, 413] {
        let (s, _rs, out) = rs_answer(status, r#"{"error":"amount must be positive"}"#);
        assert_eq!(out.status.code(), Some(1), "{status}");
        let lines: Vec<&str> =
            std::str::from_utf8(&out.stderr).unwrap().lines().filter(|l| l.contains("dead-lettered")).collect();
        assert_eq!(lines.len(), 1, "one summary line, not one per record: {lines:?}");
        assert!(lines[0].contains("framesync dead-letters list"), "{lines:?}");
        assert_eq!(s.query::<String>("SELECT state FROM frames"), "delivered", "{status}");
        let response: String = s.query("SELECT response FROM dead_letters WHERE uid = 'a'");
        assert!(response.contains("amount must be positive"), "{response}");
        assert_eq!(s.query::<i64>("SELECT status FROM dead_letters"), status as i64);
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM delivered"), 0);
    }
}

/// Pins silent loss: a sink URL answering 404 (a typo, a dropped table), 401 or 403 (an
/// expired token) dead-lettered every record and the run exited 0 with the frames delivered.
#[test]
fn rs_answers_that_blame_the_rs_or_the_config_fail_the_frame_and_dead_letter_nothing() {
    for status in [401, 403, 404, 405, 407, 410, 415] {
        let (s, _rs, out) = rs_answer(status, r#"{"error":"nope"}"#);
        assert_eq!(out.status.code(), Some(1), "{status}");
        assert_eq!(s.query::<String>("SELECT state FROM frames"), "pushing", "{status}");
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM dead_letters"), 0, "{status}");
        assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM staged"), 1, "{status}: the record stays staged");
        let error: String = s.query("SELECT last_error FROM frames");
        assert!(error.contains(&format!("HTTP {status}")) && error.contains("not a record"), "{status}: {error}");
    }
}

/// Pins silent loss: the RS answered the POST with `302 Location: /login`, the client followed
/// it as a GET, got 200, and the record counted as delivered while the RS stored nothing.
#[test]
fn a_redirected_push_is_a_failure_and_the_redirect_is_never_followed() {
    let login = Canned::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec());
    let ss = Canned::json(200, r#"{"items":[{"id":"a"}]}"#);
    let rs = Canned::start(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {}/login\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            login.base()
        )
        .into_bytes(),
    );
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), "").replace("max_frames = 3", "max_frames = 1"));
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(login.requests.load(Ordering::SeqCst), 0, "the redirect is not followed");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM delivered"), 0);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM dead_letters"), 0);
    let error: String = s.query("SELECT last_error FROM frames");
    assert!(error.contains("HTTP 302") && error.contains("/login"), "{error}");
}

#[test]
fn an_rs_that_refuses_connections_is_retried_later() {
    let ss = Canned::json(200, r#"{"items":[{"id":"a"}]}"#);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = Setup::new(
        &config_text(&ss.base(), &format!("http://{closed}"), "").replace("max_frames = 3", "max_frames = 1"),
    );
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM delivered"), 0);
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM staged WHERE uid = 'a'"), 1, "the record stays staged");
}

#[test]
fn uids_with_control_characters_never_reach_a_header_unescaped() {
    let ss = Canned::json(200, r#"{"items":[{"id":"a\r\nX-Injected: 1"}]}"#);
    let rs = Canned::json(201, "{}");
    let s = Setup::new(&config_text(&ss.base(), &rs.base(), "").replace("max_frames = 3", "max_frames = 1"));
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        s.query::<i64>("SELECT COUNT(*) FROM delivered WHERE uid = 'a' || char(13) || char(10) || 'X-Injected: 1'"),
        1
    );
    assert_eq!(rs.requests.load(Ordering::SeqCst), 1);
}

// ---- the ledger --------------------------------------------------------------------------

#[test]
fn a_ledger_that_is_not_sqlite_exits_3_and_is_left_as_it_was() {
    let s = Setup::new(&config_text("http://127.0.0.1:9", "http://127.0.0.1:9", ""));
    let ledger = s.dir.path().join("ledger.db");
    let junk = "not a database ".repeat(100);
    std::fs::write(&ledger, &junk).unwrap();
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a SQLite database"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&ledger).unwrap(), junk);
}

#[test]
fn a_ledger_from_a_newer_framesync_exits_3() {
    let s = Setup::new(&config_text("http://127.0.0.1:9", "http://127.0.0.1:9", ""));
    framesync::ledger::Ledger::open(&s.dir.path().join("ledger.db"), framesync::ledger::Synchronous::Normal).unwrap();
    let conn = rusqlite::Connection::open(s.dir.path().join("ledger.db")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
}

#[test]
fn a_reference_time_in_the_future_does_nothing_and_says_so() {
    let text = config_text("http://127.0.0.1:9", "http://127.0.0.1:9", "").replacen(
        &rfc3339(aligned_minutes_ago(5)),
        &rfc3339(aligned_minutes_ago(-600)),
        1,
    );
    let s = Setup::new(&text);
    let out = s.run(&["run"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "", "nothing failed: cron hears nothing");
    assert_eq!(s.query::<i64>("SELECT COUNT(*) FROM frames"), 0);
    let status = s.run(&["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("waiting:   frames.start is not yet eligible"), "status says so: {said}");
}
