//! `framesync completions` and `framesync man`: generated from the command line's definition,
//! so they name every command of the build, and what they print is valid for its reader.

use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use framesync::cmd::Cli;

fn framesync(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_framesync")).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Every command's words: `run`, `dead-letters`, `list` (of `dead-letters list`)...
fn command_paths() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, above: &[String], into: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = [above, &[sub.get_name().to_owned()]].concat();
            walk(sub, &path, into);
            into.push(path);
        }
    }
    let mut paths = Vec::new();
    walk(&Cli::command(), &[], &mut paths);
    assert!(paths.len() > 10, "{paths:?}");
    paths
}

#[test]
fn every_shell_completion_script_names_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(framesync(&["completions", shell]).stdout).unwrap();
        for path in command_paths() {
            let word = path.last().unwrap();
            assert!(script.contains(word.as_str()), "{shell}: no {word:?} in the script");
        }
    }
}

#[test]
fn the_bash_script_is_valid_bash_and_completes_the_commands() {
    let script = String::from_utf8(framesync(&["completions", "bash"]).stdout).unwrap();
    assert!(script.contains("complete -F _framesync"), "registers itself for framesync");
    for path in command_paths().iter().filter(|p| p.len() == 1) {
        assert!(script.contains(&format!("framesync,{})", path[0])), "bash: no case for {path:?}");
    }
    let Ok(bash) = Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn() else {
        println!("skipped: bash is missing, the script's syntax was not checked");
        return;
    };
    let mut bash = bash;
    std::io::Write::write_all(&mut bash.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let checked = bash.wait_with_output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_framesync")).args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"), "names the shells it knows");
}

#[test]
fn the_man_page_is_roff_with_a_subsection_for_every_command() {
    let page = String::from_utf8(framesync(&["man"]).stdout).unwrap();
    assert!(page.lines().any(|l| l.starts_with(".TH framesync 1 ")), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH COMMANDS"] {
        assert!(page.lines().any(|l| l == section), "no {section}");
    }
    for path in command_paths() {
        let heading = format!(".SS \"framesync {}\"", path.join(" "));
        assert!(page.lines().any(|l| l == heading), "no {heading}");
    }
    assert!(!page.contains("framesync\\-run(1)"), "no pointer to a page that is not installed");
}

#[test]
fn the_man_page_renders_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("framesync.1");
    std::fs::write(&file, framesync(&["man"]).stdout).unwrap();
    let rendered = Command::new("man").arg("--warnings").arg("-l").arg(&file).env("MANWIDTH", "80").output();
    let Ok(rendered) = rendered else {
        println!("skipped: man is missing, the page was checked as roff only");
        return;
    };
    let (text, warnings) = (String::from_utf8_lossy(&rendered.stdout), String::from_utf8_lossy(&rendered.stderr));
    assert!(rendered.status.success() && warnings.is_empty(), "{warnings}");
    for path in command_paths() {
        assert!(text.contains(&format!("framesync {}", path.join(" "))), "{path:?} not in\n{text}");
    }
}
