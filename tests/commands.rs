//! `init`, `check`, `status` and `--dry-run` against the real binaries.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn init_writes_the_example_config_and_its_ledger_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orders.toml");
    let init =
        || Command::new(env!("CARGO_BIN_EXE_framesync")).arg("--config").arg(&config).arg("init").output().unwrap();
    let out = init();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), framesync::config::EXAMPLE);
    assert!(dir.path().join("framesync.db").exists());
    std::fs::write(&config, "# mine").unwrap();
    let again = init();
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("does not overwrite"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine");
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
    assert_eq!(json["last_run"]["exit_code"], "1");
    assert!(json["failing"][0]["last_error"].as_str().unwrap().contains("POST"), "{json:#}");
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
    let created = framesync(&["run", "--dry-run"]).output().unwrap();
    assert_eq!(created.status.code(), Some(0), "the dry run creates the ledger: {}", stderr(&created));
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
