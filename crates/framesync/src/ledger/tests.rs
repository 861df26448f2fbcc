use rusqlite::Connection;

use super::open::MIGRATIONS;
use super::testing::{frame, ledger};
use super::*;
use crate::identity::{Identity, Recorded};
use crate::model::{DeadLetter, FrameState, OpenFrame, PullFailure, StagedRecord};

fn rec(uid: &str) -> StagedRecord {
    StagedRecord { uid: uid.into(), ts_ms: None, body: format!("{{\"id\":\"{uid}\"}}") }
}

fn stage(l: &mut Ledger, start: i64, uids: &[&str]) {
    let records: Vec<_> = uids.iter().map(|u| rec(u)).collect();
    l.stage_frame(frame(start), &records, &[], 0).unwrap();
}

fn spans(l: &Ledger) -> Vec<(i64, i64)> {
    l.delivered_spans(i64::MIN, i64::MAX).unwrap()
}

fn staged_count(l: &Ledger, start: i64) -> i64 {
    l.conn.query_row("SELECT COUNT(*) FROM staged WHERE frame = ?1", [start], |r| r.get(0)).unwrap()
}

#[test]
fn a_new_ledger_is_migrated_and_in_wal_mode() {
    let (_dir, l) = ledger();
    let v: i64 = l.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
    let mode: String = l.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn reopening_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let mut l = Ledger::open(&path, Synchronous::Normal).unwrap();
    stage(&mut l, 0, &["a"]);
    drop(l);
    let l = Ledger::open(&path, Synchronous::Full).unwrap();
    assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
}

#[test]
fn a_frame_is_delivered_only_when_every_record_is_acknowledged_or_dead() {
    let (_dir, mut l) = ledger();
    stage(&mut l, 60, &["a", "b", "c"]);
    l.mark_sending(60, 2, &[], 0).unwrap();
    l.acknowledge(60, &["a"], 0).unwrap();
    assert!(!l.complete_frame(frame(60), None, 0).unwrap());
    let dead = DeadLetter {
        uid: "b".into(),
        reason: crate::delivery::DeadReason::Rejected,
        status: Some(400),
        response: Some("bad".into()),
        detail: "HTTP 400".into(),
        body: "{}".into(),
        key: None,
        attempts: 0,
    };
    l.dead_letter(60, &dead, 0).unwrap();
    let (pending, sent_through) = l.pending(60).unwrap();
    assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(sent_through, 2);
    assert!(!l.complete_frame(frame(60), None, 0).unwrap());
    l.acknowledge(60, &["c"], 0).unwrap();
    assert!(l.complete_frame(frame(60), None, 0).unwrap());
    assert_eq!(l.frame_state(60).unwrap(), Some(FrameState::Delivered));
    assert_eq!(staged_count(&l, 60), 0, "a delivered frame has no staged records");
    assert_eq!(spans(&l), vec![(60, 120)]);
}

#[test]
fn a_frame_staged_page_by_page_is_pulled_only_when_committed() {
    let (_dir, l) = ledger();
    let mut staging = l.staging(frame(0)).unwrap();
    staging.add(vec![rec("a"), rec("b")], &[]).unwrap();
    drop(staging);
    assert_eq!(l.frame_state(0).unwrap(), None, "a staging dropped uncommitted leaves no trace");
    assert_eq!(staged_count(&l, 0), 0);

    let mut staging = l.staging(frame(0)).unwrap();
    staging.add(vec![rec("a"), rec("b"), rec("a")], &[]).unwrap();
    assert_eq!(
        Connection::open(l.path())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM staged", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        0,
        "invisible before the commit"
    );
    staging.add(vec![rec("b"), rec("c")], &[]).unwrap();
    assert_eq!((staging.staged(), staging.duplicates()), (3, 2));
    staging.commit_pull(0, None, 0).unwrap();
    assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
    let (pending, _) = l.pending(0).unwrap();
    assert_eq!(pending.iter().map(|p| (p.seq, p.uid.as_str())).collect::<Vec<_>>(), [(0, "a"), (1, "b"), (2, "c")]);
    let (records, duplicates): (i64, i64) =
        l.conn.query_row("SELECT records, duplicates FROM frames", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((records, duplicates), (3, 2), "a repeat, within a page or across pages, is kept once and counted");
}

#[test]
fn a_frame_larger_than_the_spill_buffer_is_staged_whole_and_once() {
    let (_dir, l) = ledger();
    let body = "x".repeat(1000);
    let page = |from: usize| -> Vec<StagedRecord> {
        (from..from + 5000)
            .map(|i| StagedRecord { uid: format!("u{i}"), ts_ms: Some(i as i64), body: body.clone() })
            .collect()
    };
    let mut staging = l.staging(frame(0)).unwrap();
    // 20,000 records of 1 kB (beyond the 8 MiB kept in memory), pages overlapping by half
    // but the last: 15,000 distinct UIDs, repeats on both sides of the spill.
    for from in [0, 2500, 5000, 10000] {
        staging.add(page(from), &[]).unwrap();
    }
    assert_eq!((staging.staged(), staging.duplicates()), (15_000, 5_000));
    assert!(staging.contains("u0").unwrap() && staging.contains("u14999").unwrap());
    assert!(!staging.contains("u15000").unwrap());
    staging.commit_pull(0, None, 0).unwrap();
    let (pending, _) = l.pending_after(0, -1, 20_000).unwrap();
    assert_eq!(pending.len(), 15_000);
    assert!(pending.iter().enumerate().all(|(i, p)| p.seq == i as i64 && p.uid == format!("u{i}")));
}

#[test]
fn staging_takes_no_write_lock_until_it_commits() {
    let (_dir, l) = ledger();
    let other = Ledger::open_with(l.path(), Synchronous::Normal, Duration::ZERO).unwrap();
    let mut staging = l.staging(frame(0)).unwrap();
    let body = "y".repeat(1000);
    let many: Vec<StagedRecord> =
        (0..10_000).map(|i| StagedRecord { uid: format!("u{i}"), ts_ms: None, body: body.clone() }).collect();
    staging.add(many, &[]).unwrap();
    // Another process writes while the pages arrive, without waiting (busy_timeout 0).
    other.conn.execute_batch("BEGIN IMMEDIATE; UPDATE pipeline SET delay = delay; COMMIT").unwrap();
    staging.commit_pull(0, None, 0).unwrap();
    assert_eq!(staged_count(&l, 0), 10_000);
}

#[test]
fn many_records_are_staged_and_acknowledged_in_multi_row_statements() {
    let (_dir, mut l) = ledger();
    let uids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    stage(&mut l, 0, &refs);
    assert_eq!(staged_count(&l, 0), 101);
    l.acknowledge(0, &refs[..70], 0).unwrap();
    l.acknowledge(0, &refs[60..], 0).unwrap();
    assert_eq!(l.conn.query_row("SELECT pushed FROM frames", [], |r| r.get::<_, i64>(0)).unwrap(), 101);
    assert!(l.complete_frame(frame(0), None, 0).unwrap());
}

#[test]
fn pending_records_are_read_a_window_at_a_time() {
    let (_dir, mut l) = ledger();
    stage(&mut l, 0, &["a", "b", "c", "d"]);
    l.acknowledge(0, &["b"], 0).unwrap();
    let window = |after| l.pending_after(0, after, 2).unwrap().0.into_iter().map(|p| p.uid).collect::<Vec<_>>();
    assert_eq!(window(-1), ["a", "c"]);
    assert_eq!(window(2), ["d"]);
    assert!(window(3).is_empty());
}

#[test]
fn the_last_acknowledgements_and_the_delivery_commit_together() {
    let (_dir, mut l) = ledger();
    stage(&mut l, 0, &["a", "b"]);
    assert!(!l.acknowledge_and_complete(frame(0), &["a"], None, 0).unwrap(), "b is pending");
    assert_eq!(l.pending(0).unwrap().0.len(), 1, "a is recorded all the same");
    assert!(l.acknowledge_and_complete(frame(0), &["b"], None, 0).unwrap());
    assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
    assert_eq!(staged_count(&l, 0), 0);
}

#[test]
fn delivered_spans_merge_with_both_neighbours() {
    let (_dir, mut l) = ledger();
    for start in [0, 120, 60, 240] {
        stage(&mut l, start, &[]);
        assert!(l.complete_frame(frame(start), None, 0).unwrap());
    }
    assert_eq!(spans(&l), vec![(0, 180), (240, 300)]);
    stage(&mut l, 180, &[]);
    l.complete_frame(frame(180), None, 0).unwrap();
    assert_eq!(spans(&l), vec![(0, 300)]);
}

#[test]
fn a_delivered_frame_is_never_staged_again() {
    let (_dir, mut l) = ledger();
    stage(&mut l, 0, &["a"]);
    l.acknowledge(0, &["a"], 0).unwrap();
    l.complete_frame(frame(0), None, 0).unwrap();
    let e = l.stage_frame(frame(0), &[rec("a")], &[], 0).unwrap_err();
    assert!(e.to_string().contains("already delivered"), "{e}");
}

#[test]
fn an_acknowledged_uid_is_not_pending_even_when_pulled_again_in_another_frame() {
    let (_dir, mut l) = ledger();
    stage(&mut l, 0, &["a"]);
    l.acknowledge(0, &["a"], 0).unwrap();
    stage(&mut l, 60, &["a", "b"]);
    let (pending, _) = l.pending(60).unwrap();
    assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn a_failed_pull_counts_attempts_and_a_later_pull_clears_them() {
    let (_dir, mut l) = ledger();
    l.pull_failed(frame(0), "HTTP 400", PullFailure::Refused, 100, 0).unwrap();
    let refused =
        OpenFrame { start: 0, state: FrameState::Missing, next_attempt: Some(100), attempts: 1, refused: true };
    assert_eq!(l.open_frames().unwrap(), vec![refused]);
    l.pull_failed(frame(0), "HTTP 500", PullFailure::Passing, 200, 0).unwrap();
    assert_eq!(l.attempts(0).unwrap(), 2);
    assert_eq!(
        l.open_frames().unwrap(),
        vec![OpenFrame { start: 0, state: FrameState::Missing, next_attempt: Some(200), attempts: 2, refused: false }],
        "the last failure says why"
    );
    stage(&mut l, 0, &["a"]);
    assert_eq!(l.attempts(0).unwrap(), 0);
    assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
}

fn identity() -> Identity {
    Identity {
        source_url: "http://a/events?from={from}&to={to}&key=${SS_KEY}".into(),
        source_time_format: "rfc3339".into(),
        source_records: "/items".into(),
        source_uid: "/id".into(),
        frames_start: 3600,
        frames_size: 60,
        sink_url: "http://rs/ingest".into(),
    }
}

fn pipeline_row(l: &Ledger) -> (i64, i64, i64) {
    l.conn
        .query_row("SELECT frame_size, reference, delay FROM pipeline", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
}

fn keys(adoption: &Adoption) -> Vec<&str> {
    adoption.differences.iter().map(|d| d.key).collect()
}

#[test]
fn the_first_command_that_writes_records_its_identity_and_another_is_refused() {
    let (_dir, mut l) = ledger();
    assert_eq!(l.identity().unwrap(), Recorded::Nothing);
    let first = l.adopt_identity(&identity(), 120, 10, Adopt::IfNone).unwrap();
    assert!(first.recorded && first.differences.is_empty(), "{first:?}");
    assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
    assert_eq!(pipeline_row(&l), (60, 3600, 120));

    let other = Identity { source_url: "http://b/events?from={from}&to={to}".into(), ..identity() };
    let refused = l.adopt_identity(&other, 120, 20, Adopt::IfNone).unwrap();
    assert!(!refused.recorded);
    assert_eq!(keys(&refused), ["source.url"]);
    assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()), "the ledger keeps its own");
}

#[test]
fn a_ledger_from_before_identities_records_the_first_writers_without_refusing() {
    let (_dir, mut l) = ledger();
    l.sync_pipeline(60, 0, 120, 0).unwrap();
    assert_eq!(l.identity().unwrap(), Recorded::FrameSize(60));
    let adoption = l.adopt_identity(&identity(), 60, 10, Adopt::IfNone).unwrap();
    assert!(adoption.recorded && adoption.differences.is_empty(), "{adoption:?}");
    assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
    assert_eq!(pipeline_row(&l), (60, 3600, 60), "the reference time is the config's");
}

#[test]
fn a_ledger_migrated_from_0003_keeps_its_pipeline_row_without_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let old = Connection::open(&path).unwrap();
    for sql in &MIGRATIONS[..3] {
        old.execute_batch(sql).unwrap();
    }
    old.pragma_update(None, "user_version", 3).unwrap();
    old.execute("INSERT INTO pipeline (id, frame_size, reference, delay, updated_at) VALUES (1, 300, 0, 60, 0)", [])
        .unwrap();
    drop(old);
    let l = Ledger::open(&path, Synchronous::Normal).unwrap();
    assert_eq!(l.identity().unwrap(), Recorded::FrameSize(300));
}

#[test]
fn a_ledger_migrated_from_0008_starts_its_dead_letters_total_from_what_its_frames_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let old = Connection::open(&path).unwrap();
    for sql in &MIGRATIONS[..8] {
        old.execute_batch(sql).unwrap();
    }
    old.pragma_update(None, "user_version", 8).unwrap();
    old.execute_batch(
        "INSERT INTO frames (start, end, state, dead, updated_at) VALUES (0, 60, 'delivered', 3, 0);
         INSERT INTO frames (start, end, state, dead, updated_at) VALUES (60, 120, 'delivered', 2, 0);",
    )
    .unwrap();
    drop(old);
    let l = Ledger::open(&path, Synchronous::Normal).unwrap();
    assert_eq!(l.metric_figures().unwrap().dead_letters_written, 5.0, "dropped ones stay counted in frames.dead");
}

#[test]
fn a_frame_size_change_is_refused_even_where_no_identity_is_recorded() {
    // Pins the frame-size check that 0004 folded into the identity: an older ledger knows
    // only its frame size, and frames of another size must still be refused.
    let (_dir, mut l) = ledger();
    l.sync_pipeline(300, 0, 120, 0).unwrap();
    for adopt in [Adopt::IfNone, Adopt::Always] {
        let adoption = l.adopt_identity(&identity(), 120, 10, adopt).unwrap();
        assert!(!adoption.recorded);
        assert_eq!(keys(&adoption), ["frames.size"]);
    }
    assert_eq!(l.identity().unwrap(), Recorded::FrameSize(300));
}

#[test]
fn accepting_records_the_configs_identity_but_never_another_frame_size() {
    let (_dir, mut l) = ledger();
    l.adopt_identity(&identity(), 120, 0, Adopt::IfNone).unwrap();
    let same = l.adopt_identity(&identity(), 120, 5, Adopt::Always).unwrap();
    assert!(!same.recorded && same.differences.is_empty(), "nothing to accept: {same:?}");

    let moved = Identity { sink_url: "http://rs2/ingest".into(), frames_start: 7200, ..identity() };
    let accepted = l.adopt_identity(&moved, 120, 10, Adopt::Always).unwrap();
    assert!(accepted.recorded);
    assert_eq!(keys(&accepted), ["frames.start", "sink.url"]);
    assert_eq!(l.identity().unwrap(), Recorded::Identity(moved.clone()));
    assert_eq!(pipeline_row(&l).1, 7200, "the views plan from the accepted reference time");
    let at: i64 = l.conn.query_row("SELECT identity_at FROM pipeline", [], |r| r.get(0)).unwrap();
    assert_eq!(at, 10);

    let resized = Identity { frames_size: 300, source_uid: "hash".into(), ..moved.clone() };
    let refused = l.adopt_identity(&resized, 120, 20, Adopt::Always).unwrap();
    assert!(!refused.recorded);
    assert_eq!(keys(&refused), ["source.uid", "frames.size"]);
    assert_eq!(l.identity().unwrap(), Recorded::Identity(moved));
}

#[test]
fn syncing_the_settings_changes_only_the_delay_of_a_ledger_with_an_identity() {
    let (_dir, mut l) = ledger();
    l.adopt_identity(&identity(), 120, 0, Adopt::IfNone).unwrap();
    l.sync_pipeline(300, 0, 30, 5).unwrap();
    assert_eq!(pipeline_row(&l), (60, 3600, 30));
    assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    std::fs::write(&path, "this is not a database, it is a text file with enough bytes to look like one").unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = Ledger::open(&path, Synchronous::Normal).err().unwrap();
    assert!(e.downcast_ref::<Unusable>().is_some(), "{e:#}");
    assert!(format!("{e:#}").contains("not a SQLite database"), "{e:#}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_ledger_from_a_newer_framesync_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    drop(Ledger::open(&path, Synchronous::Normal).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let e = Ledger::open(&path, Synchronous::Normal).err().unwrap();
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE orders (id INTEGER)").unwrap();
    let e = Ledger::open(&path, Synchronous::Normal).err().unwrap();
    assert!(e.to_string().contains("not a framesync ledger"), "{e}");
}

#[test]
fn the_operator_views_answer_on_a_fresh_ledger() {
    let (_dir, mut l) = ledger();
    let now = chrono::Utc::now().timestamp();
    l.sync_pipeline(60, now - 3600, 120, now).unwrap();
    let frames: i64 = l.conn.query_row("SELECT SUM(frames) FROM missing_ranges", [], |r| r.get(0)).unwrap();
    assert!((55..=60).contains(&frames), "{frames}");
    let lag: i64 = l.conn.query_row("SELECT lag_seconds FROM lag", [], |r| r.get(0)).unwrap();
    assert!(lag >= 3600, "{lag}");
    for view in ["frame_summary", "failing_frames", "recent_runs"] {
        l.conn.prepare(&format!("SELECT * FROM {view}")).unwrap();
    }
}
