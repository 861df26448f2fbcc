//! What ships is tested: every ready-made query prepares against the migrated schema, `init`
//! writes the example config as shipped and it parses, and the crontab example parses.

use std::path::Path;
use std::process::Command;

#[test]
fn every_ready_made_query_prepares_against_the_migrated_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        framesync::ledger::Ledger::open(&dir.path().join("l.db"), framesync::ledger::Synchronous::Normal).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/queries")).unwrap() {
        let path = entry.unwrap().path();
        let sql = std::fs::read_to_string(&path).unwrap();
        ledger.prepare_check(&sql).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        count += 1;
    }
    assert!(count >= 6, "{count} queries");
}

#[test]
fn framesync_init_writes_the_shipped_example_config_and_it_parses() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("framesync.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_framesync")).arg("--config").arg(&config).arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&config).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("framesync.example.toml")).unwrap();
    let differ: Vec<_> = shipped.lines().zip(written.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(differ.len(), 1, "a config named framesync.toml gets the example as shipped but its start: {differ:?}");
    assert!(differ[0].0.starts_with("start = ") && differ[0].1.starts_with("start = "), "{differ:?}");
    let env = |name: &str| Some(format!("value-of-{name}"));
    let parsed = framesync::config::Config::load(&config, &env).unwrap();
    assert_eq!(parsed.ledger, dir.path().join("framesync.db"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let start = parsed.frames.start;
    assert!(start % 3600 == 0 && now - start < 3600 + 5, "frames.start {start} is the start of this hour (now {now})");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backfill --from <time> --to "), "init says how to deliver older data: {said}");
}

#[test]
fn every_crontab_example_line_is_a_valid_cron_line_running_framesync() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crontab.example")).unwrap();
    let mut jobs = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.trim_start_matches("# ");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || !fields[..5].iter().all(|f| valid_cron_field(f)) {
            continue;
        }
        assert_eq!(fields[5], "framesync", "{line}");
        let every_pipeline = fields[6..] == ["run", "--all", "/etc/framesync"];
        assert!(every_pipeline || ["run", "pull", "push"].contains(fields.last().unwrap()), "{line}");
        jobs += 1;
    }
    assert_eq!(jobs, 4);
}

fn valid_cron_field(field: &str) -> bool {
    field.split(',').all(|part| {
        let (range, step) = part.split_once('/').unwrap_or((part, "1"));
        step.parse::<u32>().is_ok() && (range == "*" || range.split('-').all(|n| n.parse::<u32>().is_ok()))
    })
}

/// The README's walkthrough is a transcript written by scripts/walkthrough; a command line that
/// no longer parses would make it a lie until the script is run again.
#[test]
fn every_framesync_command_of_the_readme_walkthrough_parses_with_todays_command_line() {
    use clap::Parser;
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let (_, rest) = readme.split_once("<!-- walkthrough:begin -->").expect("the walkthrough's markers");
    let (transcript, _) = rest.split_once("<!-- walkthrough:end -->").unwrap();
    let mut parsed = 0;
    for line in transcript.lines().filter_map(|l| l.strip_prefix("$ ")) {
        for command in line.split([';', '|', '>']).map(str::trim).filter(|c| c.starts_with("framesync ")) {
            let args = command.split_whitespace();
            let parsed_or_told = framesync::cmd::Cli::try_parse_from(args).map(drop).or_else(|e| {
                // `--version` and `--help` are answered by clap itself.
                if matches!(e.kind(), clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp) {
                    Ok(())
                } else {
                    Err(e)
                }
            });
            if let Err(e) = parsed_or_told {
                panic!("`{command}` no longer parses; run scripts/walkthrough --readme:\n{e}");
            }
            parsed += 1;
        }
    }
    assert!(parsed >= 10, "{parsed} framesync commands in the walkthrough");
}
