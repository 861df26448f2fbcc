//! `status` against the real binaries: the one-screen summary, its 24-hour timeline (plain,
//! and coloured only when asked or on a terminal), and the documented `--json` shape.

mod common;

use serde_json::Value;

use common::*;

/// A pipeline 90 minutes back whose RS went down halfway: delivered, failing, staged and
/// never-pulled frames at once, and some dead letters.
fn partial_failure(dir: tempfile::TempDir, sim: &Sim) -> Pipeline {
    let p = Pipeline::new(sim, dir, aligned_minutes_ago(90), "", "retries = 0", "max_frames = 40");
    // The RS refuses the poison records: a run that dead-letters any exits 1.
    let first = p.framesync(&["run"]).status.code();
    let dead: i64 = p.query("SELECT COUNT(*) FROM dead_letters");
    assert_eq!(first, Some(if dead > 0 { 1 } else { 0 }), "{dead} dead letters");
    sim.faults("rs_down=1");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(1));
    p
}

fn stdout(p: &Pipeline, args: &[&str]) -> String {
    let out = p.framesync(args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_shows_runs_lag_problems_late_data_and_a_24_hour_timeline_with_a_legend() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "4", "--poison-fraction", "0.1"]);
    let p = partial_failure(dir, &sim);
    let text = stdout(&p, &["status"]);
    for line in ["last run:", "complete:", "missing:", "failing:", "dead letters:", "late:", "timeline:"] {
        assert!(text.lines().any(|l| l.starts_with(line)), "no {line:?} line in\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("timeline:")).unwrap();
    let cells = lines[at + 2].trim();
    assert_eq!(cells.chars().count(), 24, "one cell per hour: {cells:?}");
    assert!(cells.chars().all(|c| "#PMF-pmf".contains(c)), "{cells:?}");
    assert!(cells.contains(['F', 'f']), "the failing frame shows (f: in a partly delivered cell): {cells:?}\n{text}");
    assert!(lines[at + 3].contains("# delivered") && lines[at + 3].contains("F failing"), "{text}");
    assert!(lines[at + 3].contains("lower case (p m f): some of the cell's frames delivered"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when stdout is not a terminal");
}

#[test]
fn colour_is_used_only_when_asked_and_no_color_turns_auto_off() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "2"]);
    let p = partial_failure(dir, &sim);
    let always = stdout(&p, &["status", "--color", "always"]);
    assert!(always.contains("\x1b[1;31mF\x1b[0m"), "{always:?}");
    let never = stdout(&p, &["status", "--color", "never"]);
    assert!(!never.contains('\x1b'));
    let out = p.command(&["status"]).env("NO_COLOR", "1").output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}

#[test]
fn status_json_has_the_documented_shape_and_the_timeline_agrees_with_missing_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--poison-fraction", "0.1"]);
    let p = partial_failure(dir, &sim);
    let json: Value = serde_json::from_str(&stdout(&p, &["status", "--json"])).unwrap();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let mut top = keys(&json);
    top.sort();
    assert_eq!(
        top,
        [
            "dead_letters",
            "failing",
            "failing_frames",
            "first_pull_at",
            "lag",
            "last_run",
            "late",
            "ledger",
            "missing",
            "missing_ranges",
            "now",
            "rechecks_given_up",
            "records_failing",
            "servers",
            "timeline",
            "version"
        ]
    );
    assert_eq!(json["version"], 1);
    assert_eq!(json["last_run"]["exit_code"], 1, "a number");
    assert!(json["dead_letters"].as_i64().unwrap() > 0, "{json:#}");
    assert!(json["late"]["frames_awaiting_recheck"].is_i64(), "{json:#}");
    let timeline = &json["timeline"];
    assert_eq!(timeline["cell_seconds"], 3600);
    let cells = timeline["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 24);
    let mut cell_keys = keys(&cells[0]);
    cell_keys.sort();
    assert_eq!(cell_keys, ["delivered", "failing", "missing", "not_yet_due", "pending", "start"]);
    let sum = |k: &str| cells.iter().map(|c| c[k].as_i64().unwrap()).sum::<i64>();
    let undelivered = sum("missing") + sum("failing") + sum("pending");
    let missing = json["lag"]["missing_frames"].as_i64().unwrap();
    // The view and the timeline each read the clock once; a minute may turn in between.
    assert!((undelivered - missing).abs() <= 1, "timeline {undelivered} vs missing_ranges {missing}: {json:#}");
    assert!((sum("delivered") + undelivered - 90).abs() <= 1, "every eligible frame since the reference, once");
}
