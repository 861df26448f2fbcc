//! A running `framesync-sim serve`: started in a folder with its RS database there, on an
//! ephemeral loopback port it reports through a file, and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http;
use crate::process::KillOnDrop;

/// How long a simulator may take to start listening on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running simulator.
pub struct Sim {
    _process: KillOnDrop,
    /// HOST:PORT.
    pub addr: String,
    /// The RS's SQLite database.
    pub db: PathBuf,
}

impl Sim {
    /// Starts `framesync-sim serve` with its RS database in `dir` and the given extra flags.
    pub fn start(dir: &Path, flags: &[&str]) -> Sim {
        let db = dir.join("rs.db");
        let addr_file = dir.join(format!("sim-{}.addr", std::process::id()));
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(crate::sim_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--rs-db"])
            .arg(&db)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("framesync-sim starts");
        let mut process = KillOnDrop(child);
        let addr = wait_for_addr(&addr_file, &mut process);
        Sim { _process: process, addr, db }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the simulator's faults, e.g. `rs_down=1`; answers the settings now in force.
    /// Panics when the simulator refuses the change (an unknown key, a value out of range).
    pub fn faults(&self, query: &str) -> Value {
        let answer = http::post(&self.addr, &format!("/control/faults?{query}"), b"");
        assert_eq!(answer.status, 200, "the simulator refused the faults `{query}`: {}", answer.text());
        answer.json()
    }

    /// Compares the RS database with the SS's records of `[from, to)` (epoch seconds).
    pub fn check(&self, from: i64, to: i64) -> Value {
        let answer = http::get(&self.addr, &format!("/control/check?from={from}&to={to}"));
        assert_eq!(answer.status, 200, "check answered {}", answer.text());
        answer.json()
    }

    pub fn stats(&self) -> Value {
        http::get(&self.addr, "/control/stats").json()
    }

    /// How many requests `endpoint` (`ss_events`, `rs_ingest`, `oauth_token`, ...) answered,
    /// by the simulator's counters.
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.stats()["requests"][endpoint]["total"].as_u64().unwrap_or(0)
    }

    /// How many requests `endpoint` answered with `status`.
    pub fn answered(&self, endpoint: &str, status: &str) -> u64 {
        self.stats()["requests"][endpoint]["by_status"][status].as_u64().unwrap_or(0)
    }

    /// Rows the RS database holds.
    pub fn stored(&self) -> i64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0)).unwrap_or(0)
    }
}

/// The address the simulator writes (atomically) once it listens.
fn wait_for_addr(addr_file: &Path, process: &mut KillOnDrop) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            return addr.trim().to_string();
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("framesync-sim exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "framesync-sim did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}
