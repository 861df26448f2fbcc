//! A ledger belongs to one pipeline: the real binary against the simulator, with a second
//! config sharing the first one's ledger.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A second config beside the pipeline's, made from its text by `edit`; it names the same ledger.
fn second_config(p: &Pipeline, edit: impl FnOnce(String) -> String) -> PathBuf {
    let path = p.dir.path().join("second.toml");
    std::fs::write(&path, edit(std::fs::read_to_string(&p.config).unwrap())).unwrap();
    path
}

fn framesync(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framesync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The source URL of the pipeline's config with one more query parameter.
fn other_source(text: String) -> String {
    text.replace("&to={to}\"", "&to={to}&tenant=b\"")
}

/// What a command could have changed: runs, frames, UIDs, staged records, the pipeline row.
fn snapshot(p: &Pipeline) -> String {
    p.query(
        "SELECT (SELECT COUNT(*) FROM runs) || ' runs, ' || (SELECT COUNT(*) FROM frames) || ' frames, '
             || (SELECT COUNT(*) FROM delivered) || ' delivered, ' || (SELECT COUNT(*) FROM staged) || ' staged, '
             || (SELECT source_url || ' ' || reference || ' ' || identity_at || ' ' || updated_at FROM pipeline)",
    )
}

#[test]
fn a_second_config_with_another_source_url_is_refused_and_changes_nothing() {
    // Pins the silent loss this refusal ends: a second config sharing a ledger planned only
    // from what the first had delivered, so it pulled the newest frame and never the rest.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", "", "");
    p.run_until_complete(3);
    let second = second_config(&p, other_source);
    let (before, requests) = (snapshot(&p), sim.requests("ss_events"));

    let out = framesync(&second, &["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    let ours = format!("{}/ss/events?from={{from}}&to={{to}}", sim.base());
    let expected = format!(
        "ledger {} belongs to another pipeline: source.url is \"{ours}&tenant=b\" in the config but \"{ours}\" in the ledger; if the change is deliberate, run `framesync --config {} accept-config`",
        p.ledger_path().display(),
        second.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert_eq!(snapshot(&p), before, "the refused run changed the ledger");
    assert_eq!(sim.requests("ss_events"), requests, "the refused run asked the SS");
}

#[test]
fn every_command_that_opens_the_ledger_refuses_a_config_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let reference = aligned_minutes_ago(5);
    let p = Pipeline::new(&sim, dir, reference, "", "", "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let second = second_config(&p, other_source);
    let before = snapshot(&p);
    let (from, to) = (rfc3339(reference), rfc3339(reference + 2 * MINUTE));
    let commands: [&[&str]; 12] = [
        &["status"],
        &["status", "--json"],
        &["run"],
        &["run", "--dry-run"],
        &["pull"],
        &["push"],
        &["backfill", "--from", &from, "--to", &to],
        &["verify", "--from", &from, "--to", &to],
        &["verify", "--from", &from, "--to", &to, "--repair"],
        &["dead-letters", "list"],
        &["dead-letters", "drop", "--all"],
        &["prune"],
    ];
    for args in commands {
        let out = framesync(&second, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}{}", stdout(&out), stderr(&out));
        assert!(stderr(&out).contains("belongs to another pipeline: source.url is"), "{args:?}: {}", stderr(&out));
    }
    let check = framesync(&second, &["check"]);
    assert_eq!(check.status.code(), Some(2), "{}{}", stdout(&check), stderr(&check));
    let line = stdout(&check).lines().find(|l| l.starts_with("ledger:")).unwrap_or_default().to_owned();
    assert!(line.starts_with("ledger: FAILED: ledger") && line.contains("source.url is"), "{}", stdout(&check));
    assert_eq!(snapshot(&p), before, "a refused command changed the ledger");
}

#[test]
fn accept_config_records_a_deliberate_change_and_then_the_changed_config_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(5), "", "", "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let second = second_config(&p, other_source);
    assert_eq!(framesync(&second, &["run"]).status.code(), Some(2));

    let accept = framesync(&second, &["accept-config"]);
    assert_eq!(accept.status.code(), Some(0), "{}", stderr(&accept));
    let ours = format!("{}/ss/events?from={{from}}&to={{to}}", sim.base());
    let listed = format!("  source.url: \"{ours}\" in the ledger, now \"{ours}&tenant=b\"");
    assert!(stdout(&accept).lines().any(|l| l == listed), "{}", stdout(&accept));
    assert_eq!(p.query::<String>("SELECT source_url FROM pipeline"), format!("{ours}&tenant=b"));

    let run = framesync(&second, &["run"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(p.framesync(&["run"]).status.code(), Some(2), "now the first config is the other pipeline");
    let again = framesync(&second, &["accept-config"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).starts_with("nothing to accept"), "{}", stdout(&again));
}

#[test]
fn a_frame_size_change_exits_2_and_cannot_be_accepted() {
    // Pins the frame-size refusal folded into the identity check: it used to exit 3 (ledger
    // unusable); it is a config difference like the others, but one that can never be accepted.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(5), "", "", "");
    assert_eq!(p.framesync(&["run"]).status.code(), Some(0));
    let second = second_config(&p, |text| text.replacen("size = \"1m\"", "size = \"30s\"", 1));
    let before = snapshot(&p);

    let run = framesync(&second, &["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let text = stderr(&run);
    assert!(text.contains("frames.size is \"30s\" in the config but \"1m\" in the ledger"), "{text}");
    assert!(
        text.contains("keep frames.size = \"1m\" or start a new ledger") && !text.contains("accept-config"),
        "{text}"
    );

    let accept = framesync(&second, &["accept-config"]);
    assert_eq!(accept.status.code(), Some(2), "{}", stdout(&accept));
    assert!(
        stderr(&accept).contains("nothing accepted") && stderr(&accept).contains("frames.size"),
        "{}",
        stderr(&accept)
    );
    assert_eq!(snapshot(&p), before);
    assert_eq!(p.query::<i64>("SELECT frame_size FROM pipeline"), 60);
}

#[test]
fn a_secret_in_the_source_url_never_reaches_the_ledger_or_a_message() {
    const SECRET: &str = "s3cret-ss-key-4711";
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(5), "", "", "");
    let text = std::fs::read_to_string(&p.config).unwrap().replace("&to={to}\"", "&to={to}&key=${SS_KEY}\"");
    std::fs::write(&p.config, text).unwrap();
    let with_key = |config: &Path, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_framesync"));
        command.arg("--config").arg(config).args(args).env_remove("RUST_LOG").env("SS_KEY", SECRET);
        command.output().unwrap()
    };
    let run = with_key(&p.config, &["run"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(p.query::<i64>("SELECT COUNT(*) FROM delivered") > 0, "the URL with the key was used");
    assert!(p.query::<String>("SELECT source_url FROM pipeline").ends_with("&key=${SS_KEY}"));

    let second = second_config(&p, |text| text.replace("&key=", "&tenant=b&key="));
    let refused = with_key(&second, &["status"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("&tenant=b&key=${SS_KEY}\" in the config"), "{}", stderr(&refused));
    let accept = with_key(&second, &["accept-config"]);
    assert_eq!(accept.status.code(), Some(0), "{}", stderr(&accept));
    for out in [&run, &refused, &accept] {
        assert!(!format!("{}{}", stdout(out), stderr(out)).contains(SECRET), "a message holds the secret");
    }
    p.assert_not_in_ledger(SECRET);
}

#[test]
fn a_ledger_without_an_identity_takes_the_first_writing_commands_without_refusing() {
    // A ledger from before identities: a pipeline row with a frame size and a reference time only.
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3"]);
    let reference = aligned_minutes_ago(5);
    let p = Pipeline::new(&sim, dir, reference, "", "", "");
    let mut ledger = framesync::ledger::Ledger::open(&p.ledger_path(), framesync::ledger::Synchronous::Normal).unwrap();
    ledger.sync_pipeline(60, reference - 3600, 60, 0).unwrap();
    drop(ledger);

    assert_eq!(p.framesync(&["status"]).status.code(), Some(0));
    assert_eq!(p.query::<Option<i64>>("SELECT identity_at FROM pipeline"), None, "status only reads");
    let run = p.framesync(&["run"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(
        p.query::<String>("SELECT source_url FROM pipeline"),
        format!("{}/ss/events?from={{from}}&to={{to}}", sim.base())
    );
    assert_eq!(p.query::<i64>("SELECT reference FROM pipeline"), reference);
}
