//! `run.pushgateway`: every run PUTs its metrics to a real Prometheus Pushgateway (Debian's
//! `prometheus-pushgateway`, started here on a free loopback port), which then serves them with
//! `job="framesync"` and the pipeline's name. Without the binary the tests say "skipped";
//! scripts/test installs it first, so there they always run.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use framesync_testkit::{KillOnDrop, http};

const BINARY: &str = "prometheus-pushgateway";

struct Pushgateway {
    addr: String,
    _process: KillOnDrop,
}

impl Pushgateway {
    /// Starts the Pushgateway on a free loopback port; None (after saying so) when it is missing.
    fn start(dir: &Path) -> Option<Pushgateway> {
        let addr = free_addr();
        let child = Command::new(BINARY)
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--persistence.file={}", dir.join("pushgateway.state").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            println!("skipped: {BINARY} is missing (apt-get install prometheus-pushgateway; scripts/test does)");
            return None;
        };
        let pushgateway = Pushgateway { addr, _process: KillOnDrop(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&pushgateway.addr).is_err() || !pushgateway.ready() {
            assert!(Instant::now() < deadline, "{BINARY} did not start on {}", pushgateway.addr);
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pushgateway)
    }

    fn ready(&self) -> bool {
        http::get(&self.addr, "/-/ready").status == 200
    }

    /// `/metrics`, its chunked body put back together.
    fn metrics(&self) -> String {
        let response = http::get(&self.addr, "/metrics");
        assert_eq!(response.status, 200);
        let mut text = response.text();
        if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let (mut whole, mut rest) = (String::new(), text.as_str());
            while let Some((size, after)) = rest.split_once("\r\n") {
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                whole.push_str(&after[..size]);
                rest = after[size..].trim_start_matches("\r\n");
            }
            text = whole;
        }
        text
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value of `name`'s series in the group job="framesync", pipeline="ledger" with the
    /// given extra label, as the Pushgateway serves it to Prometheus.
    fn value(&self, name: &str, extra: &str) -> Option<f64> {
        let metrics = self.metrics();
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains("job=\"framesync\"") && l.contains("pipeline=\"ledger\"") && l.contains(extra))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .next()
    }
}

/// A port nothing listens on: bound, read and let go.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn every_run_pushes_the_pipelines_metrics_to_the_pushgateway() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pushgateway) = Pushgateway::start(dir.path()) else { return };
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5", "--poison-fraction", "0.1"]);
    let run = format!("pushgateway = \"{}\"", pushgateway.url());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(20), "", "", &run);
    assert_eq!(pushgateway.value("framesync_records_pushed_total", ""), None, "nothing before a run");
    p.run_until_complete(5);
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "a push that works says nothing: {}", stderr(&out));
    assert_eq!(pushgateway.value("framesync_records_pushed_total", ""), Some(sim.stored() as f64));
    assert_eq!(pushgateway.value("framesync_missing_frames", ""), Some(p.missing_frames() as f64));
    let dead: i64 = p.query("SELECT COUNT(*) FROM dead_letters");
    assert!(dead > 0);
    assert_eq!(pushgateway.value("framesync_dead_letters", ""), Some(dead as f64));
    assert_eq!(pushgateway.value("framesync_last_run_exit_code", "command=\"run\""), Some(0.0));
    let ended: i64 = p.query("SELECT MAX(ended_at) FROM runs");
    assert_eq!(pushgateway.value("framesync_last_success_timestamp_seconds", "command=\"run\""), Some(ended as f64));
    assert_eq!(pushgateway.value("framesync_lock_skips_total", ""), Some(0.0));
    assert!(pushgateway.value("push_time_seconds", "").is_some_and(|t| t > 0.0), "the Pushgateway took it");
    assert!(pushgateway.value("push_failure_time_seconds", "").is_some_and(|t| t == 0.0), "and never refused it");
}

#[test]
fn a_run_that_finds_the_lock_held_is_counted_with_only_the_pushgateway_set() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pushgateway) = Pushgateway::start(dir.path()) else { return };
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let run = format!("pushgateway = \"{}\"", pushgateway.url());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(10), "", "", &run);
    let held = framesync::lock::acquire(&p.ledger_path(), framesync::lock::Side::Pull).unwrap();
    assert_eq!(p.framesync(&["run"]).status.code(), Some(75));
    drop(held);
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    assert_eq!(pushgateway.value("framesync_lock_skips_total", ""), Some(1.0));
}

#[test]
fn a_pushgateway_that_is_down_makes_the_run_exit_1_with_one_line_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let run = format!("pushgateway = \"http://{}\"", free_addr());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(10), "", "", &run);
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let errors: Vec<_> = stderr(&out).lines().filter(|l| l.contains("error")).map(String::from).collect();
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    assert!(errors[0].contains("cannot push the metrics to the Pushgateway"), "{}", errors[0]);
    assert_eq!(p.query::<i64>("SELECT exit_code FROM runs"), 0, "the run's own work succeeded");
    p.assert_exactly_once(&sim);
}

#[test]
fn a_pushgateway_that_redirects_is_refused_and_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let canned = framesync_testkit::Canned::answer(308, &[("Location", "http://127.0.0.1:1/elsewhere")], "");
    let run = format!("pushgateway = \"{}\"", canned.base());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(10), "", "", &run);
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the metrics: 308") && stderr(&out).contains("not followed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_asks_the_pushgateway_whether_it_is_ready_and_says_when_it_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pushgateway) = Pushgateway::start(dir.path()) else { return };
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let check = |base: &str| {
        let run = format!("pushgateway = \"{base}\"");
        let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(10), "", "", &run);
        let out = p.framesync(&["check"]);
        let line = text(&out).lines().find(|l| l.starts_with("run.pushgateway: ")).map(String::from);
        (out.status.code(), line.unwrap_or_else(|| panic!("no run.pushgateway line: {}", text(&out))))
    };
    let ready = check(&pushgateway.url());
    assert_eq!(ready, (Some(0), format!("run.pushgateway: ok, {} is ready", pushgateway.url())));
    let down = check(&format!("http://{}", free_addr()));
    assert_eq!(down.0, Some(1));
    assert!(
        down.1.starts_with("run.pushgateway: FAILED: GET http://") && down.1.ends_with("; every run would exit 1"),
        "{}",
        down.1
    );
    let not_one = framesync_testkit::Canned::answer(404, &[], "");
    let other = check(&not_one.base());
    assert_eq!(other.0, Some(1));
    assert!(other.1.contains("WARNING: GET ") && other.1.contains("/-/ready: 404"), "{}", other.1);
    assert!(http::get(&pushgateway.addr, "/metrics").text().find("framesync_").is_none(), "check pushed nothing");
}

#[test]
fn check_says_when_the_metrics_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    let missing = dir.path().join("no-such-folder").join("framesync.prom");
    let run = format!("metrics_file = {:?}", missing.display().to_string());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(10), "", "", &run);
    let out = p.framesync(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = text(&out).lines().find(|l| l.starts_with("run.metrics_file: ")).map(String::from).unwrap();
    assert!(line.contains("FAILED: ") && line.contains("does not exist; every run would exit 1"), "{line}");
}
