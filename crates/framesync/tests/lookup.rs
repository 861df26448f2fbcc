//! Lookups by query against the simulator's `/rs/query` (shaped like ClickHouse's `FORMAT
//! JSON`): crash recovery with "present" read at a JSON pointer and with batched lookups,
//! `verify` with a batched lookup, and `check` refusing a lookup that cannot say absent. The
//! UIDs are hostile: quotes, a backslash, `%`, a comma and a newline in each.

mod common;

use common::*;

const HOSTILE: [&str; 2] = ["--uid-style", "hostile"];

/// One UID at a time, "present" read from the count at /data/0/n ("1", quoted as ClickHouse
/// quotes 64-bit integers).
fn pointer_lookup(sim: &Sim) -> String {
    format!(
        "[sink.lookup]\nurl = \"{}/rs/query\"\npresent = \"/data/0/n\"\n[sink.lookup.query]\nuid = \"{{uid}}\"",
        sim.base()
    )
}

/// `batch_size` UIDs a request, hex-encoded and joined by commas; the answer lists the UIDs
/// present at /data/*/uid.
fn batched_lookup(sim: &Sim, batch_size: usize) -> String {
    format!(
        "[sink.lookup]\nurl = \"{}/rs/query\"\nbatch_size = {batch_size}\nfound = \"/data\"\nfound_uid = \"/uid\"\n[sink.lookup.batch_query]\nuids_hex = \"{{uids:hex}}\"",
        sim.base()
    )
}

/// The same, as a POST of a JSON body.
fn posted_lookup(sim: &Sim, batch_size: usize) -> String {
    format!(
        "[sink.lookup]\nurl = \"{}/rs/query\"\nmethod = \"POST\"\nbody = '{{\"uids\": {{uids:json}}}}'\nbatch_size = {batch_size}\nfound = \"/data\"\nfound_uid = \"/uid\"",
        sim.base()
    )
}

/// Sink keys, then the lookup's tables (the sink's own url first: the lookup's `url` is its own).
fn sink_with(sim: &Sim, keys: &str, lookup: &str) -> String {
    format!("url = \"{}/rs/ingest\"\n{keys}\n{lookup}", sim.base())
}

fn lookups_asked(sim: &Sim) -> u64 {
    sim.requests("rs_query")
}

/// A run killed after the RS acknowledged 25 records, 20 of them recorded (groups of 10), at
/// an RS that ignores keys; the next runs recover with `lookup`. Returns the lookup requests
/// of the recovery. One request in flight (`sink.ordered`), so the RS holds exactly the 25
/// when the run dies and the counts are exact.
fn crash_and_recover(seed: &str, lookup: fn(&Sim) -> String) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let flags = [&["--records-per-minute", "40", "--rs-ignore-keys", "--seed", seed][..], &HOSTILE].concat();
    let sim = Sim::start(dir.path(), &flags);
    let sink = sink_with(&sim, "ack_group = 10\nack_group_time = \"1h\"\nordered = true", &lookup(&sim));
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", &sink, "max_frames = 1");
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "after-ack:25").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed: {}", stderr(&killed));
    assert_eq!(sim.stored(), 25, "the RS stored what it acknowledged");
    assert_eq!(lookups_asked(&sim), 0, "nothing was unknown before the crash");
    p.run_until_complete(5);
    let check = sim.check(p.reference, p.complete_until());
    for key in ["missing", "extra", "duplicates"] {
        assert_eq!(check[key], 0, "{key} in {check:#}");
    }
    lookups_asked(&sim)
}

#[test]
fn a_crash_between_send_and_ack_recovered_by_a_pointer_lookup_delivers_each_record_once() {
    let asked = crash_and_recover("61", pointer_lookup);
    // One probe, then one request for each of the 20 records whose fate was unknown.
    assert_eq!(asked, 21);
}

#[test]
fn a_crash_between_send_and_ack_recovered_by_a_batched_lookup_delivers_each_record_once() {
    let asked = crash_and_recover("62", |sim| batched_lookup(sim, 16));
    // One probe (two UIDs that cannot exist), then the 20 unknown records 16 a request.
    assert_eq!(asked, 3);
}

#[test]
fn verify_with_a_batched_lookup_reports_what_the_rs_lost_and_repair_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &[&["--records-per-minute", "5", "--seed", "63"][..], &HOSTILE].concat());
    let reference = aligned_minutes_ago(10);
    let p = Pipeline::new(&sim, dir, reference, "", &sink_with(&sim, "", &posted_lookup(&sim, 100)), "");
    p.run_until_complete(3);
    let until = p.complete_until();
    rs_loses_records(&sim, 3);
    let before = lookups_asked(&sim);
    let args = ["verify", "--from", &rfc3339(reference), "--to", &rfc3339(until)];
    let out = p.framesync(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("3 records missing") && text.contains("delivered records the RS does not have"), "{text}");
    assert!(text.contains("\\n;"), "the hostile UIDs are named: {text}");
    let frames = ((until - reference) / MINUTE) as u64;
    assert_eq!(lookups_asked(&sim) - before, 1 + frames, "a probe, then one request a frame: {text}");
    let mut repair = args.to_vec();
    repair.push("--repair");
    let out = p.framesync(&repair);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("the RS now holds all 3 records sent again"), "{text}");
    p.assert_exactly_once(&sim);
}

/// `check` with the simulator's lookup as configured, after `faults` (a /control/faults query).
fn check_lookup(lookup: fn(&Sim) -> String, faults: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "5"]);
    if !faults.is_empty() {
        sim.faults(faults);
    }
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(10), "", &sink_with(&sim, "", &lookup(&sim)), "");
    let out = p.framesync(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    (out.status.code(), text)
}

#[test]
fn check_takes_a_lookup_by_query_that_says_absent_for_uids_that_cannot_exist() {
    for (name, lookup) in [
        ("pointer", pointer_lookup as fn(&Sim) -> String),
        ("batched", |sim| batched_lookup(sim, 50)),
        ("posted", |sim| posted_lookup(sim, 50)),
    ] {
        let (code, text) = check_lookup(lookup, "");
        assert_eq!(code, Some(0), "{name}: {text}");
        assert!(text.contains("lookup: ok, absent for [\"framesync-check-"), "{name}: {text}");
        let asked = if name == "pointer" { 1 } else { 2 };
        let line = text.lines().find(|l| l.starts_with("lookup:")).unwrap();
        assert_eq!(line.matches("framesync-check-").count(), asked, "{name}: {line}");
    }
}

#[test]
fn check_refuses_a_lookup_by_query_that_says_present_for_uids_that_cannot_exist() {
    for (name, lookup) in [
        ("pointer", pointer_lookup as fn(&Sim) -> String),
        ("batched", |sim| batched_lookup(sim, 50)),
        ("posted", |sim| posted_lookup(sim, 50)),
    ] {
        let (code, text) = check_lookup(lookup, "rs_lookup_lies=1");
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains("lookup: FAILED") && text.contains("cannot say absent"), "{name}: {text}");
    }
}

#[test]
fn check_refuses_a_lookup_whose_answer_lacks_its_pointer() {
    for (name, lookup) in
        [("pointer", pointer_lookup as fn(&Sim) -> String), ("batched", |sim| batched_lookup(sim, 50))]
    {
        let (code, text) = check_lookup(lookup, "rs_lookup_unreadable=1");
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains("lookup: FAILED") && text.contains("is not believed"), "{name}: {text}");
    }
}

/// A run whose batched lookup lies turns lookups off and says why, as with `lookup_url`.
#[test]
fn a_run_turns_off_a_batched_lookup_that_says_present_for_uids_that_cannot_exist() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "40", "--seed", "64"]);
    let sink = sink_with(&sim, "ack_group = 10\nack_group_time = \"1h\"", &batched_lookup(&sim, 16));
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", &sink, "max_frames = 1");
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "after-ack:25").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed: {}", stderr(&killed));
    sim.faults("rs_lookup_lies=1");
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sink.lookup answered \"present\""), "{}", stderr(&out));
    assert_eq!(lookups_asked(&sim), 1, "only the probe: nothing is taken from a lookup that cannot say absent");
    sim.faults("rs_lookup_lies=0");
    p.run_until_complete(5);
    p.assert_exactly_once(&sim); // the RS honors keys: the records sent again are stored once
}
