//! `run --all DIR` (and `pull`, `push`): every `*.toml` directly in DIR is one pipeline, run as
//! a child process of its own (`framesync --config FILE run`), so each has its own lock, ledger,
//! log, secrets and exit code, and a crash or a hang in one never touches the others. At most
//! `--jobs` run at once; when one ends the next starts. A pipeline whose previous run still
//! holds its lock exits 75 at once: under cron, where every tick starts a `run --all` of its
//! own, a slow pipeline never delays the others' next tick.
//!
//! Exit code: 0 when every pipeline exited 0 or 75; otherwise the most severe code among the
//! failed ones, 3 > 2 > 1, where a pipeline killed by a signal or ending with any other code
//! counts as 1. A failed pipeline's lines pass through whole (each already names its pipeline)
//! and one summary line names the failed pipelines; a fleet that succeeds prints nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::Usage;
use crate::logging::Format;

/// What the parent passes to every child.
pub struct Fleet<'a> {
    /// The subcommand: `run`, `pull` or `push`.
    pub command: &'a str,
    pub dry_run: bool,
    pub jobs: usize,
    pub log_format: Format,
}

/// How a pipeline's child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
    /// It could not be started, or waited for.
    NotRun(String),
    /// Refused without running: its config clashes with another pipeline's.
    Refused(String),
}

impl Ended {
    fn from_status(status: ExitStatus) -> Self {
        #[cfg(unix)]
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return Self::Signal(signal);
        }
        Self::Code(status.code().unwrap_or(1))
    }

    /// 0 and 75 (the previous run still holds the lock: normal under cron) are fine.
    fn failed(&self) -> bool {
        !matches!(self, Self::Code(0 | 75))
    }

    /// The code this ending weighs in the fleet's exit code.
    fn severity(&self) -> u8 {
        match self {
            Self::Code(code @ 1..=3) => *code as u8,
            Self::Code(0 | 75) => 0,
            Self::Refused(_) => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
            Self::NotRun(why) => write!(f, "not run: {why}"),
            Self::Refused(why) => write!(f, "not run: {why}"),
        }
    }
}

/// The pipelines of DIR: its `*.toml` files, sorted by name. A DIR that cannot be read, or
/// holds none, is a usage error: an operator whose glob matched nothing must hear of it.
pub fn configs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Usage(format!("--all {}: cannot read the folder: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(
            Usage(format!("--all {}: no *.toml config in the folder, so no pipeline to run", dir.display())).into()
        );
    }
    Ok(files)
}

/// The name a pipeline goes by: [`crate::config::Config::pipeline_name`] when its config can
/// be read here, else the config file's stem (the name its child's log lines carry then).
pub fn pipeline_name(config: &Path) -> String {
    match super::read_config(config) {
        Ok(config) => config.pipeline_name(),
        Err(_) => config.file_stem().map_or_else(|| config.display().to_string(), |s| s.to_string_lossy().into_owned()),
    }
}

/// For each pipeline, why it is refused when another of the folder goes by the same name: two
/// configs on one ledger (or on ledgers of one name) would share a lock or a metrics group and
/// log lines no one could tell apart.
pub fn name_clashes(names: &[String], files: &[PathBuf]) -> Vec<Option<String>> {
    let file_name = |j: usize| files[j].file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let others: Vec<String> = (0..names.len()).filter(|&j| j != i && names[j] == *name).map(file_name).collect();
            (!others.is_empty()).then(|| {
                format!(
                    "{} shares the name {name:?} (its ledger's) with {}: each pipeline needs a ledger of a name of its own",
                    file_name(i),
                    others.join(", ")
                )
            })
        })
        .collect()
}

/// Runs every pipeline of `dir`, `fleet.jobs` at a time; the fleet's exit code.
pub fn run_all(dir: &Path, fleet: &Fleet, out: &mut dyn Write) -> Result<u8> {
    let files = configs(dir)?;
    let names: Vec<String> = files.iter().map(|f| pipeline_name(f)).collect();
    let next = Mutex::new(0usize);
    let clashes = name_clashes(&names, &files);
    let ended: Mutex<Vec<Option<Ended>>> = Mutex::new(clashes.iter().map(|c| c.clone().map(Ended::Refused)).collect());
    let stdout: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..fleet.jobs.min(files.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let Some(file) = files.get(i) else { break };
                    if clashes[i].is_some() {
                        continue;
                    }
                    let (end, printed) = run_one(file, fleet);
                    ended.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(end);
                    stdout.lock().unwrap_or_else(|p| p.into_inner()).push((i, printed));
                }
            });
        }
    });
    let mut printed = stdout.into_inner().unwrap_or_else(|p| p.into_inner());
    printed.sort_by_key(|(i, _)| *i);
    for (i, text) in printed.iter().filter(|(_, text)| !text.is_empty()) {
        writeln!(out, "pipeline {}:", names[*i])?;
        out.write_all(text)?;
    }
    let ended: Vec<(String, Ended)> = names
        .into_iter()
        .zip(ended.into_inner().unwrap_or_else(|p| p.into_inner()))
        .map(|(name, end)| (name, end.unwrap_or(Ended::NotRun("no slot ran it".into()))))
        .collect();
    if let Some(line) = summary(&ended) {
        eprintln!("framesync: {line}");
    }
    Ok(exit_code(&ended))
}

/// Runs one pipeline's child to its end: its stderr passes through line by line (whole lines,
/// never mixed with another pipeline's), its stdout is kept to be printed in one piece.
fn run_one(file: &Path, fleet: &Fleet) -> (Ended, Vec<u8>) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return (Ended::NotRun(format!("cannot find framesync's own binary: {e}")), Vec::new()),
    };
    let mut command = Command::new(exe);
    command.arg("--config").arg(file).arg("--log-format").arg(format_name(fleet.log_format)).arg(fleet.command);
    if fleet.dry_run {
        command.arg("--dry-run");
    }
    let mut child = match command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return (Ended::NotRun(format!("cannot start it: {e}")), Vec::new()),
    };
    let (child_out, child_err) = (child.stdout.take(), child.stderr.take());
    let mut printed = Vec::new();
    std::thread::scope(|scope| {
        if let Some(err) = child_err {
            scope.spawn(|| pass_lines(err));
        }
        if let Some(mut child_out) = child_out {
            let _ = child_out.read_to_end(&mut printed);
        }
    });
    let end = match child.wait() {
        Ok(status) => Ended::from_status(status),
        Err(e) => Ended::NotRun(format!("cannot wait for it: {e}")),
    };
    (end, printed)
}

/// Copies a child's stderr to ours one whole line at a time.
fn pass_lines(err: impl Read) {
    let mut reader = BufReader::new(err);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let _ = std::io::stderr().lock().write_all(&line);
        line.clear();
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Human => "human",
        Format::Json => "json",
    }
}

/// "2 of 5 pipelines failed: orders (exit 1), billing (killed by signal 9)"; none when all
/// pipelines exited 0 or 75.
pub fn summary(ended: &[(String, Ended)]) -> Option<String> {
    let failed: Vec<String> =
        ended.iter().filter(|(_, end)| end.failed()).map(|(name, end)| format!("{name} ({end})")).collect();
    if failed.is_empty() {
        return None;
    }
    let total = crate::plural::plural(ended.len() as i64, "pipeline");
    Some(format!("{} of {total} failed: {}", failed.len(), failed.join(", ")))
}

/// 0 when every pipeline exited 0 or 75, else the most severe failure: 3 > 2 > 1.
pub fn exit_code(ended: &[(String, Ended)]) -> u8 {
    ended.iter().map(|(_, end)| end.severity()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(ends: &[(&str, Ended)]) -> Vec<(String, Ended)> {
        ends.iter().map(|(n, e)| (n.to_string(), e.clone())).collect()
    }

    #[test]
    fn a_fleet_of_0_and_75_exits_0_and_says_nothing() {
        let ends = fleet(&[("a", Ended::Code(0)), ("b", Ended::Code(75))]);
        assert_eq!((exit_code(&ends), summary(&ends)), (0, None));
    }

    #[test]
    fn the_most_severe_failure_decides_and_a_signal_or_an_odd_code_counts_as_1() {
        let cases = [
            (vec![Ended::Code(1), Ended::Code(0)], 1),
            (vec![Ended::Code(1), Ended::Code(3), Ended::Code(2)], 3),
            (vec![Ended::Code(2), Ended::Code(75)], 2),
            (vec![Ended::Signal(9), Ended::Code(0)], 1),
            (vec![Ended::Code(101)], 1),
            (vec![Ended::NotRun("x".into())], 1),
        ];
        for (ends, code) in cases {
            let named: Vec<(String, Ended)> = ends.iter().map(|e| ("p".to_string(), e.clone())).collect();
            assert_eq!(exit_code(&named), code, "{ends:?}");
        }
    }

    #[test]
    fn the_summary_names_each_failed_pipeline_with_its_code_or_signal() {
        let ends = fleet(&[
            ("orders", Ended::Code(1)),
            ("billing", Ended::Signal(9)),
            ("stock", Ended::Code(0)),
            ("users", Ended::Code(75)),
        ]);
        assert_eq!(summary(&ends).unwrap(), "2 of 4 pipelines failed: orders (exit 1), billing (killed by signal 9)");
    }

    #[test]
    fn pipelines_of_one_name_are_refused_and_the_others_are_not() {
        let names: Vec<String> = ["orders", "billing", "orders"].map(String::from).into();
        let files: Vec<PathBuf> = ["a.toml", "b.toml", "c.toml"].map(PathBuf::from).into();
        let clashes = name_clashes(&names, &files);
        assert!(
            clashes[0]
                .as_ref()
                .is_some_and(|c| c.starts_with("a.toml shares the name \"orders\" (its ledger's) with c.toml: ")),
            "{clashes:?}"
        );
        assert_eq!(clashes[1], None);
        assert!(
            clashes[2]
                .as_ref()
                .is_some_and(|c| c.starts_with("c.toml shares the name \"orders\" (its ledger's) with a.toml")),
            "{clashes:?}"
        );
        let ends = fleet(&[("orders", Ended::Refused("x".into())), ("billing", Ended::Code(0))]);
        assert_eq!(exit_code(&ends), 2);
        assert_eq!(summary(&ends).unwrap(), "1 of 2 pipelines failed: orders (not run: x)");
    }

    #[test]
    fn only_toml_files_directly_in_the_folder_are_pipelines_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.toml", "a.toml", "orders.env", "c.toml.bak"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.toml")).unwrap();
        let names: Vec<String> =
            configs(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["a.toml", "b.toml"]);
        std::fs::remove_file(dir.path().join("a.toml")).unwrap();
        std::fs::remove_file(dir.path().join("b.toml")).unwrap();
        let empty = configs(dir.path()).unwrap_err();
        assert!(empty.downcast_ref::<Usage>().is_some() && empty.to_string().contains("no *.toml"), "{empty}");
        let missing = configs(&dir.path().join("nope")).unwrap_err();
        assert!(missing.downcast_ref::<Usage>().is_some(), "{missing}");
    }
}
