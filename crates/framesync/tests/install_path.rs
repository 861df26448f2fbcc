//! The documented path from `cargo install` to a running timer, against the real binary: the
//! README's install command, the crontab's PATH and every systemd unit name one binary
//! location; `init --ledger` puts the ledger where the service may write it; `init` in a folder
//! it cannot write says so with the exit code every command gives; a changed `frames.size` is
//! refused by `check` and `run` alike.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Where the documented install puts the binary: `cargo install ... --root /usr/local`.
const BINARY: &str = "/usr/local/bin/framesync";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn init(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_framesync"));
    command.arg("--config").arg(config).arg("init").args(args).env_remove("RUST_LOG");
    command
}

fn said(out: &Output) -> String {
    format!("{}{}", text(out), stderr(out))
}

#[test]
fn the_readme_the_crontab_and_every_systemd_unit_name_the_same_binary() {
    let readme = read("README.md");
    let install = "cargo install --path crates/framesync --locked --root /usr/local";
    assert!(readme.contains(install), "README.md installs with `{install}`");
    for completion in ["framesync completions bash > ", "framesync man > /usr/local/share/man/man1/framesync.1"] {
        assert!(readme.contains(completion), "README.md installs `{completion}`");
    }

    let crontab = read("crontab.example");
    let path = crontab.lines().find_map(|l| l.strip_prefix("PATH=")).expect("crontab.example sets PATH");
    assert_eq!(path.split(':').next(), Path::new(BINARY).parent().unwrap().to_str(), "PATH={path}");
    assert!(crontab.contains(BINARY), "crontab.example's header names {BINARY}");
    for line in crontab.lines().filter(|l| l.starts_with(|c: char| c == '*' || c.is_ascii_digit())) {
        let command = line.split_whitespace().nth(5).unwrap();
        assert_eq!(command, "framesync", "{line}: the binary found through PATH");
    }

    let units = std::fs::read_dir(root().join("deploy/systemd")).unwrap();
    let mut services = 0;
    for entry in units {
        let path = entry.unwrap().path();
        let unit = std::fs::read_to_string(&path).unwrap();
        assert!(unit.contains(BINARY), "{}'s header names {BINARY}", path.display());
        for exec in unit.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            assert!(exec.starts_with(&format!("{BINARY} ")), "{}: ExecStart={exec}", path.display());
            services += 1;
        }
    }
    assert!(services >= 2, "a unit per pipeline and one for all of them");
}

#[test]
fn init_with_ledger_writes_the_ledger_key_and_creates_it_there_for_its_owner_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("var/lib/framesync");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.path().join("orders.toml");
    let ledger = state.join("orders.db");
    let out = init(&config, &["--ledger", ledger.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(text(&out).contains(&format!("created the ledger {}", ledger.display())), "{}", text(&out));

    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains(&format!("ledger = \"{}\"\n", ledger.display())), "{written}");
    let parsed = framesync::config::Config::load(&config, &|_| Some("x".into())).unwrap();
    assert_eq!(parsed.ledger, ledger);
    assert_eq!(mode(&ledger), 0o600);
    assert!(!dir.path().join("orders.db").exists(), "nothing beside the config");
}

#[test]
fn init_with_a_relative_ledger_writes_it_from_the_current_folder_not_the_configs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let out = init(Path::new("etc/orders.toml"), &["--ledger", "state/orders.db"]).current_dir(dir.path()).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let parsed = framesync::config::Config::load(&dir.path().join("etc/orders.toml"), &|_| Some("x".into())).unwrap();
    assert_eq!(parsed.ledger, dir.path().canonicalize().unwrap().join("state/orders.db"));
    assert!(parsed.ledger.exists());
}

#[test]
fn init_with_no_ledger_writes_the_config_only_and_leaves_the_ledger_to_the_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orders.toml");
    let ledger = dir.path().join("state/orders.db");
    std::fs::create_dir(ledger.parent().unwrap()).unwrap();
    let out = init(&config, &["--ledger", ledger.to_str().unwrap(), "--no-ledger"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let expected = format!("the first `framesync run` creates the ledger {}", ledger.display());
    assert!(text(&out).contains(&expected), "{}", text(&out));
    assert_eq!(std::fs::read_dir(ledger.parent().unwrap()).unwrap().count(), 0, "init created no ledger");
    let parsed = framesync::config::Config::load(&config, &|_| Some("x".into())).unwrap();
    assert_eq!(parsed.ledger, ledger);

    let status = Command::new(env!("CARGO_BIN_EXE_framesync"))
        .arg("--config")
        .arg(&config)
        .arg("status")
        .env("SS_TOKEN", "s")
        .env("RS_TOKEN", "r")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3), "{}", said(&status));
    assert!(stderr(&status).contains("no ledger yet"), "{}", stderr(&status));
    assert!(!ledger.exists(), "status creates none either");
}

#[test]
fn init_in_a_folder_it_cannot_write_exits_3_with_the_message_every_command_gives() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o555)).unwrap();
    let config = etc.join("orders.toml");
    let mut command = init(&config, &[]);
    let who = if rustix::process::geteuid().is_root() {
        // root writes a folder with mode 0555 anyway: init runs as `nobody`.
        const NOBODY: u32 = 65534;
        command.uid(NOBODY).gid(NOBODY);
        format!("nobody (uid {NOBODY})")
    } else {
        String::new()
    };
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    let message = format!(
        "ledger {}: its folder {} is not writable: permission denied for user {who}",
        etc.join("orders.db").display(),
        etc.display()
    );
    assert!(stderr(&out).contains(&message), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "one line: {}", stderr(&out));
    assert_eq!(std::fs::read_dir(&etc).unwrap().count(), 0, "nothing written");
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn init_whose_config_cannot_be_written_exits_2_naming_it_and_creates_no_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("missing/orders.toml");
    let ledger = dir.path().join("orders.db");
    let out = init(&config, &["--ledger", ledger.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(stderr(&out).contains(&format!("cannot write the config {}", config.display())), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "one line: {}", stderr(&out));
    assert!(!ledger.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn after_a_frames_size_change_check_and_run_both_exit_2_naming_frames_size() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "2"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", "", "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let config = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, config.replacen("size = \"1m\"", "size = \"5m\"", 1)).unwrap();
    for command in ["check", "run"] {
        let out = p.framesync(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", said(&out));
        assert!(said(&out).contains("frames.size"), "{command}: {}", said(&out));
    }
}
