//! The `framesync-sim` binary: parses the command line, runs it, and turns the outcome into the
//! exit code (2 for an error).

use std::process::ExitCode;

use clap::Parser;
use framesync_sim::cli::{self, Cli};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    cli::run(Cli::parse()).unwrap_or_else(|e| {
        eprintln!("framesync-sim: {e:#}");
        ExitCode::from(2)
    })
}
