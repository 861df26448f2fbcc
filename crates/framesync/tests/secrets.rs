//! Secrets from the environment never leave framesync: not in its log, its output, nor the
//! ledger — also when both servers fail and every message names the URL that holds them.

mod common;

use std::process::{Command, Output};

use common::*;

const SS_KEY: &str = "ss-k3y-8842";
const RS_KEY: &str = "rs-t0ken-5531";

#[test]
fn secrets_in_both_urls_reach_no_log_no_output_and_no_ledger_when_both_servers_fail() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--seed", "9"]);
    let reference = aligned_minutes_ago(5);
    let p = Pipeline::new(&sim, dir, reference, "", "lookup_url = \"{base}/rs/ingest/{uid}?token=${RS_KEY}\"", "");
    let config = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("&to={to}\"", "&to={to}&key=${SS_KEY}\"")
        .replace("/rs/ingest\"", "/rs/ingest?token=${RS_KEY}\"")
        .replace("{base}", &sim.base());
    std::fs::write(&p.config, config).unwrap();
    let framesync = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_framesync"))
            .arg("--config")
            .arg(&p.config)
            .args(args)
            .env("RUST_LOG", "debug")
            .env("SS_KEY", SS_KEY)
            .env("RS_KEY", RS_KEY)
            .output()
            .unwrap()
    };
    let mut outputs = Vec::new();

    // Every SS page fails: the pulls' errors name the SS's URL, key and all.
    sim.faults("ss_5xx_rate=1");
    outputs.push(framesync(&["run"]));
    assert_eq!(outputs[0].status.code(), Some(1), "{}", text(&outputs[0]));
    // The SS answers, the RS fails every request: the pushes' errors name the RS's URL.
    sim.faults("ss_5xx_rate=0&rs_5xx_rate=1");
    outputs.push(framesync(&["run"]));
    assert_eq!(outputs[1].status.code(), Some(1), "{}", text(&outputs[1]));
    let (from, to) = (rfc3339(reference), rfc3339(reference + 180));
    for args in [&["status"][..], &["status", "--json"], &["check"], &["verify", "--from", &from, "--to", &to]] {
        outputs.push(framesync(args));
    }

    let all: String = outputs.iter().map(text).collect();
    assert!(all.contains("key=***") && all.contains("token=***"), "the URLs were in the messages:\n{all}");
    for secret in [SS_KEY, RS_KEY] {
        assert!(!all.contains(secret), "a message holds {secret}:\n{all}");
        p.assert_not_in_ledger(secret);
    }
}
