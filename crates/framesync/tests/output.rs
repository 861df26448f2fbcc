//! What framesync prints, for cron (which mails every line) and for collectors: nothing when a
//! run succeeds, one line per cause when it fails, a timestamp and the pipeline's name on each
//! line, JSON on request, and a word on a held lock or a backfill with nothing to do.

mod common;

use std::process::Output;

use common::*;
use framesync_testkit::Canned;

const SS_KEY: &str = "ss-k3y-7731";

fn with_key(p: &Pipeline) {
    let config = std::fs::read_to_string(&p.config).unwrap().replace("&to={to}\"", "&to={to}&key=${SS_KEY}\"");
    std::fs::write(&p.config, config).unwrap();
}

fn run(p: &Pipeline, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = p.command(args);
    command.env("SS_KEY", SS_KEY).env_remove("FRAMESYNC_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn a_run_that_exits_0_prints_nothing_though_the_ss_repeats_uids_with_changed_contents() {
    let ss = Canned::json(200, r#"{"items":[{"id":"a","v":1},{"id":"a","v":2},{"id":"a","v":3},{"id":"b"}]}"#);
    let rs = Canned::json(201, "{}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orders.toml");
    let text = format!(
        "ledger = \"orders.db\"\n[frames]\nstart = \"{}\"\ndelay = \"1m\"\n[source]\nurl = \"{}/ss?from={{from}}&to={{to}}\"\nrecords = \"/items\"\nuid = \"/id\"\n[sink]\nurl = \"{}/rs\"\n[run]\nmax_frames = 3\n",
        rfc3339(aligned_minutes_ago(5)),
        ss.base(),
        rs.base()
    );
    std::fs::write(&config, text).unwrap();
    let framesync = |log: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", log)
            .env_remove("FRAMESYNC_LOG")
            .output()
            .unwrap()
    };
    let out = framesync("warn");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((stdout_text(&out), stderr(&out)), (String::new(), String::new()), "a run that exits 0 prints nothing");
    std::fs::remove_file(dir.path().join("orders.db")).unwrap();
    let told = framesync("info");
    assert_eq!(told.status.code(), Some(0), "{}", stderr(&told));
    let repeats: Vec<String> =
        stderr(&told).lines().filter(|l| l.contains("repeated UIDs")).map(String::from).collect();
    assert_eq!(repeats.len(), 3, "asked for, one line per frame, not per UID: {repeats:#?}");
    assert!(
        repeats[0].contains(
            "2 repeated UIDs in one pull were kept once (2 with contents different from the first, e.g. \"a\""
        ),
        "{repeats:#?}"
    );
    assert!(repeats[0].contains(" framesync[orders]: warn: frame "), "the pipeline's name: {repeats:#?}");
}

#[test]
fn a_failing_run_prints_one_line_per_cause_with_the_time_and_the_pipeline() {
    let ss = Canned::json(500, r#"{"error":"boom"}"#);
    let rs = Canned::json(201, "{}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("framesync.toml");
    let text = format!(
        "ledger = \"framesync.db\"\n[frames]\nstart = \"{}\"\ndelay = \"1m\"\n[source]\nurl = \"{}/ss?from={{from}}&to={{to}}&key=${{SS_KEY}}\"\nrecords = \"/items\"\nuid = \"/id\"\n[sink]\nurl = \"{}/rs\"\n[run]\nmax_frames = 10\n",
        rfc3339(aligned_minutes_ago(12)),
        ss.base(),
        rs.base()
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("SS_KEY", SS_KEY)
        .env_remove("RUST_LOG")
        .env_remove("FRAMESYNC_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("failed:")).collect();
    assert_eq!(failed.len(), 1, "one line for the frames that failed the same way: {text}");
    assert!(failed[0].contains(": error: 3 frames failed: GET "), "{text}");
    assert!(failed[0].contains(": HTTP 500: {\"error\":\"boom\"}; no more pulls this run (e.g. frame "), "{text}");
    assert!(text.lines().count() <= 2, "the cause and the footer, no more: {text}");
    for line in text.lines() {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'), "{line}");
        assert!(rest.starts_with("framesync[framesync]: "), "{line}");
    }
    assert!(!text.contains(SS_KEY), "{text}");
}

#[test]
fn json_logs_are_one_object_a_line_from_the_flag_or_the_environment_and_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "13"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(6), "", "", "");
    with_key(&p);
    sim.faults("ss_5xx_rate=1");
    let by_flag = run(&p, &["--log-format", "json", "run"], &[("RUST_LOG", "debug")]);
    let by_env = run(&p, &["run"], &[("FRAMESYNC_LOG", "json")]);
    for out in [&by_flag, &by_env] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        let text = stderr(out);
        assert!(!text.is_empty());
        assert!(!text.contains(SS_KEY), "a secret in the JSON log: {text}");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(value["pipeline"], "ledger", "the ledger's stem names the pipeline: {line}");
            assert!(value["level"].is_string() && value["msg"].is_string(), "{line}");
            let ts = value["ts"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.len() == 24, "ms and Z: {line}");
        }
    }
    assert!(
        stderr(&by_flag).lines().any(|l| l.contains("\"frame\":") && l.contains("\"status\":5")),
        "frame and status as fields: {}",
        stderr(&by_flag)
    );
    let bad = run(&p, &["run"], &[("FRAMESYNC_LOG", "yaml")]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn a_run_from_cron_says_nothing_when_another_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "14"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", "", "");
    let lock = p.dir.path().join("ledger.db.pull.lock");
    let held = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).unwrap();
    held.try_lock().unwrap();
    let out = run(&p, &["run"], &[]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!((stdout_text(&out), stderr(&out)), (String::new(), String::new()), "silent off a terminal");
}

#[test]
fn a_backfill_says_what_it_did_and_when_there_was_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "15"]);
    let reference = aligned_minutes_ago(8);
    let p = Pipeline::new(&sim, dir, reference, "", "", "");
    let (from, to) = (rfc3339(reference), rfc3339(reference + 4 * MINUTE));
    let first = run(&p, &["backfill", "--from", &from, "--to", &to], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let said = stdout_text(&first);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with(&format!("backfill {from}..{to}: 4 frames pulled, 4 delivered, ")), "{said}");
    assert!(said.contains(" dead letters, 0 failures, in "), "{said}");
    let again = run(&p, &["backfill", "--from", &from, "--to", &to], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout_text(&again), format!("nothing to do: every frame in {from}..{to} is delivered\n"));
    assert_eq!(stderr(&again), "");
}

#[test]
fn a_start_not_yet_eligible_is_no_mail_from_cron_but_status_and_check_say_when_it_will_be() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "16"]);
    let start = aligned_minutes_ago(-60);
    let p = Pipeline::new(&sim, dir, start, "", "", "");
    let out = run(&p, &["run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((stdout_text(&out), stderr(&out)), (String::new(), String::new()), "cron mails every line");
    // Frames of a minute, pulled a minute after they close.
    let first = rfc3339(start + 2 * MINUTE);
    let status = p.status_text();
    assert!(
        status
            .contains(&format!("waiting:   frames.start is not yet eligible; its first frame is pulled from {first}")),
        "{status}"
    );
    let check = run(&p, &["check"], &[]);
    assert_eq!(check.status.code(), Some(0), "{}{}", stdout_text(&check), stderr(&check));
    assert!(
        stdout_text(&check).contains(&format!("frames.start: ok, not yet eligible: runs pull nothing until {first}")),
        "{}",
        stdout_text(&check)
    );
}

#[test]
fn a_run_that_panics_prints_the_lines_it_held_before_the_panic() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "17", "--poison-fraction", "1"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", "", "");
    let out = run(&p, &["run"], &[("FRAMESYNC_TEST_PANIC_AT", "before-end-run")]);
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    let said = stderr(&out);
    let held = said.find("dead-lettered").unwrap_or_else(|| panic!("the held lines are lost: {said}"));
    let panic = said.find("FRAMESYNC_TEST_PANIC_AT=before-end-run").expect(&said);
    assert!(held < panic, "held lines first, then the panic: {said}");
}

fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
