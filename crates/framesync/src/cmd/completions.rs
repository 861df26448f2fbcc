//! `completions`: a shell's completion script, generated from the command line's definition,
//! so it always knows every command and option of this build.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn completions(args: &Args, out: &mut dyn Write) -> Result<u8> {
    // Generated into memory first: clap_complete panics on a failed write, and a closed pipe
    // must stop the command like any other write error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "framesync", &mut script);
    out.write_all(&script)?;
    Ok(0)
}
