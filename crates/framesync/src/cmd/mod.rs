//! The command line: one file per command, one dispatch `match`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::Usage;
use crate::config::{Config, process_env};
use crate::job::{Clock, SystemClock};
use crate::ledger::{Adopt, Ledger};

mod accept_config;
mod backfill;
mod check;
mod completions;
mod dead_letters;
pub mod fleet;
mod init;
mod man;
mod prune;
pub mod run;
pub mod status;
mod status_all;
mod verify;

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
    /// How log lines are written: words for people, one JSON object a line for collectors.
    #[arg(long, global = true, env = "FRAMESYNC_LOG", value_enum, default_value_t, value_name = "FORMAT")]
    pub log_format: crate::logging::Format,
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
    /// Pull and push a time range by hand, with a progress bar; delivered frames only with --redeliver.
    Backfill(backfill::Args),
    /// Pull a range from the SS again and compare it with the ledger and the RS; --repair sends what is missing.
    Verify(verify::Args),
    /// Show what is delivered, missing and failing, with a timeline of the last 24 hours.
    Status(status::Args),
    /// List, retry or drop dead letters: records the RS refused for good or that failed validation.
    DeadLetters(dead_letters::Args),
    /// Delete delivered UIDs, frame rows and runs older than run.retain now (every run also does it).
    Prune,
    /// Validate the config and reach both servers, changing nothing.
    Check,
    /// Record a deliberate change of the pipeline (source, sink, reference time) in the ledger; never the frame size.
    AcceptConfig,
    /// Write a commented example config (to --config, default ./framesync.toml) and create its ledger (--ledger PATH to put it elsewhere).
    Init(init::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::Args),
    /// Print the man page (roff, section 1) to stdout.
    Man,
}

impl Command {
    /// The subcommand's name on the command line, for the commands `--all` runs.
    fn name(&self) -> &'static str {
        match self {
            Self::Pull(_) => "pull",
            Self::Push(_) => "push",
            _ => "run",
        }
    }

    /// What cron or a timer runs every minute: its lines wait to see whether it fails.
    pub fn is_scheduled(&self) -> bool {
        matches!(self, Self::Run(args) | Self::Pull(args) | Self::Push(args) if !args.dry_run)
    }
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Print the plan (which frames, in which order) and exit without doing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Run every pipeline of DIR (each `*.toml` in it) as a process of its own, instead of --config.
    #[arg(long, value_name = "DIR")]
    pub all: Option<PathBuf>,
    /// With --all: how many pipelines run at once (at least 1).
    #[arg(long, value_name = "N", default_value_t = 4, requires = "all", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

/// Runs the command; everything it reports goes to `out` (stdout in `main`), and a write that
/// fails there is an error like any other, so a closed pipe stops the command.
pub fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<u8> {
    let name = cli.command.name();
    let code = match cli.command {
        Command::Run(args) | Command::Pull(args) | Command::Push(args) if args.all.is_some() => {
            let fleet = fleet::Fleet {
                command: name,
                dry_run: args.dry_run,
                jobs: args.jobs.into(),
                log_format: cli.log_format,
            };
            fleet::run_all(args.all.as_deref().unwrap_or(Path::new(".")), &fleet, out)
        }
        Command::Status(args) if args.all.is_some() => {
            status_all::status_all(args.all.as_deref().unwrap_or(Path::new(".")), args.json, out)
        }
        Command::Init(args) => init::init(cli.config.unwrap_or_else(|| PathBuf::from("framesync.toml")), &args, out),
        Command::Run(args) => run::run(&load(cli.config)?, crate::plan::Scope::Run, args.dry_run, out),
        Command::Pull(args) => run::run(&load(cli.config)?, crate::plan::Scope::Pull, args.dry_run, out),
        Command::Push(args) => run::run(&load(cli.config)?, crate::plan::Scope::Push, args.dry_run, out),
        Command::Status(args) => status::status(&load(cli.config)?, &args, out),
        Command::Check => check::check(&load(cli.config)?, out),
        Command::Backfill(args) => backfill::backfill(&load(cli.config)?, &args, out),
        Command::Verify(args) => verify::verify(&load(cli.config)?, &args, out),
        Command::DeadLetters(args) => dead_letters::dead_letters(&load(cli.config)?, args, out),
        Command::Prune => prune::prune(&load(cli.config)?, out),
        Command::AcceptConfig => accept_config::accept_config(&load(cli.config)?, out),
        Command::Completions(args) => completions::completions(&args, out),
        Command::Man => man::man(out),
    }?;
    out.flush()?;
    Ok(code)
}

/// The locks for a command run by hand: unlike a cron run, it says so when a run holds them
/// (and exits 75 all the same).
fn lock_by_hand(config: &Config, sides: &[crate::lock::Side]) -> Result<Vec<crate::lock::Lock>> {
    crate::lock::acquire_all(&config.ledger, sides).inspect_err(|e| {
        if e.downcast_ref::<crate::lock::Held>().is_some() {
            log::warn!("{e}; try again when it has finished");
        }
    })
}

/// What a command may do to the ledger. Only a command that reads never creates or migrates
/// one: `sudo framesync status` before the first run must not leave a root-owned ledger behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read it as it is ([`crate::ledger::Absent`] when there is none; nothing created). A
    /// ledger this process could not write is refused all the same: every run would fail.
    Read,
    /// Change one that exists, migrating it first ([`crate::ledger::Absent`] when there is none).
    Write,
    /// Create it if absent, migrate it, change it.
    Create,
}

impl Access {
    /// `Create` for a command that writes, `Read` for its dry run.
    fn create_if(writes: bool) -> Self {
        if writes { Self::Create } else { Self::Read }
    }
}

/// Fails with [`crate::ledger::Absent`] when the config's ledger does not exist: before the
/// locks, which would otherwise leave their files in a folder with no ledger.
fn existing_ledger(config: &Config) -> Result<()> {
    crate::ledger::access::existing(&config.ledger)
}

/// Opens the config's ledger, refusing (exit 2) one that belongs to another pipeline: a second
/// config on the same ledger would plan only from what the first delivered and never pull the
/// rest. A command that writes records the config's identity in a ledger that has none yet
/// (new, or from a framesync before identities).
fn open_ledger(config: &Config, access: Access) -> Result<Ledger> {
    let (path, sync, busy) = (&config.ledger, config.run.sync, config.run.busy_timeout);
    let mut ledger = match access {
        Access::Read => Ledger::open_read_only(path, busy)?,
        Access::Write => Ledger::open_existing(path, sync, busy)?,
        Access::Create => Ledger::open_with(path, sync, busy)?,
    };
    ledger.scrub_with(&config.secrets);
    let differences = match access {
        Access::Read => ledger.identity()?.differences(&config.identity),
        Access::Write | Access::Create => {
            let now = SystemClock.now();
            ledger.adopt_identity(&config.identity, config.frames.delay, now, Adopt::IfNone)?.differences
        }
    };
    if !differences.is_empty() {
        let refusal = crate::identity::refusal(ledger.path(), &differences, config.file.as_deref());
        return Err(Usage(refusal).into());
    }
    Ok(ledger)
}

/// Loads the config and names the pipeline in the log: by the config file's stem until the
/// config is read (its errors need a name too), by [`Config::pipeline_name`] from then on.
fn load(path: Option<PathBuf>) -> Result<Config> {
    let path = path.ok_or_else(|| Usage("no config: pass --config FILE or set FRAMESYNC_CONFIG".into()))?;
    if let Some(stem) = path.file_stem() {
        crate::logging::set_pipeline(&stem.to_string_lossy());
    }
    let config = read_config(&path)?;
    crate::logging::set_pipeline(&config.pipeline_name());
    crate::redact::install(&config.secrets);
    Ok(config)
}

/// The config at `path`, with the process's environment and `FRAMESYNC__` overrides; an error
/// is a usage error (exit 2).
fn read_config(path: &std::path::Path) -> Result<Config> {
    let overrides = crate::config::overrides_from_process();
    Ok(Config::load_with_overrides(path, &process_env, &overrides).map_err(|e| Usage(format!("{e:#}")))?)
}
