//! Who may create the ledger and who may read it, against the real binaries: a command that
//! only reads never creates nor migrates one, the ledger and the files beside it are their
//! owner's alone, and a ledger framesync cannot write is said as such, with exit 3, by every
//! command.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use common::*;

/// A pipeline whose ledger lives in a folder of its own, `state/`, beside the config.
fn pipeline(sim: &Sim, minutes: i64) -> (Pipeline, PathBuf) {
    let p = Pipeline::new(sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(minutes), "", "", "");
    let text = std::fs::read_to_string(&p.config).unwrap().replace("ledger = \"ledger.db\"", "ledger = \"state/l.db\"");
    std::fs::write(&p.config, text).unwrap();
    let state = p.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    (p, state)
}

fn files(folder: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every command that only reads, and the ones that change a ledger but have nothing to do
/// without one.
const WITHOUT_A_LEDGER: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["run", "--dry-run"],
    &["pull", "--dry-run"],
    &["push", "--dry-run"],
    &["backfill", "--dry-run", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T00:05:00Z"],
    &["verify", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T00:05:00Z"],
    &["dead-letters", "list"],
    &["dead-letters", "retry", "--all"],
    &["dead-letters", "drop", "--all"],
    &["prune"],
];

#[test]
fn read_only_commands_create_nothing_and_say_there_is_no_ledger_yet() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let (p, state) = pipeline(&sim, 10);
    let ledger = state.join("l.db");
    let message = format!("no ledger yet at {}: the first `framesync run` creates it", ledger.display());
    for args in WITHOUT_A_LEDGER {
        let out = p.framesync(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&message), "{args:?}: {}", stderr(&out));
        assert!(files(&state).is_empty(), "{args:?} left {:?}", files(&state));
    }
    // `check` is what an operator runs before the first run: the line is ok, and it exits 0.
    let out = p.framesync(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out), stderr(&out));
    assert!(text(&out).contains(&format!("ledger: ok, {message}")), "{}", text(&out));
    assert!(files(&state).is_empty(), "check left {:?}", files(&state));
}

#[test]
fn run_creates_the_ledger_its_wal_shm_and_lock_files_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let (p, state) = pipeline(&sim, 5);
    // Killed before it closes the ledger, the run leaves its -wal and -shm files to look at.
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "before-end-run").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed: {}", stderr(&killed));
    let names = files(&state);
    for name in ["l.db", "l.db-wal", "l.db-shm", "l.db.pull.lock", "l.db.push.lock"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    for name in &names {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode(&state.join("l.db")), 0o600);
    // A read-only command on a ledger that exists reads it and leaves nothing new behind.
    let before = files(&state);
    let out = p.framesync(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files(&state), before);
}

#[test]
fn a_read_only_command_leaves_an_older_ledger_unmigrated_and_says_how_to_migrate_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let (p, state) = pipeline(&sim, 5);
    let ledger = state.join("l.db");
    // A ledger as the framesync before the last migration left it.
    let migrations = [
        include_str!("../sql/0001_init.sql"),
        include_str!("../sql/0002_pruned_totals.sql"),
        include_str!("../sql/0003_late_data_and_servers.sql"),
        include_str!("../sql/0004_pipeline_identity.sql"),
        include_str!("../sql/0005_delivery_attempts.sql"),
        include_str!("../sql/0006_sink_acks.sql"),
        include_str!("../sql/0007_failed_at.sql"),
    ];
    let older = migrations.len();
    assert!(older < framesync::ledger::SCHEMA_VERSION);
    let old = rusqlite::Connection::open(&ledger).unwrap();
    old.pragma_update(None, "journal_mode", "WAL").unwrap();
    for sql in migrations {
        old.execute_batch(sql).unwrap();
    }
    old.pragma_update(None, "user_version", older).unwrap();
    drop(old);
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (before, names) = (std::fs::read(&ledger).unwrap(), files(&state));
    for args in [&["status"][..], &["dead-letters", "list"], &["run", "--dry-run"]] {
        let out = p.framesync(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let want = format!("its schema version is {older}, older than this framesync's");
        assert!(stderr(&out).contains(&want), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("run `framesync run` once to migrate it"), "{args:?}: {}", stderr(&out));
        assert_eq!(std::fs::read(&ledger).unwrap(), before, "{args:?} changed the ledger");
        assert_eq!(files(&state), names, "{args:?}");
    }
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0), "a run migrates it");
    let version: usize =
        rusqlite::Connection::open(&ledger).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, framesync::ledger::SCHEMA_VERSION);
}

#[test]
fn check_warns_when_others_may_read_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let (p, state) = pipeline(&sim, 5);
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let ledger = state.join("l.db");
    let out = p.framesync(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("WARNING"), "{}", text(&out));
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = p.framesync(&["check"]);
    assert_eq!(out.status.code(), Some(1), "a warning is not ok: {}", text(&out));
    let want = format!(
        "ledger: WARNING: {0} is readable by others (mode 0644): it holds staged records and RS answers; chmod 600 {0}",
        ledger.display()
    );
    assert!(text(&out).lines().any(|l| l == want), "{}", text(&out));
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o660)).unwrap();
    let out = p.framesync(&["check"]);
    assert!(text(&out).contains("is readable by its group (mode 0660)"), "{}", text(&out));
}

/// Every command, as it would be run against a ledger it cannot write.
const EVERY_COMMAND: &[&[&str]] = &[
    &["run"],
    &["pull"],
    &["push"],
    &["backfill", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T00:05:00Z"],
    &["verify", "--repair", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T00:05:00Z"],
    &["accept-config"],
    &["dead-letters", "add", "--uid", "u1", "--why", "by hand"],
    &["check"],
];

/// Runs every command (as `user`, when given) and checks that each exits 3 saying `why`, and
/// that the folder holds what it held.
fn every_command_refuses(p: &Pipeline, state: &Path, user: Option<u32>, why: &str) {
    let before = files(state);
    for args in WITHOUT_A_LEDGER.iter().chain(EVERY_COMMAND) {
        let mut command = p.command(args);
        if let Some(uid) = user {
            command.uid(uid).gid(uid);
        }
        let out = command.output().unwrap();
        let said = format!("{}{}", text(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {said}");
        assert!(said.contains(why), "{args:?}: {said}");
        assert_eq!(files(state), before, "{args:?}");
    }
}

#[test]
fn a_ledger_folder_nobody_may_write_is_one_clear_message_and_exit_3_from_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let (p, state) = pipeline(&sim, 5);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
    let why = format!("its folder {} is not writable: permission denied for user", state.display());
    if rustix::process::geteuid().is_root() {
        // root writes a folder with mode 0555 anyway: the commands run as `nobody`, who may read
        // the config but not write the folder.
        const NOBODY: u32 = 65534;
        std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&p.config, std::fs::Permissions::from_mode(0o644)).unwrap();
        every_command_refuses(&p, &state, Some(NOBODY), &format!("{why} nobody (uid {NOBODY})"));
    } else {
        every_command_refuses(&p, &state, None, &why);
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_ledger_folder_that_is_a_file_is_one_clear_message_and_exit_3_from_every_command() {
    // Fails for every user, root included.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[]);
    let (p, state) = pipeline(&sim, 5);
    std::fs::remove_dir(&state).unwrap();
    std::fs::write(&state, "").unwrap();
    let before = std::fs::read(&state).unwrap();
    for args in WITHOUT_A_LEDGER.iter().chain(EVERY_COMMAND) {
        let out = p.framesync(args);
        let said = format!("{}{}", text(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {said}");
        assert!(said.contains(&format!("{} is not a folder", state.display())), "{args:?}: {said}");
    }
    assert_eq!(std::fs::read(&state).unwrap(), before);
}
