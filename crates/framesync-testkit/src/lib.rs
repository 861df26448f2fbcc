//! What framesync's tests share: the simulator as a process ([`Sim`]) and its table of fault
//! settings ([`faults`]), one HTTP client ([`http`]), a canned-answer server ([`Canned`]),
//! processes that die with the test ([`KillOnDrop`]), TLS on loopback with a CA made in the test
//! ([`tls`]) and a `CONNECT` proxy ([`ConnectProxy`]).
//!
//! The simulator is a package of its own (`framesync-sim`, never installed with framesync), so a
//! test of the `framesync` package cannot name its binary through `CARGO_BIN_EXE_*`. It is looked
//! for beside the test binary's own profile directory (`target/debug` or `target/release`), and
//! built there with the cargo that runs the tests when it is missing.

mod canned;
pub mod http;
mod process;
mod proxy;
mod sim;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use canned::Canned;
pub use process::KillOnDrop;
pub use proxy::ConnectProxy;
pub use sim::Sim;

/// The simulator's fault settings, as its flags and `/control/faults` keys are made from them.
pub mod faults {
    pub use framesync_sim::faults::{FaultSpec, Kind, SPECS};
}

/// The path of the `framesync-sim` binary of this build profile, built on first use if missing.
pub fn sim_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary knows its path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("a test binary lives in target/<profile>/deps");
        let binary = profile_dir.join(format!("framesync-sim{}", std::env::consts::EXE_SUFFIX));
        if !binary.exists() {
            build_sim(profile_dir);
        }
        assert!(binary.exists(), "framesync-sim was not found at {}", binary.display());
        binary
    })
}

fn build_sim(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "framesync-sim"]);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    let status = command.status().expect("cargo runs to build framesync-sim");
    assert!(status.success(), "`cargo build -p framesync-sim` failed");
}
