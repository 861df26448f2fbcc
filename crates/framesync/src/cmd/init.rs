//! `init`: writes the commented example config and creates its ledger, named after the config
//! (`orders.toml` gets `orders.db`), so two pipelines initialised side by side never share one.
//! Its `frames.start` is the start of the current hour: a first run faces an hour of frames, not
//! the weeks since the example's date; older data is a `backfill`, which `init` says how to run.
//! `--ledger` puts the ledger elsewhere (a state folder the service may write, when the config
//! folder is read-only to it); `--no-ledger` leaves its creation to the first run, so the ledger
//! belongs to the user the runs are made as.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Usage;
use crate::config::EXAMPLE;
use crate::frames::{Epoch, rfc3339};
use crate::ledger::{Ledger, Synchronous, access};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the ledger goes, written into the config as its `ledger` [default: beside the
    /// config, named after it: orders.toml gets orders.db].
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Write the config only: the first `framesync run` creates the ledger, owned by the user
    /// it runs as.
    #[arg(long)]
    pub no_ledger: bool,
}

/// Writes the config at `path` and creates its ledger. A ledger folder this process cannot
/// write fails before anything is written ([`crate::ledger::Unusable`], exit 3); a config that
/// cannot be written is a [`Usage`] error (exit 2).
pub fn init(path: PathBuf, args: &Args, out: &mut dyn Write) -> Result<u8> {
    if path.exists() {
        return Err(Usage(format!("{} already exists; framesync init does not overwrite it", path.display())).into());
    }
    let (value, ledger) = match &args.ledger {
        Some(given) => {
            let ledger = std::path::absolute(given).with_context(|| format!("--ledger {}", given.display()))?;
            let value = ledger
                .to_str()
                .ok_or_else(|| Usage(format!("--ledger {}: not valid UTF-8", ledger.display())))?
                .to_owned();
            (value, ledger)
        }
        None => {
            let name = ledger_name(&path);
            let ledger = path.parent().unwrap_or(Path::new(".")).join(&name);
            (name, ledger)
        }
    };
    if !args.no_ledger {
        access::writable(&ledger)?;
    }
    let start = hour_start(chrono::Utc::now().timestamp());
    write_new(&path, &example(&value, start))?;
    if args.no_ledger {
        writeln!(out, "wrote {}; the first `framesync run` creates the ledger {}", path.display(), ledger.display())?;
    } else {
        Ledger::open(&ledger, Synchronous::Normal)?;
        writeln!(out, "wrote {} and created the ledger {}", path.display(), ledger.display())?;
    }
    writeln!(
        out,
        "next: edit the [source] and [sink] URLs, export SS_TOKEN and RS_TOKEN, then `framesync --config {} check`",
        path.display()
    )?;
    writeln!(
        out,
        "frames.start is {} (this hour); to deliver older records too, once: `framesync --config {} backfill --from <time> --to {}`",
        rfc3339(start),
        path.display(),
        rfc3339(start)
    )?;
    Ok(0)
}

/// The ledger's file name for the config at `path`: its stem with `.db`.
fn ledger_name(path: &Path) -> String {
    match path.file_stem().and_then(|stem| stem.to_str()) {
        Some(stem) if !stem.is_empty() => format!("{stem}.db"),
        _ => "framesync.db".into(),
    }
}

/// The start of the hour `now` falls in.
fn hour_start(now: Epoch) -> Epoch {
    now - now.rem_euclid(3600)
}

/// The example config with its `ledger` line naming `name` and its `frames.start` at `start`
/// (the line's comment kept).
fn example(name: &str, start: Epoch) -> String {
    let ledger = format!("ledger = {}", toml::Value::String(name.into()));
    let start = format!("start = \"{}\"", rfc3339(start));
    let mut lines = Vec::new();
    for line in EXAMPLE.lines() {
        if line.starts_with("ledger = ") {
            lines.push(ledger.clone());
        } else if let Some(rest) = line.strip_prefix("start = \"") {
            let comment = rest.split_once('"').map_or("", |(_, after)| after);
            lines.push(format!("{start}{comment}"));
        } else {
            lines.push(line.to_owned());
        }
    }
    lines.join("\n") + "\n"
}

/// Writes a file that must not exist yet, atomically: a temp file in the same folder, renamed.
/// A failure is a [`Usage`] error naming the file, and leaves no temp file behind.
fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Usage(format!("cannot write the config {}: {e}", path.display())).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_is_named_after_the_config() {
        assert_eq!(ledger_name(Path::new("/etc/framesync/orders.toml")), "orders.db");
        assert_eq!(ledger_name(Path::new("billing.v2.toml")), "billing.v2.db");
        assert_eq!(ledger_name(Path::new("plain")), "plain.db");
    }

    #[test]
    fn the_example_names_the_ledger_and_starts_this_hour_and_changes_nothing_else() {
        let now = crate::frames::parse_time("2026-11-30T08:47:13Z").unwrap();
        let text = example("orders.db", hour_start(now));
        let changed: Vec<_> = EXAMPLE.lines().zip(text.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(changed[0], ("ledger = \"framesync.db\"", "ledger = \"orders.db\""));
        let (was, now) = changed[1];
        assert!(was.starts_with("start = \"2026-11-01T00:00:00Z\""), "{was}");
        assert_eq!(now, was.replace("2026-11-01T00:00:00Z", "2026-11-30T08:00:00Z"), "the comment is kept");
        assert_eq!(text.lines().count(), EXAMPLE.lines().count());
    }

    #[test]
    fn a_ledger_name_with_quotes_is_written_as_valid_toml() {
        let text = example("my \"odd\" name.db", 0);
        let parsed = crate::config::Config::parse(&text, Path::new("/etc/framesync"), &|_| Some("x".into())).unwrap();
        assert_eq!(parsed.ledger, Path::new("/etc/framesync/my \"odd\" name.db"));
    }
}
