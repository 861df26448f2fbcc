//! The group commit of acknowledgements (`sink.ack_group`, `sink.ack_group_time`): a crash
//! loses at most one group's acknowledgements, never a record; the group's records are sent
//! again with the same keys, or looked up first where the RS has a lookup.

mod common;

use common::*;

/// One frame of 40 records: a run killed when the RS has acknowledged its 25th record, then
/// runs until nothing is missing. Returns the duplicates the RS (which ignores keys) stored.
/// `in_flight` is `sink.concurrency`; with 1 (`sink.ordered`) the RS has stored exactly the 25
/// records when the run dies, and what the group held is all a crash can cost.
fn duplicates_after_a_kill_at_the_25th_ack(sink_extra: &str, lookup: bool) -> i64 {
    duplicates_after_a_kill_at_the_25th_ack_with(&format!("{sink_extra}\nordered = true"), lookup, 25)
}

fn duplicates_after_a_kill_at_the_25th_ack_with(sink_extra: &str, lookup: bool, stored: i64) -> i64 {
    let (at_the_kill, duplicates) = stored_and_duplicates_after_a_kill_at_the_25th_ack(sink_extra, lookup);
    assert_eq!(at_the_kill, stored, "the RS stored what it acknowledged, and what was in flight");
    duplicates
}

/// What the RS held when the run was killed at its 25th acknowledgement, and the duplicates once
/// later runs delivered everything.
fn stored_and_duplicates_after_a_kill_at_the_25th_ack(sink_extra: &str, lookup: bool) -> (i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "40", "--rs-ignore-keys", "--seed", "21"]);
    let mut sink = sink_extra.to_string();
    if lookup {
        sink += &format!("\nlookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
    }
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", &sink, "max_frames = 1");
    let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", "after-ack:25").output().unwrap();
    assert_eq!(killed.status.code(), None, "killed: {}", stderr(&killed));
    let at_the_kill = sim.stored();
    p.run_until_complete(5);
    let check = sim.check(p.reference, p.complete_until());
    assert_eq!(check["missing"], 0, "{check:#}");
    assert_eq!(check["extra"], 0, "{check:#}");
    (at_the_kill, check["duplicates"].as_i64().unwrap())
}

#[test]
fn a_crash_re_sends_at_most_the_group_it_had_not_recorded() {
    // Groups of 10: 20 records recorded, the 21st to the 25th acknowledged but not recorded.
    let duplicates = duplicates_after_a_kill_at_the_25th_ack("ack_group = 10\nack_group_time = \"1h\"", false);
    assert_eq!(duplicates, 5);
}

#[test]
fn a_group_of_one_records_every_acknowledgement_on_its_own() {
    assert_eq!(duplicates_after_a_kill_at_the_25th_ack("ack_group = 1", false), 1);
}

#[test]
fn a_group_older_than_ack_group_time_is_recorded_before_the_next_request() {
    assert_eq!(duplicates_after_a_kill_at_the_25th_ack("ack_group = 1000\nack_group_time = \"0s\"", false), 1);
}

#[test]
fn with_a_lookup_the_records_of_a_lost_group_are_looked_up_not_sent_again() {
    let duplicates = duplicates_after_a_kill_at_the_25th_ack("ack_group = 10\nack_group_time = \"1h\"", true);
    assert_eq!(duplicates, 0);
}

#[test]
fn a_crash_with_requests_in_flight_re_sends_at_most_them_and_one_group() {
    // 16 in flight: groups of 10 are recorded as the answers are acted on, so at the kill at the
    // 25th ack the 21st to the 25th are acknowledged but not recorded, and the 26th to at most
    // the 40th (16 answers not acted on) were started; the RS may have stored any of those.
    // Everything stored past the 20 recorded goes again: under the bound of one short group (9)
    // and the requests in flight (16).
    let sink = "ack_group = 10\nack_group_time = \"1h\"\nconcurrency = 16\nadaptive = false";
    let (stored, duplicates) = stored_and_duplicates_after_a_kill_at_the_25th_ack(sink, false);
    assert!((25..=40).contains(&stored), "{stored} stored at the kill");
    assert_eq!(duplicates, stored - 20, "what the RS stored past the recorded groups went again");
    assert!(duplicates <= 9 + 16);
    let (_, duplicates) = stored_and_duplicates_after_a_kill_at_the_25th_ack(sink, true);
    assert_eq!(duplicates, 0, "looked up, not sent again");
}
