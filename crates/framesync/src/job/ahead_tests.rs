//! Reading ahead against an SS and an RS that are shared with another thread: the next frame
//! is read while one is pushed, and what it brings is staged as a pull would have staged it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::tests::{FakeClock, T0, World, config};
use super::*;
use crate::delivery::Key;
use crate::model::StagedRecord;
use crate::plan::Scope;
use crate::sink::{Outgoing, Verdict};
use crate::source::{Page, Pages, PullError};

/// An SS another thread can read: fixed records per frame, every fetch counted, and a signal
/// when a frame's fetch begins. Frames in `failing` answer 500.
#[derive(Default)]
struct SharedSource {
    frames: HashMap<Epoch, Vec<&'static str>>,
    failing: Vec<Epoch>,
    fetched: Mutex<Vec<Epoch>>,
    begun: Condvar,
}

impl SharedSource {
    /// Waits (at most `wait`) until the frame at `start` has begun to be fetched.
    fn wait_for(&self, start: Epoch, wait: Duration) -> bool {
        let fetched = self.fetched.lock().unwrap();
        let (fetched, _) = self.begun.wait_timeout_while(fetched, wait, |f| !f.contains(&start)).unwrap();
        fetched.contains(&start)
    }
}

impl Source for SharedSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        self.fetched.lock().unwrap().push(frame.start);
        self.begun.notify_all();
        if self.failing.contains(&frame.start) {
            return Box::new(std::iter::once(Err(PullError::Failed("HTTP 500".into()))));
        }
        let records = self.frames.get(&frame.start).cloned().unwrap_or_default();
        let records = records
            .iter()
            .map(|uid| StagedRecord { uid: uid.to_string(), ts_ms: None, body: format!(r#"{{"id":"{uid}"}}"#) })
            .collect();
        let page = Page { records, ..Page::default() };
        Box::new(std::iter::once(Ok(page)))
    }
}

/// An RS that takes every record and, on the first record of the first frame, waits until the
/// SS has begun the next frame: it returns in time only when that frame is read ahead.
struct WaitingSink<'s> {
    source: &'s SharedSource,
    next: Epoch,
    overlapped: AtomicBool,
    waited: AtomicBool,
    stored: Mutex<Vec<String>>,
}

impl<'s> WaitingSink<'s> {
    /// Waits, at its first send, for the frame at `next` to begin.
    fn new(source: &'s SharedSource, next: Epoch) -> Self {
        let (overlapped, waited, stored) = (AtomicBool::new(false), AtomicBool::new(false), Mutex::new(vec![]));
        WaitingSink { source, next, overlapped, waited, stored }
    }
}

impl Sink for WaitingSink<'_> {
    fn batch_size(&self) -> usize {
        1
    }
    fn send(&self, records: &[Outgoing], _key: &Key) -> Verdict {
        if !self.waited.swap(true, Ordering::SeqCst) {
            let seen = self.source.wait_for(self.next, Duration::from_secs(10));
            self.overlapped.store(seen, Ordering::SeqCst);
        }
        self.stored.lock().unwrap().extend(records.iter().map(|r| r.uid.clone()));
        Verdict::Acknowledged
    }
    fn has_lookup(&self) -> bool {
        false
    }
    fn lookup(&self, _uid: &str) -> Result<bool, String> {
        Err("no lookup".into())
    }
}

/// One request in flight (`sink.ordered`), so the RS stores the records in the order they were
/// formed and the order can be asserted.
fn one_at_a_time() -> crate::config::Config {
    config("ordered = true")
}

fn run(w: &mut World, source: &SharedSource, sink: &WaitingSink, now: Epoch) -> Outcome {
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, now).unwrap();
    let clock = FakeClock(now);
    Job::new(&w.config, &mut w.ledger, source, sink, &clock).with_read_ahead(source).execute(&plan, true).unwrap()
}

#[test]
fn the_next_frame_is_read_while_one_is_pushed_and_staged_as_a_pull_would() {
    let mut w = World::new(one_at_a_time());
    let src = SharedSource {
        frames: [(T0, vec!["a", "b"]), (T0 + 60, vec!["c"]), (T0 + 120, vec!["d", "e"])].into_iter().collect(),
        ..SharedSource::default()
    };
    let sink = WaitingSink::new(&src, T0 + 60);
    let outcome = run(&mut w, &src, &sink, T0 + 240);
    assert!(sink.overlapped.load(Ordering::SeqCst), "the second frame was fetched while the first was pushed");
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(outcome.figures.frames_delivered, 3);
    assert_eq!(*sink.stored.lock().unwrap(), ["a", "b", "c", "d", "e"], "in the plan's order");
    assert_eq!(*src.fetched.lock().unwrap(), [T0, T0 + 60, T0 + 120], "each frame fetched once");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 5);
}

#[test]
fn a_frame_read_ahead_that_failed_is_recorded_as_its_pull_would_be_and_the_rest_go_on() {
    let mut w = World::new(one_at_a_time());
    let src = SharedSource {
        frames: [(T0, vec!["a"]), (T0 + 120, vec!["c"])].into_iter().collect(),
        failing: vec![T0 + 60],
        ..SharedSource::default()
    };
    let sink = WaitingSink::new(&src, T0 + 60);
    let outcome = run(&mut w, &src, &sink, T0 + 240);
    assert!(sink.overlapped.load(Ordering::SeqCst));
    assert_eq!(outcome.exit_code(), 1);
    assert!(outcome.failures.iter().any(|f| f.contains("HTTP 500")), "{:?}", outcome.failures);
    assert_eq!(w.state(T0 + 60), Some(crate::model::FrameState::Missing), "it waits for a later run");
    assert_eq!(*sink.stored.lock().unwrap(), ["a", "c"]);
}

#[test]
fn a_frame_past_the_memory_bound_is_dropped_from_memory_and_pulled_the_usual_way() {
    let src = SharedSource { frames: [(T0, vec!["a", "b"])].into_iter().collect(), ..SharedSource::default() };
    let frame = config("").frames.size.frame_at(T0);
    assert!(crate::fetch::fetch_pages(&src, frame, 16, || true).is_none(), "two records of 11 bytes each");
    assert!(crate::fetch::fetch_pages(&src, frame, 1 << 10, || true).is_some());
}

/// An SS whose answers block until `gate` fetches are in flight together (or a few seconds
/// pass): every fetch beyond the first `gate` is answered at once. It keeps the most fetches in
/// flight at once and the order they began in. Frames in `busy` answer 429.
struct GatedSource {
    frames: Vec<Epoch>,
    busy: Vec<Epoch>,
    gate: usize,
    state: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Default)]
struct Gate {
    in_flight: usize,
    most: usize,
    fetched: Vec<Epoch>,
}

impl GatedSource {
    fn new(frames: usize, gate: usize) -> Self {
        let frames = (0..frames as i64).map(|i| T0 + 60 * i).collect();
        GatedSource { frames, busy: vec![], gate, state: Mutex::default(), changed: Condvar::new() }
    }

    fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most
    }

    fn fetched(&self) -> Vec<Epoch> {
        self.state.lock().unwrap().fetched.clone()
    }
}

impl Source for GatedSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        let mut state = self.state.lock().unwrap();
        state.in_flight += 1;
        state.most = state.most.max(state.in_flight);
        state.fetched.push(frame.start);
        self.changed.notify_all();
        let wait = Duration::from_secs(5);
        let (mut state, _) = self.changed.wait_timeout_while(state, wait, |s| s.most < self.gate).unwrap();
        state.in_flight -= 1;
        if self.busy.contains(&frame.start) {
            let error = PullError::Busy { message: "HTTP 429".into(), retry_after: None };
            return Box::new(std::iter::once(Err(error)));
        }
        let uid = format!("r{}", (frame.start - T0) / 60);
        let record = StagedRecord { body: format!(r#"{{"id":"{uid}"}}"#), uid, ts_ms: None };
        let records = if self.frames.contains(&frame.start) { vec![record] } else { vec![] };
        Box::new(std::iter::once(Ok(Page { records, ..Page::default() })))
    }
}

/// An RS that takes every record, in the order they come.
#[derive(Default)]
struct TakingSink {
    stored: Mutex<Vec<String>>,
}

impl Sink for TakingSink {
    fn batch_size(&self) -> usize {
        1
    }
    fn send(&self, records: &[Outgoing], _key: &Key) -> Verdict {
        self.stored.lock().unwrap().extend(records.iter().map(|r| r.uid.clone()));
        Verdict::Acknowledged
    }
    fn has_lookup(&self) -> bool {
        false
    }
    fn lookup(&self, _uid: &str) -> Result<bool, String> {
        Err("no lookup".into())
    }
}

/// One request in flight to the RS, `concurrency` frames read at once from the SS.
fn reading(concurrency: usize) -> crate::config::Config {
    let mut config = one_at_a_time();
    config.source.concurrency = concurrency;
    config
}

/// The records the plan's pull steps would deliver, in the plan's order.
fn in_plan_order(plan: &crate::plan::Plan) -> Vec<String> {
    plan.steps.iter().map(|step| format!("r{}", (step.start() - T0) / 60)).collect()
}

fn run_gated(w: &mut World, src: &GatedSource, sink: &TakingSink, scope: Scope) -> (Outcome, Vec<String>) {
    let now = T0 + 60 * 7;
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, scope, now).unwrap();
    let clock = FakeClock(now);
    let job = Job::new(&w.config, &mut w.ledger, src, sink, &clock).with_read_ahead(src);
    (job.execute(&plan, scope == Scope::Run).unwrap(), in_plan_order(&plan))
}

#[test]
fn with_source_concurrency_three_frames_are_fetched_at_once_and_staged_in_the_plans_order() {
    let mut w = World::new(reading(3));
    let (src, sink) = (GatedSource::new(6, 3), TakingSink::default());
    let (outcome, expected) = run_gated(&mut w, &src, &sink, Scope::Run);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(src.most_in_flight(), 3, "three frames in flight at once, never more");
    assert_eq!(expected.len(), 6);
    assert_eq!(*sink.stored.lock().unwrap(), expected, "delivered in the plan's order");
    let mut fetched = src.fetched();
    fetched.sort();
    fetched.dedup();
    assert_eq!(fetched.len(), src.fetched().len(), "each frame fetched once");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 6);
}

#[test]
fn a_pull_alone_fetches_as_many_frames_at_once_as_source_concurrency_allows() {
    let mut w = World::new(reading(4));
    let (src, sink) = (GatedSource::new(6, 4), TakingSink::default());
    let (outcome, _) = run_gated(&mut w, &src, &sink, Scope::Pull);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(src.most_in_flight(), 4);
    assert_eq!(outcome.figures.frames_pulled, 6);
    assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 6, "every frame staged, none pushed");
    assert!(sink.stored.lock().unwrap().is_empty());
}

#[test]
fn with_source_concurrency_one_a_pull_alone_reads_one_frame_at_a_time() {
    let mut w = World::new(reading(1));
    let (src, sink) = (GatedSource::new(6, 1), TakingSink::default());
    let (outcome, _) = run_gated(&mut w, &src, &sink, Scope::Pull);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!((src.most_in_flight(), outcome.figures.frames_pulled), (1, 6));
}

/// The frames before the one the SS refused with a 429 are delivered, that one is recorded as
/// failed with the answer, and those after it are left missing, as a pull in turn would leave them.
#[test]
fn an_ss_asking_for_quiet_while_frames_are_read_at_once_stops_the_pulls_after_it() {
    let mut w = World::new(reading(4));
    let mut src = GatedSource::new(6, 4);
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, T0 + 60 * 7).unwrap();
    let order: Vec<Epoch> = plan.steps.iter().map(|s| s.start()).collect();
    src.busy = vec![order[1]];
    let sink = TakingSink::default();
    let (outcome, expected) = run_gated(&mut w, &src, &sink, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    assert!(
        outcome.failures.iter().any(|f| f.contains("HTTP 429") && f.contains("no more pulls")),
        "{:?}",
        outcome.failures
    );
    assert_eq!(*sink.stored.lock().unwrap(), expected[..1], "only the frame before it");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE last_error LIKE '%429%'"), 1);
    assert_eq!(w.count("SELECT COUNT(*) FROM frames"), 2, "nothing recorded after it");
    assert_eq!(w.state(order[2]), None, "no row: missing, with no attempt");
    assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0, "nothing read after it was staged");
}

#[test]
fn the_frames_read_at_once_share_one_memory_budget() {
    use super::ahead::{AHEAD_BUDGET, AHEAD_BYTES, share};
    assert_eq!(share(1), AHEAD_BYTES, "one frame ahead holds what it always held");
    assert_eq!(share(8), AHEAD_BYTES);
    assert_eq!(share(64), 1 << 20);
    for n in 1..=64 {
        assert!(n * share(n) <= AHEAD_BUDGET, "{n} frames at once");
    }
}

/// An SS whose clock is `skew` seconds off ours (negative: behind), and whose records reach it
/// only once its own clock passes their arrival: each frame has a record that arrives at its
/// start and one that arrives 55 s after its end — within `frames.delay` (1 m), after the frame
/// closed. A frame read before the SS's clock says it is closed lacks its late record, so a
/// frame staged too early loses that record for good (no re-checks here). Its `Date` header is
/// its clock; every fetch is kept, in the order they began.
struct SkewedSource {
    skew: i64,
    /// Our clock, as the run's fake clock says.
    now: std::sync::atomic::AtomicI64,
    fetched: Mutex<Vec<Epoch>>,
}

impl SkewedSource {
    fn new(skew: i64) -> Self {
        SkewedSource { skew, now: std::sync::atomic::AtomicI64::new(T0), fetched: Mutex::default() }
    }

    /// The frames fetched, in time order, each once.
    fn fetched_frames(&self) -> Vec<Epoch> {
        let mut fetched = self.fetched.lock().unwrap().clone();
        fetched.sort_unstable();
        fetched.dedup();
        fetched
    }
}

impl Source for SkewedSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        self.fetched.lock().unwrap().push(frame.start);
        let ss_now = self.now.load(Ordering::SeqCst) + self.skew;
        let n = (frame.start - T0) / 60;
        let records = [(format!("on-time-{n}"), frame.start), (format!("late-{n}"), frame.end() + 55)]
            .into_iter()
            .filter(|(_, arrives)| *arrives <= ss_now)
            .map(|(uid, _)| StagedRecord { body: format!(r#"{{"id":"{uid}"}}"#), uid, ts_ms: None })
            .collect();
        Box::new(std::iter::once(Ok(Page { records, server_date: Some(ss_now), ..Page::default() })))
    }
}

/// A `run` at `now`: reading ahead with `source.concurrency` as configured, or (`ahead` false)
/// pulling every frame in turn, as the reference of what a pull does.
fn run_skewed(w: &mut World, src: &SkewedSource, sink: &TakingSink, now: Epoch, ahead: bool) -> Outcome {
    src.now.store(now, Ordering::SeqCst);
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, now).unwrap();
    let clock = FakeClock(now);
    let job = Job::new(&w.config, &mut w.ledger, src, sink, &clock);
    let job = if ahead { job.with_read_ahead(src) } else { job };
    job.execute(&plan, true).unwrap()
}

/// Every frame's row as a pull leaves it: start, state, the reason it waits, when it is tried next.
fn frame_rows(w: &World) -> String {
    w.ledger.value(
        "SELECT group_concat(row, char(10)) FROM (SELECT start || ' ' || state || ' ' || coalesce(last_error, '-') \
         || ' ' || coalesce(next_attempt, '-') AS row FROM frames ORDER BY start)",
    )
}

fn records_of(frames: std::ops::Range<i64>) -> Vec<String> {
    let mut uids: Vec<String> = frames.flat_map(|n| [format!("on-time-{n}"), format!("late-{n}")]).collect();
    uids.sort();
    uids
}

fn sorted(uids: &Mutex<Vec<String>>) -> Vec<String> {
    let mut uids = uids.lock().unwrap().clone();
    uids.sort();
    uids
}

/// The SS's clock is 3 minutes behind ours, `frames.delay` is 1 minute: at 12:10 by ours (12:07
/// at the SS) the frames 12:00–12:08 are due by our clock, but 12:06–12:08 are still open at the
/// SS, their late records not there yet. Read ahead on other threads or not, they are never
/// fetched once the SS's clock is known, never staged, and wait with the reason a pull gives;
/// the run fails as a pull's would (a clock to fix). Once the clocks move on, they are pulled
/// whole: every record at the RS exactly once.
#[test]
fn frames_the_ss_clock_says_are_open_are_neither_read_ahead_nor_staged_and_later_come_whole() {
    let now = T0 + 600;
    let (closed, open) = ((0..6).map(|n| T0 + 60 * n).collect::<Vec<_>>(), [T0 + 360, T0 + 420, T0 + 480]);
    let mut in_turn = World::new(reading(1));
    let (src, sink) = (SkewedSource::new(-180), TakingSink::default());
    let expected = run_skewed(&mut in_turn, &src, &sink, now, false);
    assert_eq!(src.fetched_frames(), closed, "a pull in turn asks only for frames closed at the SS");
    assert_eq!(expected.exit_code(), 1);
    assert!(has(&expected.failures, "180s ahead of the SS's (its Date header): 3 pulls"), "{:?}", expected.failures);
    for concurrency in [1, 4] {
        let mut w = World::new(reading(concurrency));
        let (src, sink) = (SkewedSource::new(-180), TakingSink::default());
        let outcome = run_skewed(&mut w, &src, &sink, now, true);
        assert_eq!(outcome.failures, expected.failures, "concurrency {concurrency}: said as a pull says it");
        assert_eq!(frame_rows(&w), frame_rows(&in_turn), "concurrency {concurrency}: recorded as a pull records it");
        assert_eq!(src.fetched_frames(), closed, "concurrency {concurrency}: no frame open at the SS read ahead");
        assert_eq!(src.fetched.lock().unwrap().len(), closed.len(), "concurrency {concurrency}: each once");
        for start in open {
            assert_eq!(w.state(start), Some(crate::model::FrameState::Missing), "{start} waits");
        }
        let waiting =
            "SELECT COUNT(*) FROM frames WHERE state = 'missing' AND last_error LIKE '%too early for this frame%'";
        assert_eq!(w.count(waiting), 3, "concurrency {concurrency}: with the SS clock's reason");
        assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0);
        assert_eq!(sorted(&sink.stored), records_of(0..6), "concurrency {concurrency}: the closed frames, whole");
        // Five minutes on (12:12 at the SS): the frames that waited come whole; those now open wait.
        let later = run_skewed(&mut w, &src, &sink, now + 300, true);
        assert!(has(&later.failures, "180s ahead of the SS's"), "{:?}", later.failures);
        assert_eq!(sorted(&sink.stored), records_of(0..11), "concurrency {concurrency}: each record once, none lost");
        assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 22);
        let open_now = "SELECT COUNT(*) FROM frames WHERE start > 1793535000 AND state <> 'missing'";
        assert_eq!(w.count(open_now), 0, "concurrency {concurrency}: nothing open at the SS staged");
    }
}

/// Before the run's first answer there is no SS clock to go by: with `source.concurrency` 4 the
/// first frames are read at once, all still open at the SS. Their pages are dropped, not
/// staged, and each frame waits as a pull in turn leaves it; a later run pulls them whole.
#[test]
fn frames_read_ahead_before_the_ss_clock_is_known_are_not_staged_while_it_says_they_are_open() {
    let now = T0 + 240; // 12:01 at the SS: 12:00–12:02 are due by our clock, open at the SS
    let mut in_turn = World::new(reading(1));
    let (src, sink) = (SkewedSource::new(-180), TakingSink::default());
    let expected = run_skewed(&mut in_turn, &src, &sink, now, false);
    assert_eq!(src.fetched_frames(), [T0], "a pull in turn learns the SS's clock from one request");
    let mut w = World::new(reading(4));
    let (src, sink) = (SkewedSource::new(-180), TakingSink::default());
    let outcome = run_skewed(&mut w, &src, &sink, now, true);
    assert_eq!(src.fetched_frames(), [T0, T0 + 60, T0 + 120], "read at once, before any answer");
    assert!(src.fetched.lock().unwrap().iter().any(|&start| start > T0), "some were read ahead");
    assert_eq!(outcome.failures, expected.failures);
    assert!(has(&outcome.failures, "3 pulls"), "{:?}", outcome.failures);
    assert_eq!(frame_rows(&w), frame_rows(&in_turn), "each frame waits as a pull in turn leaves it");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state <> 'missing'"), 0, "nothing staged");
    assert!(sink.stored.lock().unwrap().is_empty());
    // Six minutes on (12:07 at the SS): the three frames come whole, once each.
    run_skewed(&mut w, &src, &sink, now + 360, true);
    assert_eq!(sorted(&sink.stored), records_of(0..6), "the three that waited and the next three, each record once");
}

fn has(failures: &[String], text: &str) -> bool {
    failures.iter().any(|f| f.contains(text))
}
