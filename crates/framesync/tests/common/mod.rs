//! The end-to-end harness of framesync: a pipeline (a config in a temp dir pointing at a
//! simulator) and the real `framesync` binary run against it. The simulator, the canned server
//! and the HTTP client are the test kit's, on 127.0.0.1 with ephemeral ports.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub use framesync_testkit::Sim;

pub const MINUTE: i64 = 60;

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A pipeline: a config file in a temp dir, pointing at a simulator.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub reference: i64,
}

impl Pipeline {
    /// The `*_extra` lines go into their sections and replace the defaults of the same keys.
    pub fn new(
        sim: &Sim,
        dir: tempfile::TempDir,
        reference: i64,
        source_extra: &str,
        sink_extra: &str,
        run_extra: &str,
    ) -> Self {
        Self::build(sim, dir, reference, "", source_extra, sink_extra, run_extra)
    }

    /// Like `new`, with `[frames]` lines too (size, delay, recheck).
    pub fn build(
        sim: &Sim,
        dir: tempfile::TempDir,
        reference: i64,
        frames_extra: &str,
        source_extra: &str,
        sink_extra: &str,
        run_extra: &str,
    ) -> Self {
        let base = sim.base();
        let start = format!("\"{}\"", rfc3339(reference));
        let frames = section(&[("start", start), ("size", "\"1m\"".into()), ("delay", "\"1m\"".into())], frames_extra);
        let source = section(
            &[
                ("url", format!("\"{base}/ss/events?from={{from}}&to={{to}}\"")),
                ("records", "\"/items\"".into()),
                ("uid", "\"/id\"".into()),
                ("timestamp", "\"/created_at\"".into()),
                ("next", "\"/next\"".into()),
                ("timeout", "\"5s\"".into()),
            ],
            source_extra,
        );
        let sink = section(&[("url", format!("\"{base}/rs/ingest\"")), ("timeout", "\"5s\"".into())], sink_extra);
        let run = section(
            &[
                ("max_frames", "1000".into()),
                ("max_seconds", "120".into()),
                ("retry_base", "\"1s\"".into()),
                ("retry_max", "\"2s\"".into()),
            ],
            run_extra,
        );
        let text =
            format!("ledger = \"ledger.db\"\n\n[frames]\n{frames}\n[source]\n{source}\n[sink]\n{sink}\n[run]\n{run}");
        let config = dir.path().join("framesync.toml");
        std::fs::write(&config, text).unwrap();
        Pipeline { dir, config, reference }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    /// Runs `framesync --config <config> <args>` to completion.
    pub fn framesync(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("framesync runs")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_framesync"));
        command.arg("--config").arg(&self.config).args(args).env_remove("RUST_LOG");
        command
    }

    /// Runs `framesync run` until it exits 0 with nothing missing, or panics after `max` runs;
    /// pauses between runs so frames waiting for a 1s retry become due.
    pub fn run_until_complete(&self, max: usize) -> usize {
        self.run_until_complete_pausing(max, Duration::from_millis(1100))
    }

    pub fn run_until_complete_pausing(&self, max: usize, pause: Duration) -> usize {
        for n in 1..=max {
            let out = self.framesync(&["run"]);
            if out.status.code() == Some(0) && self.missing_frames() == 0 {
                return n;
            }
            std::thread::sleep(pause);
        }
        panic!("not complete after {max} runs: {}", self.status_text());
    }

    /// A value from the ledger (which must exist: opening it here never creates it).
    pub fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
        let conn = rusqlite::Connection::open_with_flags(self.ledger_path(), flags).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn missing_frames(&self) -> i64 {
        self.query("SELECT missing_frames FROM lag")
    }

    /// Everything before this is delivered (the ledger's `lag` view).
    pub fn complete_until(&self) -> i64 {
        let text: String = self.query("SELECT complete_until FROM lag");
        chrono::DateTime::parse_from_rfc3339(&text).unwrap().timestamp()
    }

    pub fn status_text(&self) -> String {
        let out = self.framesync(&["status"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Checks the RS against the SS over every frame the ledger says is delivered: nothing
    /// missing, nothing extra, nothing doubled. Returns the number of records expected.
    pub fn assert_exactly_once(&self, sim: &Sim) -> i64 {
        let until = self.complete_until();
        assert!(until > self.reference, "nothing delivered yet: {}", self.status_text());
        let check = sim.check(self.reference, until);
        for key in ["missing", "extra", "duplicates"] {
            assert_eq!(check[key], 0, "{key} in {check:#}");
        }
        let expected = check["expected"].as_i64().unwrap();
        assert!(expected > 0, "{check:#}");
        expected
    }

    /// `secret` is in no file of the ledger (the database, its WAL, its shared memory).
    pub fn assert_not_in_ledger(&self, secret: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", self.ledger_path().display()));
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds {secret}", file.display());
        }
    }
}

/// The simulated RS loses its first `n` records and every idempotency key (a restore from an
/// old backup, say).
pub fn rs_loses_records(sim: &Sim, n: usize) {
    let rs = rusqlite::Connection::open(&sim.db).unwrap();
    let lost =
        rs.execute("DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?1)", [n]).unwrap();
    assert_eq!(lost, n);
    rs.execute("DELETE FROM idempotency_keys", []).unwrap();
}

/// TOML lines for a section: the defaults whose keys `extra` does not set, then `extra`.
fn section(defaults: &[(&str, String)], extra: &str) -> String {
    let set = |key: &str| extra.lines().any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    let mut text: String = defaults.iter().filter(|(k, _)| !set(k)).map(|(k, v)| format!("{k} = {v}\n")).collect();
    text.push_str(extra);
    text.push('\n');
    text
}

pub fn aligned_minutes_ago(minutes: i64) -> i64 {
    (now() / MINUTE - minutes) * MINUTE
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// All a command wrote: its stdout, then its stderr.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
