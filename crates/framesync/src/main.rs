//! The `framesync` command: parse the arguments, set up logging, run the command, and turn
//! the result into an exit code — in one place.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use framesync::cmd::{self, Cli};
use framesync::{Usage, ledger, lock, logging, redact};

/// Exit codes (see README): 0 ok, 1 work failed and is recorded, 2 usage or config,
/// 3 ledger unusable or (for a command that only reads) absent, 75 another run holds the lock.
fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<lock::Held>().is_some() {
        75
    } else if error.downcast_ref::<Usage>().is_some() {
        2
    } else if error.chain().any(|e| e.is::<ledger::Unusable>() || e.is::<ledger::Absent>() || e.is::<rusqlite::Error>())
    {
        3
    } else {
        1
    }
}

/// What to do about the SQLite errors an operator can fix.
fn hint(error: &anyhow::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, ReadOnly};
    let code = error.chain().find_map(|e| match e.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    })?;
    match code {
        DatabaseBusy | DatabaseLocked => Some(
            "another process held the ledger's write lock longer than run.busy_timeout; nothing was lost, the next run goes on",
        ),
        DiskFull => Some("the disk holding the ledger is full; nothing was lost, runs go on once there is room"),
        ReadOnly => Some("the ledger or its folder is read-only; framesync needs to write both"),
        _ => None,
    }
}

/// The reader of our output has gone (`framesync status | head -1`): there is no one left to
/// tell anything, so framesync stops quietly, as ripgrep does.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    logging::Logger::init(cli.log_format);
    if cli.command.is_scheduled() {
        logging::hold();
    }
    let result = cmd::dispatch(cli, &mut redact::Scrubbed::new(std::io::stdout().lock()));
    // A run that exits 0 says nothing: cron mails every line.
    logging::release(!matches!(result, Ok(0)) && !result.as_ref().is_err_and(|e| exit_code(e) == 75));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) if broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            if let Some(held) = error.downcast_ref::<lock::Held>() {
                // Under cron a held lock is normal: the previous run is still going. By hand,
                // the operator wants to know why nothing happened.
                if std::io::stderr().is_terminal() || std::io::stdout().is_terminal() {
                    eprintln!("framesync: {}", lock::held_message(held));
                } else {
                    log::info!("{error:#}; exiting");
                }
            } else {
                eprintln!("framesync: error: {}", redact::scrub(&format!("{error:#}")));
                if let Some(hint) = hint(&error) {
                    eprintln!("framesync: {hint}");
                }
            }
            ExitCode::from(code)
        }
    }
}
