//! `man`: the man page (roff, section 1), generated from the command line's definition. One
//! page holds every command with its options, so `man framesync` needs no page per command.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_mangen::Man;

use super::Cli;

pub fn man(out: &mut dyn Write) -> Result<u8> {
    out.write_all(page()?.as_bytes())?;
    Ok(0)
}

/// The page: the program's own sections, then COMMANDS with a subsection per command (nested
/// ones as `framesync dead-letters list`), each with its synopsis, description and options.
pub fn page() -> Result<String> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let man = Man::new(cli.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    writeln!(page, ".SH COMMANDS")?;
    for command in descendants(&cli) {
        page.extend(command_part(command)?.into_bytes());
    }
    man.render_version_section(&mut page)?;
    Ok(String::from_utf8(page)?)
}

fn descendants(command: &clap::Command) -> Vec<&clap::Command> {
    command.get_subcommands().filter(|c| !c.is_hide_set()).flat_map(|c| [vec![c], descendants(c)].concat()).collect()
}

/// A command's sections, demoted: its synopsis heads a subsection, the rest are paragraphs.
fn command_part(command: &clap::Command) -> Result<String> {
    let man = Man::new(command.clone());
    let mut part = Vec::new();
    man.render_synopsis_section(&mut part)?;
    man.render_description_section(&mut part)?;
    man.render_options_section(&mut part)?;
    let part = String::from_utf8(part)?;
    let name = command.get_bin_name().unwrap_or_else(|| command.get_name());
    let mut lines = Vec::new();
    for line in part.lines() {
        match line {
            ".SH SYNOPSIS" => lines.push(format!(".SS \"{name}\"")),
            l if l.starts_with(".SH ") => lines.push(".PP".to_owned()),
            l => lines.push(l.to_owned()),
        }
    }
    Ok(lines.join("\n") + "\n")
}
