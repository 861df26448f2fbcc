//! The command line: one file per command, one dispatch `match`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::Usage;
use crate::config::{Config, process_env};

mod check;
mod init;
mod run;
mod status;

#[derive(Debug, Parser)]
#[command(
    name = "framesync",
    version,
    about = "Moves records from a sending HTTP API to a receiving HTTP API by time frames, losing none and doubling none."
)]
pub struct Cli {
    /// The config file (TOML).
    #[arg(long, global = true, env = "FRAMESYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push what is staged, then pull and push the missing frames (what cron runs every minute).
    Run(PlanArgs),
    /// Pull missing frames into the ledger, without pushing (the SS half, for a cron line of its own).
    Pull(PlanArgs),
    /// Push the frames staged in the ledger (the RS half, for a cron line of its own).
    Push(PlanArgs),
    /// Show what is delivered, missing and failing.
    Status(status::Args),
    /// Validate the config and reach both servers, changing nothing.
    Check,
    /// Write a commented example config (to --config, default ./framesync.toml) and create its ledger.
    Init,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Print the plan (which frames, in which order) and exit without doing anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Init => init::init(cli.config.unwrap_or_else(|| PathBuf::from("framesync.toml"))),
        Command::Run(args) => run::run(&load(cli.config)?, crate::plan::Scope::Run, args.dry_run),
        Command::Pull(args) => run::run(&load(cli.config)?, crate::plan::Scope::Pull, args.dry_run),
        Command::Push(args) => run::run(&load(cli.config)?, crate::plan::Scope::Push, args.dry_run),
        Command::Status(args) => status::status(&load(cli.config)?, &args),
        Command::Check => check::check(&load(cli.config)?),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config> {
    let path = path.ok_or_else(|| Usage("no config: pass --config FILE or set FRAMESYNC_CONFIG".into()))?;
    Config::load(&path, &process_env).map_err(|e| Usage(format!("{e:#}")).into())
}
