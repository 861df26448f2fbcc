//! The end-to-end harness: the real `framesync` and `framesync-sim` binaries, in a temp dir,
//! on 127.0.0.1 with ephemeral ports. Every process a test starts is killed when its handle
//! drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MINUTE: i64 = 60;

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A running simulator.
pub struct Sim {
    child: Child,
    pub addr: String,
    pub db: PathBuf,
}

impl Sim {
    /// Starts `framesync-sim serve` with its RS database in `dir` and the given extra flags.
    pub fn start(dir: &Path, flags: &[&str]) -> Sim {
        let db = dir.join("rs.db");
        let addr_file = dir.join(format!("sim-{}.addr", std::process::id()));
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(framesync_testkit::sim_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--rs-db"])
            .arg(&db)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("framesync-sim starts");
        let mut sim = Sim { child, addr: String::new(), db };
        let deadline = Instant::now() + Duration::from_secs(20);
        while sim.addr.is_empty() {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                sim.addr = addr.trim().to_string();
            } else if Instant::now() > deadline {
                panic!("framesync-sim did not start listening");
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sim
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the simulator's faults, e.g. `rs_down=1`.
    pub fn faults(&self, query: &str) -> Value {
        http(&self.addr, "POST", &format!("/control/faults?{query}")).1
    }

    /// Compares the RS database with the SS's records of `[from, to)`.
    pub fn check(&self, from: i64, to: i64) -> Value {
        let (status, body) = http(&self.addr, "GET", &format!("/control/check?from={from}&to={to}"));
        assert_eq!(status, 200, "check answered {body}");
        body
    }

    pub fn stats(&self) -> Value {
        http(&self.addr, "GET", "/control/stats").1
    }

    /// Rows the RS database holds.
    pub fn stored(&self) -> i64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0)).unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request over loopback: (status, JSON body or Null).
pub fn http(addr: &str, method: &str, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect to the simulator");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
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

/// A server answering every request with the same canned bytes; counts requests and keeps
/// their request lines and bodies.
pub struct Canned {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Canned {
    pub fn start(response: Vec<u8>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (requests.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(format!("{}{}", line.trim(), String::from_utf8_lossy(&body)));
                let _ = stream.write_all(&response);
            }
        });
        Canned { addr, requests, seen }
    }

    pub fn json(status: u16, body: &str) -> Canned {
        Canned::answer(status, &[("Content-Type", "application/json")], body)
    }

    /// An answer with this status, these headers and this body.
    pub fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Canned {
        let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        Canned::start(
            format!(
                "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}
