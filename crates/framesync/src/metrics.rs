//! The Prometheus textfile (for node_exporter's textfile collector), written at the end of every
//! `run`, `pull` and `push` when `run.metrics_file` is set, and the same text pushed to a
//! Pushgateway when `run.pushgateway` is set (see `pushgateway`). It is written atomically — a temp
//! file in the same folder, renamed over the old one — so the collector never reads half a file.
//! Every figure is read from the ledger, so whichever command writes the file, it describes the
//! whole pipeline; each series carries `pipeline="<ledger file stem>"` (`Config::pipeline_name`), so the files of several
//! pipelines can sit in one collector folder.
//!
//! Lock-held skips: a run that finds the lock held must exit at once and must not touch the
//! ledger or the metrics file (the holder owns both). It appends one byte to `<ledger>.skips`
//! instead — an `O_APPEND` write of one byte never tears and never waits — and the file's
//! length is the counter the holder's next write reports. The file is never truncated, so the
//! counter never goes down; it grows by one byte per skipped run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::Config;
use crate::ledger::Ledger;

/// One sample: a metric, its labels beyond `pipeline`, its value.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// One metric family: name, type, help, samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<Sample>,
}

/// Writes the metrics file and pushes to the Pushgateway, as far as the config asks for
/// them; what failed, one error per destination (none when all went well).
pub fn publish(config: &Config, ledger: &Ledger) -> Vec<anyhow::Error> {
    if config.run.metrics_file.is_none() && config.run.pushgateway.is_none() {
        return Vec::new();
    }
    let families = match gather(ledger, &config.ledger) {
        Ok(families) => families,
        Err(e) => return vec![e.context("cannot read the metrics from the ledger")],
    };
    let pipeline = config.pipeline_name();
    let text = render(&pipeline, &families);
    let mut failed = Vec::new();
    if let Some(path) = &config.run.metrics_file
        && let Err(e) = write_atomically(path, &text)
    {
        failed.push(e.context(format!("cannot write the metrics file {}", path.display())));
    }
    if let Some(base) = &config.run.pushgateway
        && let Err(e) = crate::pushgateway::push(base, &pipeline, &text)
    {
        failed.push(e);
    }
    failed
}

/// Publishes the metrics at the end of a run; false (after saying why in the log, a line per
/// destination) when it cannot: the run's work is recorded, but its monitoring is blind, so
/// the run exits 1. A Pushgateway that is down counts as much as an unwritable file: no one
/// else would say that the pipeline's numbers stopped arriving.
pub fn publish_or_say_why(config: &Config, ledger: &Ledger) -> bool {
    let failed = publish(config, ledger);
    for e in &failed {
        log::error!("{e:#}; the run's work is recorded in the ledger");
    }
    failed.is_empty()
}

/// Counts a run that exited because another run holds the lock (only when metrics are on).
pub fn count_skip(config: &Config, error: &anyhow::Error) {
    let metrics_on = config.run.metrics_file.is_some() || config.run.pushgateway.is_some();
    if !metrics_on || error.downcast_ref::<crate::lock::Held>().is_none() {
        return;
    }
    let path = skips_path(&config.ledger);
    let appended =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(b"\n"));
    if let Err(e) = appended {
        log::warn!("cannot count the skipped run in {}: {e}", path.display());
    }
}

pub fn skips_path(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".skips");
    PathBuf::from(name)
}

fn gather(ledger: &Ledger, path: &Path) -> Result<Vec<Family>> {
    let figures = ledger.metric_figures()?;
    let mut families = runs(ledger)?;
    families.extend([
        single("framesync_missing_frames", "gauge", "Eligible frames not yet delivered.", figures.missing_frames),
        single(
            "framesync_lag_seconds",
            "gauge",
            "Seconds since the start of the oldest undelivered frame.",
            figures.lag_seconds,
        ),
        single(
            "framesync_failing_frames",
            "gauge",
            "Frames waiting for a retry after an error.",
            figures.failing_frames,
        ),
        single(
            "framesync_dead_letters",
            "gauge",
            "Records refused for good, waiting for a person now (retry and drop lower it: alert on its value, use framesync_dead_letters_total with increase()).",
            figures.dead_letters,
        ),
        single(
            "framesync_dead_letters_total",
            "counter",
            "Dead letters ever written (never lowered by retry or drop): use this one with increase() or rate().",
            figures.dead_letters_written,
        ),
        single(
            "framesync_records_failing",
            "gauge",
            "Staged records the RS failed while acknowledging others (dead-lettered after sink.max_attempts).",
            figures.records_failing,
        ),
        single(
            "framesync_rechecks_given_up",
            "gauge",
            "Frames with a re-check given up after run.max_recheck_attempts failures.",
            figures.rechecks_given_up,
        ),
        single("framesync_records_pushed_total", "counter", "Records the RS acknowledged.", figures.records_pushed),
        single(
            "framesync_late_records_total",
            "counter",
            "Records found by re-checks after their frame was delivered.",
            figures.late_records,
        ),
        single(
            "framesync_lock_skips_total",
            "counter",
            "Runs that exited 75 because another run held the lock.",
            skips(path) as f64,
        ),
    ]);
    if let Some(limit) = ledger.in_flight_limit()? {
        families.push(single(
            "framesync_sink_in_flight_limit",
            "gauge",
            "Requests in flight to the RS allowed when the last push ended (sink.adaptive finds it; else sink.concurrency).",
            limit as f64,
        ));
    }
    Ok(families)
}

fn single(name: &'static str, kind: &'static str, help: &'static str, value: f64) -> Family {
    Family { name, kind, help, samples: vec![Sample { labels: vec![], value }] }
}

fn family(name: &'static str, help: &'static str) -> Family {
    Family { name, kind: "gauge", help, samples: vec![] }
}

fn skips(ledger: &Path) -> u64 {
    std::fs::metadata(skips_path(ledger)).map_or(0, |m| m.len())
}

/// Per command (`run`, `pull`, `push`): the last run's end, exit code and duration, and the
/// last successful run's end.
fn runs(ledger: &Ledger) -> Result<Vec<Family>> {
    let mut last = family("framesync_last_run_timestamp_seconds", "When the last run ended (Unix time).");
    let mut code = family("framesync_last_run_exit_code", "The last run's exit code.");
    let mut duration = family("framesync_last_run_duration_seconds", "How long the last run took.");
    let mut success =
        family("framesync_last_success_timestamp_seconds", "When the last run that exited 0 ended (Unix time).");
    for run in ledger.command_runs()? {
        let labels = || vec![("command", run.command.clone())];
        last.samples.push(Sample { labels: labels(), value: run.ended as f64 });
        code.samples.push(Sample { labels: labels(), value: run.exit_code as f64 });
        duration.samples.push(Sample { labels: labels(), value: run.seconds as f64 });
        if let Some(at) = run.last_success {
            success.samples.push(Sample { labels: labels(), value: at as f64 });
        }
    }
    Ok(vec![last, code, duration, success])
}

/// The text exposition format: HELP and TYPE once per family, its samples right after.
fn render(pipeline: &str, families: &[Family]) -> String {
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        out.push_str(&format!("# HELP {} {}\n# TYPE {} {}\n", family.name, family.help, family.name, family.kind));
        for sample in &family.samples {
            let mut labels = vec![format!("pipeline=\"{}\"", escape(pipeline))];
            labels.extend(sample.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))));
            out.push_str(&format!("{}{{{}}} {}\n", family.name, labels.join(","), sample.value));
        }
    }
    out
}

/// A label value: backslash, double quote and newline are escaped.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// A temp file beside the target (same filesystem, so the rename is atomic), fsynced, renamed.
/// Its name does not end in `.prom`, so the collector never reads it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#.to_owned().as_str()), r#"a\\b\"c"#);
        assert_eq!(escape("x\ny"), r"x\ny");
    }

    #[test]
    fn families_without_samples_are_left_out_and_the_others_come_whole() {
        let families = [
            Family {
                name: "a_total",
                kind: "counter",
                help: "A.",
                samples: vec![Sample { labels: vec![], value: 3.0 }],
            },
            Family { name: "b", kind: "gauge", help: "B.", samples: vec![] },
        ];
        assert_eq!(
            render("orders", &families),
            "# HELP a_total A.\n# TYPE a_total counter\na_total{pipeline=\"orders\"} 3\n"
        );
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.prom");
        write_atomically(&path, "one\n").unwrap();
        write_atomically(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
