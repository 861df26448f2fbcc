//! Many pipelines on one host: `run --all DIR` runs each `*.toml` of DIR as a process of its
//! own, a bounded number at a time, and `status --all DIR` shows them in one table.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;

/// Writes `DIR/<name>.toml`, a pipeline on `sim` whose ledger is `DIR/<name>.db`.
fn add(dir: &Path, name: &str, sim: &Sim, reference: i64, sink_extra: &str) -> PathBuf {
    let scratch = tempfile::tempdir().unwrap();
    let p = Pipeline::new(sim, scratch, reference, "", sink_extra, "");
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("ledger = \"ledger.db\"", &format!("ledger = \"{name}.db\""));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, text).unwrap();
    config
}

fn query<T: rusqlite::types::FromSql>(ledger: &Path, sql: &str) -> T {
    let conn = rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every frame the ledger says is delivered is at the RS exactly once.
fn assert_exactly_once(ledger: &Path, sim: &Sim, reference: i64) {
    let until: String = query(ledger, "SELECT complete_until FROM lag");
    let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap().timestamp();
    assert!(until > reference, "nothing delivered from {}", ledger.display());
    let check = sim.check(reference, until);
    for key in ["missing", "extra", "duplicates"] {
        assert_eq!(check[key], 0, "{key} in {check:#}");
    }
    assert!(check["expected"].as_i64().unwrap() > 0, "{check:#}");
}

fn framesync(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_framesync"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FRAMESYNC_LOG")
        .env_remove("FRAMESYNC_CONFIG")
        .output()
        .unwrap()
}

fn all(command: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![command, "--all", dir.to_str().unwrap()];
    args.extend(extra);
    framesync(&args)
}

fn sim(dir: &Path, seed: &str) -> Sim {
    Sim::start(dir, &["--records-per-minute", "3", "--seed", seed])
}

#[test]
fn one_run_all_delivers_two_pipelines_exactly_once_and_prints_nothing() {
    let (d1, d2, fleet) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (sim(d1.path(), "81"), sim(d2.path(), "82"));
    let reference = aligned_minutes_ago(8);
    add(fleet.path(), "orders", &s1, reference, "");
    add(fleet.path(), "billing", &s2, reference, "");
    std::fs::write(fleet.path().join("orders.env"), "NOT=a pipeline\n").unwrap();
    let out = all("run", fleet.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(text(&out), "", "a fleet that succeeds prints nothing");
    assert_exactly_once(&fleet.path().join("orders.db"), &s1, reference);
    assert_exactly_once(&fleet.path().join("billing.db"), &s2, reference);
}

#[test]
fn a_failing_pipeline_does_not_stop_the_others_and_the_summary_names_it() {
    let (d1, d2, fleet) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (sim(d1.path(), "83"), sim(d2.path(), "84"));
    let reference = aligned_minutes_ago(6);
    add(fleet.path(), "orders", &s1, reference, "");
    add(fleet.path(), "billing", &s2, reference, "retries = 0");
    std::fs::write(fleet.path().join("broken.toml"), "ledger = 3\n").unwrap();
    s2.faults("rs_down=1");
    let out = all("run", fleet.path(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "the most severe failure, the config error: {err}");
    assert!(err.lines().any(|l| l == "framesync: 2 of 3 pipelines failed: billing (exit 1), broken (exit 2)"), "{err}");
    assert!(err.lines().any(|l| l.contains(" framesync[billing]: error: ")), "billing's lines pass through: {err}");
    assert!(err.lines().any(|l| l.contains("broken.toml")), "broken's error passes through: {err}");
    assert!(!err.contains("framesync[orders]"), "orders succeeded and says nothing: {err}");
    assert_exactly_once(&fleet.path().join("orders.db"), &s1, reference);
}

#[test]
fn a_pipeline_whose_lock_is_held_exits_75_and_the_others_proceed() {
    let (d1, d2, fleet) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (sim(d1.path(), "85"), sim(d2.path(), "86"));
    let reference = aligned_minutes_ago(6);
    add(fleet.path(), "orders", &s1, reference, "");
    add(fleet.path(), "billing", &s2, reference, "");
    let held = fleet.path().join("billing.db");
    let locks =
        framesync::lock::acquire_all(&held, &[framesync::lock::Side::Pull, framesync::lock::Side::Push]).unwrap();
    let out = all("run", fleet.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "75 is normal under cron: {}", text(&out));
    assert_eq!(text(&out), "");
    assert!(!held.exists(), "billing's run exited at once, before its ledger");
    assert_eq!(s2.stored(), 0);
    assert_exactly_once(&fleet.path().join("orders.db"), &s1, reference);
    drop(locks);
}

#[test]
fn a_slow_pipeline_holds_one_slot_and_never_the_others() {
    let (d1, d2, fleet) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (slow, fast) = (sim(d1.path(), "87"), sim(d2.path(), "88"));
    slow.faults("rs_latency_ms=300");
    let reference = aligned_minutes_ago(6);
    // Sorted by name, the slow one starts first.
    let (a, b) = (fleet.path().join("a_slow.db"), fleet.path().join("b_fast.db"));
    add(fleet.path(), "a_slow", &slow, reference, "");
    add(fleet.path(), "b_fast", &fast, reference, "");
    let ended = |ledger: &Path| -> i64 { query(ledger, "SELECT MAX(ended_at) FROM runs") };
    let started = |ledger: &Path| -> i64 { query(ledger, "SELECT MAX(started_at) FROM runs") };

    let out = all("run", fleet.path(), &["--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(ended(&b) < ended(&a), "the fast pipeline finished while the slow one worked");
    assert_exactly_once(&a, &slow, reference);
    assert_exactly_once(&b, &fast, reference);

    std::fs::remove_file(fleet.path().join("b_fast.db")).unwrap();
    let _ = std::fs::remove_file(fleet.path().join("b_fast.db-wal"));
    let _ = std::fs::remove_file(fleet.path().join("b_fast.db-shm"));
    let rs = rusqlite::Connection::open(&fast.db).unwrap();
    rs.execute_batch("DELETE FROM records; DELETE FROM idempotency_keys;").unwrap();
    std::fs::remove_file(&a).unwrap();
    let _ = std::fs::remove_file(fleet.path().join("a_slow.db-wal"));
    let _ = std::fs::remove_file(fleet.path().join("a_slow.db-shm"));
    let rs = rusqlite::Connection::open(&slow.db).unwrap();
    rs.execute_batch("DELETE FROM records; DELETE FROM idempotency_keys;").unwrap();
    let out = all("run", fleet.path(), &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(started(&b) >= ended(&a), "one at a time, in order");
    assert_exactly_once(&a, &slow, reference);
    assert_exactly_once(&b, &fast, reference);
}

#[test]
fn status_all_shows_one_row_per_pipeline_and_creates_no_ledger() {
    let (d1, d2, d3, fleet) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (s1, s2, s3) = (sim(d1.path(), "89"), sim(d2.path(), "90"), sim(d3.path(), "91"));
    let reference = aligned_minutes_ago(6);
    add(fleet.path(), "billing", &s2, reference, "retries = 0");
    add(fleet.path(), "orders", &s1, reference, "");
    s2.faults("rs_down=1");
    let out = all("run", fleet.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    add(fleet.path(), "stock", &s3, reference, "");

    let out = all("status", fleet.path(), &[]);
    assert_eq!(out.status.code(), Some(3), "as `status` exits for a pipeline with no ledger: {}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("PIPELINE") && lines[0].contains("DEAD") && lines[0].ends_with("PROBLEM"), "{table}");
    assert!(lines[1].starts_with("billing ") && lines[1].contains(" run exit 1"), "{table}");
    assert!(lines[2].starts_with("orders ") && lines[2].contains(" run exit 0"), "{table}");
    assert!(lines[3].starts_with("stock ") && lines[3].ends_with("no ledger yet"), "{table}");

    let out = all("status", fleet.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["pipeline"], "billing");
    assert!(rows[0]["failing_frames"].as_i64().unwrap() >= 1, "{rows:#?}");
    assert_eq!(rows[0]["last_run"]["exit_code"], 1);
    assert_eq!(rows[1]["pipeline"], "orders");
    assert_eq!(rows[1]["failing_frames"], 0);
    assert!(rows[1]["missing_frames"].is_i64() && rows[1]["lag_seconds"].is_i64(), "numbers as numbers: {rows:#?}");
    assert_eq!(rows[1]["last_run"]["exit_code"], 0);
    assert_eq!((rows[1]["exit_code"].as_i64(), rows[1]["error"].is_null()), (Some(0), true));
    assert_eq!((rows[2]["error"].as_str(), rows[2]["exit_code"].as_i64()), (Some("no ledger yet"), Some(3)));
    let stock: Vec<String> = std::fs::read_dir(fleet.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("stock.db"))
        .collect();
    assert!(stock.is_empty(), "status --all is read-only: {stock:?}");
}

#[test]
fn an_empty_or_missing_folder_or_a_zero_jobs_is_a_usage_error() {
    let fleet = tempfile::tempdir().unwrap();
    std::fs::write(fleet.path().join("orders.env"), "").unwrap();
    for command in ["run", "pull", "push", "status"] {
        let out = all(command, fleet.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
        assert!(stderr(&out).contains("no *.toml"), "{command}: {}", text(&out));
        let out = all(command, &fleet.path().join("nope"), &[]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
    }
    let out = all("run", fleet.path(), &["--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--jobs"), "{}", text(&out));
}

#[test]
fn two_configs_on_one_ledger_are_refused_and_the_rest_of_the_fleet_runs() {
    let (d1, d2, fleet) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (sim(d1.path(), "91"), sim(d2.path(), "92"));
    let reference = aligned_minutes_ago(6);
    let orders = add(fleet.path(), "orders", &s1, reference, "");
    std::fs::copy(&orders, fleet.path().join("orders-copy.toml")).unwrap();
    add(fleet.path(), "billing", &s2, reference, "");
    let out = all("run", fleet.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("2 of 3 pipelines failed: orders (not run: orders-copy.toml shares the name \"orders\" (its ledger's) with orders.toml: "),
        "{said}"
    );
    assert!(!fleet.path().join("orders.db").exists(), "neither config on the shared ledger ran");
    assert_eq!(s1.stored(), 0);
    assert_exactly_once(&fleet.path().join("billing.db"), &s2, reference);
    let status = all("status", fleet.path(), &[]);
    assert_eq!(status.status.code(), Some(3), "no ledger yet for orders: {}", text(&status));
    let table = text(&status);
    let clashing: Vec<&str> = table.lines().filter(|l| l.contains("shares the name \"orders\"")).collect();
    assert_eq!(clashing.len(), 2, "{table}");
}
