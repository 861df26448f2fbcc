//! `init`, `check`, `status` and `--dry-run` against the real binaries.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use common::*;
use framesync_testkit::Canned;

fn init(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_framesync")).arg("--config").arg(config).arg("init").output().unwrap()
}

#[test]
fn init_writes_the_example_config_and_a_ledger_named_after_it_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orders.toml");
    let out = init(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.lines().find(|l| l.starts_with("start = ")).unwrap().split('"').nth(1).unwrap().to_owned();
    let expected = framesync::config::EXAMPLE
        .replace("ledger = \"framesync.db\"", "ledger = \"orders.db\"")
        .replace("start = \"2026-11-01T00:00:00Z\"", &format!("start = \"{start}\""));
    assert_eq!(text, expected, "the example, with its ledger named after the config and a start this hour");
    assert!(dir.path().join("orders.db").exists());
    assert!(!dir.path().join("framesync.db").exists());
    std::fs::write(&config, "# mine").unwrap();
    let again = init(&config);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("does not overwrite"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine");
}

#[test]
fn two_pipelines_initialised_side_by_side_never_share_a_ledger() {
    // Pins the shared `framesync.db` that `init` gave every config in a folder.
    let dir = tempfile::tempdir().unwrap();
    for name in ["orders", "billing"] {
        assert_eq!(init(&dir.path().join(format!("{name}.toml"))).status.code(), Some(0));
        let config =
            framesync::config::Config::load(&dir.path().join(format!("{name}.toml")), &|_| Some("x".into())).unwrap();
        assert_eq!(config.ledger, dir.path().join(format!("{name}.db")));
        assert!(config.ledger.exists());
    }
}

#[test]
fn check_reaches_both_servers_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let lookup = format!("lookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", &lookup, "");
    let out = p.framesync(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("source: ok") && text.contains("sink: ok"), "{text}");
    assert_eq!(sim.stored(), 0, "check stores nothing at the RS");
    assert!(!p.ledger_path().exists(), "check creates no ledger");
}

#[test]
fn check_says_which_server_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "", "");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace(&format!("{}/rs/ingest", sim.addr), &format!("{closed}/rs"));
    std::fs::write(&p.config, text).unwrap();
    let out = p.framesync(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("source: ok") && text.contains("sink: FAILED"), "{text}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(5), "", "", "");
    // A ledger as a run creates it: a dry run creates none (ledger_access.rs).
    framesync::ledger::Ledger::open(&p.ledger_path(), framesync::ledger::Synchronous::Normal).unwrap();
    let out = p.framesync(&["run", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0));
    assert!(text.lines().filter(|l| l.trim_start().starts_with("pull ")).count() >= 3, "{text}");
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM frames"), 0);
    assert_eq!(p.query::<i64>("SELECT COUNT(*) FROM runs"), 0);
    let stats = sim.stats();
    assert!(stats["requests"]["ss_events"].is_null() || stats["requests"]["ss_events"]["total"] == 0, "{stats:#}");
}

#[test]
fn status_shows_missing_ranges_and_failing_frames_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "retries = 0", "");
    sim.faults("rs_down=1");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(1));
    let out = p.framesync(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("missing:") && text.contains("failing:") && text.contains("exit 1"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&p.framesync(&["status", "--json"]).stdout).unwrap();
    assert!(json["lag"]["missing_frames"].as_i64().unwrap() >= 8, "{json:#}");
    assert_eq!(json["last_run"]["exit_code"], 1, "a number");
    assert_json_types(&json);
    assert!(json["failing"][0]["last_error"].as_str().unwrap().contains("POST"), "{json:#}");
}

/// Every field of `status --json` and its JSON type: counts and seconds are numbers (an exit
/// code was once a string), times are strings; `?` marks one that may be null. A field added
/// to the object must be added here.
fn assert_json_types(json: &serde_json::Value) {
    const LAST_RUN: &[(&str, &str)] = &[
        ("command", "string"),
        ("started", "string"),
        ("seconds", "number?"),
        ("exit_code", "number?"),
        ("records_pushed", "number"),
        ("message", "string?"),
    ];
    const LAG: &[(&str, &str)] = &[
        ("eligible_until", "string"),
        ("complete_until", "string"),
        ("lag_seconds", "number"),
        ("missing_frames", "number"),
    ];
    const MISSING: &[(&str, &str)] = &[("from", "string"), ("to", "string"), ("frames", "number")];
    const FAILING: &[(&str, &str)] = &[
        ("frame", "string"),
        ("state", "string"),
        ("attempts", "number"),
        ("last_error", "string?"),
        ("next_attempt", "string?"),
    ];
    const LATE: &[(&str, &str)] = &[
        ("records_24h", "number"),
        ("lateness_p50_seconds", "number?"),
        ("lateness_p99_seconds", "number?"),
        ("delay_needed_at_least_seconds", "number?"),
        ("delay_needed_at_most_seconds", "number?"),
        ("frames_awaiting_recheck", "number"),
    ];
    const SERVER: &[(&str, &str)] = &[
        ("name", "string"),
        ("quiet_until", "string?"),
        ("quiet_reason", "string?"),
        ("clock_skew_seconds", "number?"),
        ("skew_measured", "string?"),
        ("lookup_checked", "string?"),
        ("lookup_off_reason", "string?"),
        ("in_flight_limit", "number?"),
    ];
    const CELL: &[(&str, &str)] = &[
        ("start", "string"),
        ("delivered", "number"),
        ("pending", "number"),
        ("failing", "number"),
        ("missing", "number"),
        ("not_yet_due", "number"),
    ];
    fn kind(value: &serde_json::Value) -> &'static str {
        match value {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "bool",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
        }
    }
    fn fields(at: &str, value: &serde_json::Value, want: &[(&str, &str)]) {
        let object = value.as_object().unwrap_or_else(|| panic!("{at} is not an object: {value}"));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut wanted: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
        keys.sort();
        wanted.sort();
        assert_eq!(keys, wanted, "the fields of {at}");
        for (key, ty) in want {
            let got = kind(&object[*key]);
            let ok = got == ty.trim_end_matches('?') || (ty.ends_with('?') && got == "null");
            assert!(ok, "{at}.{key} is {got}, not {ty}: {value}");
        }
    }
    fn items(at: &str, value: &serde_json::Value, want: &[(&str, &str)]) {
        let list = value.as_array().unwrap_or_else(|| panic!("{at} is not an array"));
        assert!(!list.is_empty(), "{at}: an empty list pins nothing");
        for (i, item) in list.iter().enumerate() {
            fields(&format!("{at}[{i}]"), item, want);
        }
    }
    fields(
        "status",
        json,
        &[
            ("version", "number"),
            ("now", "string"),
            ("ledger", "string"),
            ("last_run", "object"),
            ("lag", "object"),
            ("first_pull_at", "null"),
            ("missing_ranges", "number"),
            ("missing", "array"),
            ("failing_frames", "number"),
            ("failing", "array"),
            ("dead_letters", "number"),
            ("records_failing", "number"),
            ("rechecks_given_up", "number"),
            ("late", "object"),
            ("servers", "array"),
            ("timeline", "object"),
        ],
    );
    fields("last_run", &json["last_run"], LAST_RUN);
    fields("lag", &json["lag"], LAG);
    items("missing", &json["missing"], MISSING);
    items("failing", &json["failing"], FAILING);
    fields("late", &json["late"], LATE);
    items("servers", &json["servers"], SERVER);
    fields("timeline", &json["timeline"], &[("cell_seconds", "number"), ("cells", "array")]);
    items("timeline.cells", &json["timeline"]["cells"], CELL);
}

/// A config whose servers are never reached: enough for the commands that only read the ledger.
fn offline_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("framesync.toml");
    let text = format!(
        "ledger = \"ledger.db\"\n[frames]\nstart = \"{}\"\n[source]\nurl = \"http://127.0.0.1:9/ss?from={{from}}&to={{to}}\"\nuid = \"/id\"\n[sink]\nurl = \"http://127.0.0.1:9/rs\"\n",
        rfc3339(aligned_minutes_ago(10))
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Regression: `framesync status | head -1` panicked in println! ("failed printing to stdout:
/// Broken pipe") and exited 101 once the reader had gone.
#[test]
fn a_command_whose_reader_has_gone_exits_0_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path());
    let framesync = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_framesync"));
        command.arg("--config").arg(&config).args(args).env_remove("RUST_LOG");
        command
    };
    // A ledger as a run creates it: the commands below only read it.
    framesync::ledger::Ledger::open(&dir.path().join("ledger.db"), framesync::ledger::Synchronous::Normal).unwrap();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["status", "--json"],
        &["dead-letters", "list"],
        &["dead-letters", "list", "--json"],
        &["run", "--dry-run"],
    ];
    for args in commands {
        // The read end is closed before the child starts, so its very first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = framesync(args).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?} says nothing, and above all does not panic");
    }
}

// ---- check ---------------------------------------------------------------------------------

/// A config for `check` against canned servers, in `dir`.
fn check_config(dir: &std::path::Path, source_url: &str, sink_url: &str, source_extra: &str, sink_extra: &str) {
    let text = format!(
        "ledger = \"ledger.db\"\n[frames]\nstart = \"{}\"\n[source]\nurl = \"{source_url}\"\nrecords = \"/items\"\nuid = \"/id\"\ntimeout = \"3s\"\n{source_extra}\n[sink]\nurl = \"{sink_url}\"\ntimeout = \"3s\"\n{sink_extra}\n",
        rfc3339(aligned_minutes_ago(10))
    );
    std::fs::write(dir.join("framesync.toml"), text).unwrap();
}

/// Runs `framesync check` on the config in `dir`: its exit code, and stdout followed by stderr.
fn check(dir: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_framesync"))
        .arg("--config")
        .arg(dir.join("framesync.toml"))
        .arg("check")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out))
}

fn an_empty_ss() -> (Canned, String) {
    let ss = Canned::json(200, r#"{"items":[]}"#);
    let url = format!("{}/ss?from={{from}}&to={{to}}", ss.base());
    (ss, url)
}

/// Regression: check said "sink: ok" for an ingest URL answering 404 (any answer to its HEAD
/// counted as reachable).
#[test]
fn check_fails_a_sink_url_that_answers_404_and_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (_ss, source_url) = an_empty_ss();
    let rs = Canned::json(404, r#"{"error":"no such table"}"#);
    check_config(dir.path(), &source_url, &format!("{}/rs?key=${{FRAMESYNC_TEST_RS_KEY}}", rs.base()), "", "");
    let (code, text) = check(dir.path(), &[("FRAMESYNC_TEST_RS_KEY", "k3y-s3cret")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("source: ok") && text.contains("sink: FAILED"), "{text}");
    assert!(text.contains("HTTP 404") && text.contains("no such endpoint"), "{text}");
    assert!(!text.contains("k3y-s3cret") && text.contains("key=***"), "{text}");
}

/// Regression: ureq followed redirects, so check (and every push) went on to wherever a 3xx
/// pointed, and a POST could arrive there as a GET.
#[test]
fn check_fails_servers_that_redirect_naming_the_location_and_never_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let target = Canned::json(200, r#"{"items":[]}"#);
    let location = format!("{}/moved", target.base());
    let ss = Canned::answer(301, &[("Location", &location)], "");
    let rs = Canned::answer(302, &[("Location", &location)], "");
    check_config(
        dir.path(),
        &format!("{}/ss?from={{from}}&to={{to}}", ss.base()),
        &format!("{}/rs", rs.base()),
        "",
        "",
    );
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    for line in ["source: FAILED", "sink: FAILED"] {
        let line = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no {line:?} in {text}"));
        assert!(line.contains(&location) && line.contains("never follows a redirect"), "{line}");
    }
    assert_eq!((ss.requests.load(Ordering::SeqCst), rs.requests.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(target.requests.load(Ordering::SeqCst), 0, "the redirect target is never asked");
}

#[test]
fn check_takes_a_sink_that_answers_a_head_with_405_as_an_endpoint_that_wants_a_post() {
    let dir = tempfile::tempdir().unwrap();
    let (_ss, source_url) = an_empty_ss();
    let rs = Canned::json(405, r#"{"error":"use POST"}"#);
    check_config(dir.path(), &source_url, &format!("{}/rs", rs.base()), "", "");
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sink: ok") && text.contains("HTTP 405"), "{text}");
}

/// A lookup URL answering 200 for everything can never say that a record is absent.
#[test]
fn check_distrusts_a_lookup_that_answers_present_for_a_uid_that_cannot_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (_ss, source_url) = an_empty_ss();
    let rs = Canned::json(405, "");
    let lookup = Canned::json(200, r#"{"id":"whatever"}"#);
    let lookup_url = format!("lookup_url = \"{}/rs/{{uid}}\"", lookup.base());
    check_config(dir.path(), &source_url, &format!("{}/rs", rs.base()), "", &lookup_url);
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("sink: ok") && text.contains("lookup: FAILED"), "{text}");
    assert!(text.contains("cannot say absent"), "{text}");
    assert_eq!(lookup.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn check_warns_that_epoch_seconds_cannot_express_the_frames_last_instant() {
    let rs = Canned::json(405, "");
    let (_ss, source_url) = an_empty_ss();
    let source_url = source_url.replace("{to}", "{last}");
    for (format, code) in [("epoch_s", Some(1)), ("epoch_ms", Some(0)), ("rfc3339", Some(0))] {
        let dir = tempfile::tempdir().unwrap();
        let time_format = format!("time_format = \"{format}\"");
        check_config(dir.path(), &source_url, &format!("{}/rs", rs.base()), &time_format, "");
        let (got, text) = check(dir.path(), &[]);
        assert_eq!(got, code, "{format}: {text}");
        assert!(text.contains("source: ok") && text.contains("sink: ok"), "{format}: {text}");
        let warned =
            text.lines().any(|l| l.starts_with("source.url: WARNING") && l.contains("use epoch_ms or rfc3339"));
        assert_eq!(warned, format == "epoch_s", "{format}: {text}");
    }
}

/// The ledger file's bytes and modification time, and which of its -wal and -shm files exist.
fn ledger_files(dir: &std::path::Path) -> (Vec<u8>, std::time::SystemTime, bool, bool) {
    let ledger = dir.join("ledger.db");
    let exists = |suffix: &str| dir.join(format!("ledger.db{suffix}")).exists();
    (
        std::fs::read(&ledger).unwrap(),
        std::fs::metadata(&ledger).unwrap().modified().unwrap(),
        exists("-wal"),
        exists("-shm"),
    )
}

fn set_schema_version(dir: &std::path::Path, version: i64) {
    let conn = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

/// Regression: check opened the ledger the way a run does, migrating an older one (and leaving
/// -wal and -shm files behind), although it says it changes nothing.
#[test]
fn check_reads_an_older_ledger_without_migrating_it_and_leaves_it_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (_ss, source_url) = an_empty_ss();
    let rs = Canned::json(405, "");
    check_config(dir.path(), &source_url, &format!("{}/rs", rs.base()), "", "");
    // A ledger as a run creates it (a dry run creates none).
    framesync::ledger::Ledger::open(&dir.path().join("ledger.db"), framesync::ledger::Synchronous::Normal).unwrap();
    set_schema_version(dir.path(), 2);
    let before = ledger_files(dir.path());
    assert!(!before.2 && !before.3, "no -wal or -shm file before the check");
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("schema version 2, would be migrated by the next run") && text.contains("0 frames recorded"),
        "{text}"
    );
    assert!(ledger_files(dir.path()) == before, "the ledger, its mtime and its folder are as they were");
    set_schema_version(dir.path(), 999);
    let before = ledger_files(dir.path());
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ledger: FAILED") && text.contains("newer than this framesync knows"), "{text}");
    assert!(ledger_files(dir.path()) == before, "a newer ledger is left as it was too");
}

/// `check` changes nothing: a ledger of an older schema is read as it is, neither migrated nor
/// configured (its bytes stay the same, no `-wal` or `-shm` appears), and an absent one is not
/// created.
#[test]
fn check_leaves_an_older_ledger_byte_for_byte_as_it_was_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let (_ss, source_url) = an_empty_ss();
    let rs = Canned::json(405, r#"{"error":"use POST"}"#);
    check_config(dir.path(), &source_url, &format!("{}/rs", rs.base()), "", "");
    let ledger = dir.path().join("ledger.db");
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!ledger.exists(), "check creates no ledger: {text}");

    let old = rusqlite::Connection::open(&ledger).unwrap();
    old.pragma_update(None, "journal_mode", "WAL").unwrap();
    for sql in [
        include_str!("../sql/0001_init.sql"),
        include_str!("../sql/0002_pruned_totals.sql"),
        include_str!("../sql/0003_late_data_and_servers.sql"),
    ] {
        old.execute_batch(sql).unwrap();
    }
    old.pragma_update(None, "user_version", 3).unwrap();
    old.execute("INSERT INTO pipeline (id, frame_size, reference, delay, updated_at) VALUES (1, 60, 0, 120, 0)", [])
        .unwrap();
    drop(old);
    // The mode framesync gives its ledgers: readable by others, check would warn (ledger_access.rs).
    std::fs::set_permissions(&ledger, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = std::fs::read(&ledger).unwrap();
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("schema version 3, would be migrated by the next run"), "{text}");
    assert_eq!(std::fs::read(&ledger).unwrap(), before, "the ledger is as it was");
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!dir.path().join(format!("ledger.db{suffix}")).exists(), "check left a {suffix} file");
    }
}
