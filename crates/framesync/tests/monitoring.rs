//! The monitoring in deploy/: the Prometheus alert rules and the Grafana dashboard query only
//! series framesync really writes (read from the metrics file of a real run), and the dashboard
//! shows every one. scripts/check-deploy also runs `promtool check rules` and `promtool test
//! rules` on the rules.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

/// The metric names a run writes.
fn written() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p =
        Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(5), "", "", "metrics_file = \"m.prom\"");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let text = std::fs::read_to_string(p.dir.path().join("m.prom")).unwrap();
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_owned()).collect()
}

/// The `framesync_*` names an expression uses.
fn names(expr: &str) -> Vec<String> {
    expr.match_indices("framesync_")
        .map(|(at, _)| expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    fn walk(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => into.push(expr.clone()),
                        _ => walk(value, into),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(deploy("grafana/framesync.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    exprs
}

fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheus/framesync-alerts.yml")).unwrap();
    let rules: serde_json::Value = serde_norway::from_str(&text).expect("the rules are YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            exprs.push((rule["alert"].as_str().unwrap().to_owned(), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    exprs
}

#[test]
fn the_dashboard_and_the_alerts_query_only_what_framesync_writes() {
    let written = written();
    assert!(written.len() >= 10, "{written:?}");
    let dashboard = dashboard_exprs();
    assert!(dashboard.len() >= 9, "{dashboard:?}");
    let mut shown = BTreeSet::new();
    for expr in &dashboard {
        assert!(!names(expr).is_empty(), "a panel with no framesync series: {expr}");
        for name in names(expr) {
            assert!(written.contains(&name), "the dashboard queries {name}, which framesync does not write: {expr}");
            shown.insert(name);
        }
    }
    assert_eq!(shown, written, "the dashboard shows every series framesync writes");
    let alerts = alert_exprs();
    let alerted: BTreeSet<_> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    for needed in ["FramesyncLagHigh", "FramesyncMissingFrames", "FramesyncNoRecentSuccess"] {
        assert!(alerted.contains(needed), "no {needed}");
    }
    for (alert, expr) in &alerts {
        assert!(!names(expr).is_empty(), "{alert} uses no framesync series");
        for name in names(expr) {
            assert!(written.contains(&name), "{alert} queries {name}, which framesync does not write: {expr}");
        }
    }
}

#[test]
fn every_alert_has_a_unit_test() {
    let tests = std::fs::read_to_string(deploy("prometheus/framesync-alerts.test.yml")).unwrap();
    for (alert, _) in alert_exprs() {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} is never tested");
    }
}
