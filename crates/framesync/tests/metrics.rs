//! The Prometheus textfile: written atomically at the end of every run, pull and push; parsed
//! here by a strict parser of the text exposition format (the rules node_exporter's textfile
//! collector enforces), and checked against the ledger and the simulator.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;

/// One parsed sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format strictly: every line is a HELP, a TYPE or a sample; HELP and TYPE
/// come once per family, before its samples; a family's samples are contiguous; names and
/// label names are valid; label values are quoted with only \\, \" and \n escaped; values are
/// floats; no series repeats; counters end in `_total`; the file ends with a newline.
fn parse(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    if !text.ends_with('\n') {
        return Err("the file does not end with a newline".into());
    }
    let (mut types, mut helps) = (BTreeMap::new(), BTreeSet::new());
    let (mut samples, mut series, mut closed) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            check_name(name).map_err(at)?;
            if name != current {
                if closed.contains(name) || types.contains_key(name) && kind == "HELP" {
                    return Err(at("a family appears twice".into()));
                }
                closed.insert(std::mem::replace(&mut current, name.to_owned()));
            }
            match (kind, value) {
                ("HELP", Some(_)) if helps.insert(name.to_owned()) => {}
                ("TYPE", Some(t @ ("counter" | "gauge" | "untyped"))) if !types.contains_key(name) => {
                    if t == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter's name must end in _total".into()));
                    }
                    types.insert(name.to_owned(), t.to_owned());
                }
                _ => return Err(at("not a valid HELP or TYPE line, or a repeated one".into())),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        if sample.name != current || !types.contains_key(&sample.name) {
            return Err(at("a sample outside its family, or before its TYPE".into()));
        }
        if !series.insert(format!("{}{:?}", sample.name, sample.labels)) {
            return Err(at("a repeated series".into()));
        }
        samples.push(sample);
    }
    Ok((types, samples))
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            let eq = rest.find("=\"").ok_or("a label without =\"")?;
            let label = &rest[..eq];
            if label.starts_with("__") || check_name(label).is_err() || label.contains(':') {
                return Err(format!("{label:?} is not a label name"));
            }
            let (value, after) = label_value(&rest[eq + 2..])?;
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match after.chars().next() {
                Some(',') => rest = &after[1..],
                Some('}') => {
                    rest = &after[1..];
                    break;
                }
                _ => return Err("labels not closed".into()),
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a float (or has a timestamp)"))?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// A quoted label value up to its closing quote, unescaped, and what follows it.
fn label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                _ => return Err("a bad escape in a label value".into()),
            },
            '\n' => return Err("a newline in a label value".into()),
            c => value.push(c),
        }
    }
    Err("an unclosed label value".into())
}

fn value(samples: &[Sample], name: &str, command: Option<&str>) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && command.is_none_or(|c| s.labels.get("command").map(String::as_str) == Some(c)))
        .unwrap_or_else(|| panic!("no {name} {command:?} in {samples:#?}"))
        .value
}

fn metrics_pipeline(sim: &Sim, dir: tempfile::TempDir) -> Pipeline {
    std::fs::create_dir(dir.path().join("textfile")).unwrap();
    Pipeline::new(sim, dir, aligned_minutes_ago(30), "", "", "metrics_file = \"textfile/framesync.prom\"")
}

fn read(p: &Pipeline) -> (BTreeMap<String, String>, Vec<Sample>) {
    let text = std::fs::read_to_string(p.dir.path().join("textfile/framesync.prom")).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_strict_parser_refuses_what_node_exporter_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\"} 1\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        "# TYPE a_total counter\na_total 1",                        // no final newline
        "# TYPE a counter\na 1\n",                                  // counter without _total
        "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na 2\n", // family split in two
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",             // repeated series
        "# TYPE a gauge\na{x=1} 1\n",                               // unquoted label value
        "# TYPE a gauge\na one\n",                                  // not a float
        "b 1\n",                                                    // no TYPE
        "# TYPE 1a gauge\n1a 1\n",                                  // bad name
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn the_metrics_file_parses_as_prometheus_text_and_says_what_the_ledger_says() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let p = metrics_pipeline(&sim, dir);
    p.run_until_complete(5);
    let (types, samples) = read(&p);
    for (name, kind) in [
        ("framesync_last_success_timestamp_seconds", "gauge"),
        ("framesync_last_run_timestamp_seconds", "gauge"),
        ("framesync_last_run_exit_code", "gauge"),
        ("framesync_last_run_duration_seconds", "gauge"),
        ("framesync_missing_frames", "gauge"),
        ("framesync_lag_seconds", "gauge"),
        ("framesync_failing_frames", "gauge"),
        ("framesync_dead_letters", "gauge"),
        ("framesync_dead_letters_total", "counter"),
        ("framesync_records_pushed_total", "counter"),
        ("framesync_late_records_total", "counter"),
        ("framesync_lock_skips_total", "counter"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert!(samples.iter().all(|s| s.labels.get("pipeline").map(String::as_str) == Some("ledger")));
    assert_eq!(value(&samples, "framesync_records_pushed_total", None), sim.stored() as f64);
    assert_eq!(
        value(&samples, "framesync_dead_letters", None),
        p.query::<i64>("SELECT COUNT(*) FROM dead_letters") as f64
    );
    assert!(value(&samples, "framesync_dead_letters", None) > 0.0);
    assert_eq!(
        value(&samples, "framesync_dead_letters_total", None),
        value(&samples, "framesync_dead_letters", None),
        "none retried or dropped yet"
    );
    assert_eq!(value(&samples, "framesync_missing_frames", None), 0.0);
    assert_eq!(value(&samples, "framesync_last_run_exit_code", Some("run")), 0.0);
    let ended: i64 = p.query("SELECT MAX(ended_at) FROM runs");
    assert_eq!(value(&samples, "framesync_last_success_timestamp_seconds", Some("run")), ended as f64);
    let files: Vec<_> =
        std::fs::read_dir(p.dir.path().join("textfile")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["framesync.prom"], "no temp file is left beside it");
}

#[test]
fn a_run_that_finds_the_lock_held_is_counted_by_the_next_run_that_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = metrics_pipeline(&sim, dir);
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let before = std::fs::read_to_string(p.dir.path().join("textfile/framesync.prom")).unwrap();
    assert_eq!(value(&read(&p).1, "framesync_lock_skips_total", None), 0.0);
    let held = framesync::lock::acquire(&p.ledger_path(), framesync::lock::Side::Pull).unwrap();
    for _ in 0..2 {
        let skipped = p.framesync(&["run"]);
        assert_eq!(skipped.status.code(), Some(75));
        assert!(skipped.stdout.is_empty() && skipped.stderr.is_empty(), "a skipped run prints nothing");
    }
    let after = std::fs::read_to_string(p.dir.path().join("textfile/framesync.prom")).unwrap();
    assert_eq!(after, before, "a skipped run leaves the file to the holder");
    drop(held);
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    assert_eq!(value(&read(&p).1, "framesync_lock_skips_total", None), 2.0);
}

#[test]
fn pull_and_push_each_write_the_file_for_the_whole_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = metrics_pipeline(&sim, dir);
    assert_eq!(p.framesync(&["pull"]).status.code(), Some(0));
    let (_, pulled) = read(&p);
    assert!(value(&pulled, "framesync_missing_frames", None) > 0.0, "pulled but not yet pushed");
    assert_eq!(value(&pulled, "framesync_records_pushed_total", None), 0.0);
    assert_eq!(p.framesync(&["push"]).status.code(), Some(0));
    let (_, pushed) = read(&p);
    assert_eq!(value(&pushed, "framesync_records_pushed_total", None), sim.stored() as f64);
    assert_eq!(value(&pushed, "framesync_last_run_exit_code", Some("pull")), 0.0);
    assert_eq!(value(&pushed, "framesync_last_run_exit_code", Some("push")), 0.0);
}

#[test]
fn a_metrics_file_that_cannot_be_written_makes_the_run_exit_1_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "", "metrics_file = \"no-such-dir/f.prom\"");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot write the metrics file"), "{}", stderr(&out));
    assert_eq!(p.query::<i64>("SELECT exit_code FROM runs"), 0, "the run's own work succeeded");
    assert!(Path::new(&p.ledger_path()).exists());
    p.assert_exactly_once(&sim);
}
