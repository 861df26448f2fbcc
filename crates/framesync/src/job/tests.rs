//! The run loop against a scripted SS and RS, on a real ledger in a temp dir, with a fake
//! clock: what each answer does to the records, the frames and the exit code.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::delivery::Key;
use crate::ledger::Synchronous;
use crate::model::{FrameState, StagedRecord};
use crate::plan::Scope;
use crate::sink::{Outgoing, Verdict};
use crate::source::{Page, Pages, PullError};

pub(super) const T0: Epoch = 1_793_534_400; // 2026-11-01T12:00:00Z

/// A clock that stays where it is put; sleeping costs nothing.
pub(super) struct FakeClock(pub(super) Epoch);

impl Clock for FakeClock {
    fn now(&self) -> Epoch {
        self.0
    }
    fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep(&self, _: Duration) {}
}

/// An SS with fixed records per frame, or a fixed error.
#[derive(Default)]
struct FakeSource {
    frames: HashMap<Epoch, Vec<&'static str>>,
    busy: bool,
    broken: bool,
    /// Frames it refuses (HTTP 400: history it no longer has).
    refused: HashSet<Epoch>,
    /// Frames it cannot answer for now (it is down).
    down: RefCell<HashSet<Epoch>>,
    /// Its clock, as its Date header says: an offset from the time asked about.
    date_offset: Option<i64>,
    server_date: Option<Epoch>,
    /// Records' bodies and stamps (ms) other than the default.
    bodies: HashMap<String, String>,
    stamps: HashMap<String, i64>,
    calls: RefCell<Vec<Epoch>>,
    now: RefCell<Epoch>,
}

impl Source for FakeSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        Box::new(std::iter::once(self.page(frame)))
    }
}

impl FakeSource {
    /// The frame as one page.
    fn page(&self, frame: Frame) -> Result<Page, PullError> {
        self.calls.borrow_mut().push(frame.start);
        if self.busy {
            return Err(PullError::Busy { message: "HTTP 429".into(), retry_after: Some(Duration::from_secs(600)) });
        }
        if self.broken {
            return Err(PullError::Failed("HTTP 500".into()));
        }
        if self.refused.contains(&frame.start) {
            return Err(PullError::Refused { status: 400, message: "HTTP 400: no such history".into() });
        }
        if self.down.borrow().contains(&frame.start) {
            return Err(PullError::Failed("connection refused".into()));
        }
        let uids = self.frames.get(&frame.start).cloned().unwrap_or_default();
        let records = uids
            .iter()
            .map(|u| StagedRecord {
                uid: u.to_string(),
                ts_ms: self.stamps.get(*u).copied(),
                body: self.bodies.get(*u).cloned().unwrap_or_else(|| format!(r#"{{"id":"{u}","n":1}}"#)),
            })
            .collect();
        let server_date = self.server_date.or(self.date_offset.map(|o| *self.now.borrow() + o));
        Ok(Page { records, server_date, ..Page::default() })
    }
}

/// What the fake RS does with a record.
#[derive(Debug, Clone, PartialEq)]
enum Act {
    Answer(Verdict),
    /// Stores it, and the answer never arrives.
    Lost,
}

/// How the fake RS's lookup behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lookup {
    /// 200 if stored, 404 if not.
    Truthful,
    /// 200 for everything (a maintenance page).
    Lying,
    /// Truthful, but the lookup of this UID fails (a 503, a reset connection).
    FailingFor(&'static str),
}

/// An RS answering from a script: a UID maps to what happens at its successive sends (then
/// acknowledged), or always. It stores what it acknowledges, honoring Idempotency-Keys or not.
struct FakeSink {
    batch_size: usize,
    script: Mutex<HashMap<String, Vec<Act>>>,
    always: HashMap<String, Verdict>,
    honors_keys: bool,
    keys: Mutex<HashSet<String>>,
    stored: Mutex<Vec<String>>,
    sent: Mutex<Vec<(Key, Vec<String>)>>,
    lookup: Option<Lookup>,
    looked_up: Mutex<Vec<String>>,
    /// Answers a result per record (`Verdict::PerItem`), stores the acknowledged ones, and
    /// replays the answer it gave a key.
    per_item: bool,
    answers: Mutex<HashMap<String, Verdict>>,
}

impl FakeSink {
    fn new() -> Self {
        Self {
            batch_size: 1,
            script: Mutex::default(),
            always: HashMap::new(),
            honors_keys: true,
            keys: Mutex::default(),
            stored: Mutex::default(),
            sent: Mutex::default(),
            lookup: None,
            looked_up: Mutex::default(),
            per_item: false,
            answers: Mutex::default(),
        }
    }

    fn bulk(size: usize) -> Self {
        Self { per_item: true, ..Self::batches(size) }
    }

    /// A result per record: the next scripted verdict of each, else acknowledged.
    fn send_per_item(&self, uids: Vec<String>, header: String) -> Verdict {
        if self.honors_keys
            && let Some(answer) = self.answers.lock().unwrap().get(&header)
        {
            return answer.clone();
        }
        let mut verdicts = Vec::new();
        for uid in uids {
            let next = self.script.lock().unwrap().get_mut(&uid).filter(|a| !a.is_empty()).map(|acts| acts.remove(0));
            let verdict = match next {
                Some(Act::Answer(verdict)) => verdict,
                _ => self.always.get(&uid).cloned().unwrap_or(Verdict::Acknowledged),
            };
            if verdict == Verdict::Acknowledged {
                self.stored.lock().unwrap().push(uid);
            }
            verdicts.push(verdict);
        }
        let answer = Verdict::PerItem(verdicts);
        self.answers.lock().unwrap().insert(header, answer.clone());
        answer
    }

    fn batches(size: usize) -> Self {
        Self { batch_size: size, ..Self::new() }
    }

    fn answer(self, uid: &str, acts: Vec<Act>) -> Self {
        self.script.lock().unwrap().insert(uid.into(), acts);
        self
    }

    fn always(mut self, uid: &str, verdict: Verdict) -> Self {
        self.always.insert(uid.into(), verdict);
        self
    }

    fn sent_uids(&self) -> Vec<String> {
        self.sent.lock().unwrap().iter().flat_map(|(_, uids)| uids.clone()).collect()
    }

    fn stored_count(&self, uid: &str) -> usize {
        self.stored.lock().unwrap().iter().filter(|u| *u == uid).count()
    }

    fn clear(&self) {
        self.sent.lock().unwrap().clear();
        self.looked_up.lock().unwrap().clear();
    }
}

/// The round trip the in-order dispatch reports for every answer.
const FLAT_RTT: Duration = Duration::from_millis(5);

/// Requests finish in the order they started, one after another, and each start is remembered
/// with the limit it started under: the fake RS's log then reads in the order the units were
/// formed. Every round trip is [`FLAT_RTT`].
#[derive(Default)]
struct InOrder {
    /// The in-flight limit each request started under, and how many were in flight with it.
    starts: RefCell<Vec<(usize, usize)>>,
    /// The requests of each window handed to the dispatch.
    windows: RefCell<Vec<usize>>,
}

impl InOrder {
    fn limits(&self) -> Vec<usize> {
        self.starts.borrow().iter().map(|(limit, _)| *limit).collect()
    }

    fn most_in_flight(&self) -> usize {
        self.starts.borrow().iter().map(|(_, n)| *n).max().unwrap_or(0)
    }
}

impl Dispatch for InOrder {
    fn send(
        &self,
        sink: &dyn Sink,
        requests: &[Request],
        limit: usize,
        answered: &mut Answered,
    ) -> anyhow::Result<usize> {
        self.windows.borrow_mut().push(requests.len());
        let record = |p: &Pipeline| self.starts.borrow_mut().push((p.limit, p.in_flight));
        // One call after another in this process: the round trips measured say nothing of
        // the RS modelled, whose round trips are flat.
        let mut flat = |i: usize, sent: Sent| answered(i, Sent { rtt: FLAT_RTT, ..sent });
        Pipeline::one_by_one(sink, requests, limit, &mut flat, record, |in_flight| in_flight.remove(0))
    }
}

fn retry() -> Act {
    Act::Answer(Verdict::RetryLater { reason: "HTTP 503".into(), retry_after: None, status: Some(503) })
}

fn rejected() -> Verdict {
    Verdict::Rejected { status: 400, response: "bad record".into() }
}

fn server_error() -> Verdict {
    Verdict::RetryLater { reason: "HTTP 500: boom".into(), retry_after: None, status: Some(500) }
}

impl Sink for FakeSink {
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    fn send(&self, records: &[Outgoing], key: &Key) -> Verdict {
        let uids: Vec<String> = records.iter().map(|r| r.uid.clone()).collect();
        self.sent.lock().unwrap().push((key.clone(), uids.clone()));
        let header = crate::sink::header_key(records, key);
        if self.per_item {
            return self.send_per_item(uids, header);
        }
        if self.honors_keys && self.keys.lock().unwrap().contains(&header) {
            return Verdict::Acknowledged; // a replay of the stored answer: nothing stored
        }
        let mut lost = false;
        for uid in &uids {
            if let Some(verdict) = self.always.get(uid) {
                return verdict.clone();
            }
            let mut script = self.script.lock().unwrap();
            if let Some(acts) = script.get_mut(uid).filter(|a| !a.is_empty()) {
                match acts.remove(0) {
                    Act::Answer(Verdict::Acknowledged) => {}
                    Act::Answer(verdict) => return verdict,
                    Act::Lost => lost = true,
                }
            }
        }
        self.stored.lock().unwrap().extend(uids);
        self.keys.lock().unwrap().insert(header);
        if lost {
            return Verdict::RetryLater { reason: "connection closed".into(), retry_after: None, status: None };
        }
        Verdict::Acknowledged
    }
    fn has_lookup(&self) -> bool {
        self.lookup.is_some()
    }
    fn lookup(&self, uid: &str) -> Result<bool, String> {
        self.looked_up.lock().unwrap().push(uid.into());
        match self.lookup {
            Some(Lookup::Lying) => Ok(true),
            Some(Lookup::FailingFor(failing)) if uid == failing => Err("HTTP 503 (expected 200 or 404)".into()),
            _ => Ok(self.stored.lock().unwrap().iter().any(|u| u == uid)),
        }
    }
}

pub(super) fn config(extra_sink: &str) -> Config {
    config_with(extra_sink, "", "")
}

fn config_with(extra_sink: &str, extra_frames: &str, extra_run: &str) -> Config {
    let retries = if extra_sink.contains("retries") { "" } else { "retries = 0" };
    let text = format!(
        r#"
ledger = "unused.db"
[frames]
start = "2026-11-01T12:00:00Z"
delay = "1m"
{extra_frames}
[source]
url = "http://127.0.0.1:1/ss?from={{from}}&to={{to}}"
uid = "/id"
[sink]
url = "http://127.0.0.1:1/rs"
{retries}
{extra_sink}
[run]
retry_base = "30s"
{extra_run}
"#
    );
    Config::parse(&text, std::path::Path::new("."), &|_| None).unwrap()
}

pub(super) struct World {
    _dir: tempfile::TempDir,
    pub(super) ledger: Ledger,
    pub(super) config: Config,
}

impl World {
    pub(super) fn new(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
        ledger.scrub_with(&config.secrets); // as every command opens it
        Self { _dir: dir, ledger, config }
    }

    fn run(&mut self, source: &FakeSource, sink: &FakeSink, now: Epoch, scope: Scope) -> Outcome {
        self.run_with(source, sink, now, scope, &InOrder::default())
    }

    fn run_with(
        &mut self,
        source: &FakeSource,
        sink: &FakeSink,
        now: Epoch,
        scope: Scope,
        dispatch: &dyn Dispatch,
    ) -> Outcome {
        *source.now.borrow_mut() = now;
        let plan = crate::cmd::run::make_plan(&self.config, &self.ledger, scope, now).unwrap();
        let clock = FakeClock(now);
        let job = Job::new(&self.config, &mut self.ledger, source, sink, &clock).with_dispatch(dispatch);
        job.execute(&plan, scope == Scope::Run).unwrap()
    }

    pub(super) fn state(&self, start: Epoch) -> Option<FrameState> {
        self.ledger.frame_state(start).unwrap()
    }

    pub(super) fn count(&self, sql: &str) -> i64 {
        self.ledger.value(sql)
    }

    fn text(&self, sql: &str) -> String {
        self.ledger.value(sql)
    }
}

fn source(frames: &[(Epoch, Vec<&'static str>)]) -> FakeSource {
    FakeSource { frames: frames.iter().cloned().collect(), ..FakeSource::default() }
}

fn has(failures: &[String], text: &str) -> bool {
    failures.iter().any(|f| f.contains(text))
}

#[test]
fn every_record_is_delivered_once_and_a_second_run_does_nothing() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c"]), (T0 + 120, vec![])]);
    let sink = FakeSink::new();
    let outcome = w.run(&src, &sink, T0 + 240, Scope::Run);
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(*sink.stored.lock().unwrap(), ["a", "b", "c"]);
    assert_eq!(outcome.figures.frames_delivered, 3);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3);
    assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0);
    let again = w.run(&src, &sink, T0 + 240, Scope::Run);
    assert_eq!(again.figures, RunFigures::default());
    assert_eq!(src.calls.borrow().len(), 3, "nothing pulled twice");
}

#[test]
fn a_record_the_rs_fails_is_skipped_for_the_run_and_a_later_run_sends_only_it() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a", "b", "c"])]);
    let sink = FakeSink::new().answer("b", vec![retry()]);
    let first = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(first.exit_code(), 1);
    assert_eq!(sink.sent_uids(), ["a", "b", "c"], "one failure does not stop the others");
    assert_eq!(w.state(T0), Some(FrameState::Pushing));
    assert_eq!(w.count("SELECT attempts FROM frames"), 1);
    assert_eq!(w.count("SELECT next_attempt FROM frames"), T0 + 120 + 30, "backoff from retry_base");
    // Not due yet: nothing is sent.
    w.run(&src, &sink, T0 + 130, Scope::Run);
    assert_eq!(sink.sent_uids(), ["a", "b", "c"]);
    let later = w.run(&src, &sink, T0 + 200, Scope::Run);
    assert_eq!(later.exit_code(), 0);
    assert_eq!(sink.sent_uids(), ["a", "b", "c", "b"], "a and c are not sent again");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(src.calls.borrow().iter().filter(|s| **s == T0).count(), 1, "the frame is not pulled again");
}

/// One request in flight (`sink.ordered`): the rule is about the requests after the one that
/// stops the pushes; with more in flight they are on their way already (`a_stop_records_*`).
#[test]
fn two_failures_in_a_row_stop_the_pushes_of_the_run() {
    let mut w = World::new(config("ordered = true"));
    let src = source(&[(T0, vec!["a", "b", "c"]), (T0 + 60, vec!["d"])]);
    let sink = FakeSink::new().answer("a", vec![retry()]).answer("b", vec![retry()]);
    let outcome = w.run(&src, &sink, T0 + 180, Scope::Run);
    assert_eq!(sink.sent_uids(), ["a", "b"], "an RS failing twice in a row is left alone");
    assert!(has(&outcome.failures, "no more pushes this run"), "{:?}", outcome.failures);
    assert_eq!(w.state(T0 + 60), Some(FrameState::Pulled), "pulled, waiting for the RS");
}

#[test]
fn backoff_doubles_with_each_failed_attempt() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a"])]);
    let sink = FakeSink::new().answer("a", vec![retry(), retry(), retry()]);
    let mut now = T0 + 120;
    let mut waits = vec![];
    for _ in 0..3 {
        w.run(&src, &sink, now, Scope::Run);
        let next = w.count("SELECT next_attempt FROM frames");
        waits.push(next - now);
        now = next;
    }
    assert_eq!(waits, [30, 60, 120]);
    assert_eq!(w.count("SELECT attempts FROM staged"), 0, "an RS failing everything puts no record to blame");
}

/// Pins silence: a run that dead-lettered records exited 0, with a log line per record.
#[test]
fn a_rejected_record_is_dead_lettered_its_frame_completes_and_the_run_says_so_once() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a", "bad", "c"])]);
    let sink = FakeSink::new().answer("bad", vec![Act::Answer(rejected())]);
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 1, "a run that dead-letters anything exits 1");
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    assert!(outcome.failures[0].contains("1 record was dead-lettered this run (1 rejected)"), "{:?}", outcome.failures);
    assert!(outcome.failures[0].contains("framesync dead-letters list"));
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(*sink.stored.lock().unwrap(), ["a", "c"]);
    let (status, response): (i64, String) =
        w.ledger.pair("SELECT status, response FROM dead_letters WHERE uid = 'bad'");
    assert_eq!((status, response.as_str()), (400, "bad record"));
    assert_eq!(w.count("SELECT dead FROM frames"), 1);
}

#[test]
fn a_rejected_batch_is_split_so_only_the_bad_record_is_dead_lettered() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 10"));
    let src = source(&[(T0, vec!["a", "bad", "c"])]);
    let sink = FakeSink::batches(10).always("bad", rejected());
    w.run(&src, &sink, T0 + 120, Scope::Run);
    let sent: Vec<Vec<String>> = sink.sent.lock().unwrap().iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(sent, vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]);
    assert_eq!(*sink.stored.lock().unwrap(), ["a", "c"]);
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 1);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

/// Pins a duplicate at an RS that honors keys: a batch's key is a hash of its UIDs, and when a
/// record was dead-lettered between a send and a re-send, the rest were regrouped under a new
/// key and stored twice.
#[test]
fn a_record_once_sent_is_sent_again_only_under_the_key_it_was_sent_under() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 3"));
    let src = source(&[(T0, vec!["a", "b", "p", "c", "d", "e", "f"])]);
    // p is refused (the batch splits); b's answer is lost, then c's and d's batch fails twice.
    let sink = FakeSink::batches(3)
        .always("p", rejected())
        .answer("b", vec![Act::Lost])
        .answer("c", vec![retry()])
        .answer("e", vec![retry()]);
    w.run(&src, &sink, T0 + 120, Scope::Run);
    let first: Vec<(Key, Vec<String>)> = sink.sent.lock().unwrap().clone();
    sink.clear();
    w.run(&src, &sink, T0 + 600, Scope::Run);
    w.run(&src, &sink, T0 + 1200, Scope::Run);
    for uid in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            sink.stored_count(uid),
            1,
            "{uid} stored once; first run sent {first:?}, then {:?}",
            sink.sent.lock().unwrap()
        );
    }
    let keys_of = |uid: &str| -> HashSet<Key> {
        first
            .iter()
            .chain(sink.sent.lock().unwrap().iter())
            .filter(|(_, u)| u.iter().any(|x| x == uid))
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(keys_of("b").len(), 2, "b: its batch's key (refused as a whole), then its own only");
    assert_eq!(keys_of("c").len(), 1, "c: only ever its batch's key");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

#[test]
fn a_batch_whose_answer_was_lost_goes_again_whole_under_its_key_across_windows() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 200"));
    let uids: Vec<&'static str> = (0..300).map(|i| &*Box::leak(format!("u{i:03}").into_boxed_str())).collect();
    let src = source(&[(T0, uids.clone())]);
    // The second batch (u200..u299) is stored and its answer lost; the first is acknowledged.
    let sink = FakeSink::batches(200).answer("u250", vec![Act::Lost, Act::Lost]);
    let first = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(first.exit_code(), 1);
    let key = sink.sent.lock().unwrap()[1].0.clone();
    assert!(key.is_batch());
    sink.clear();
    w.run(&src, &sink, T0 + 600, Scope::Run);
    assert_eq!(
        sink.sent.lock().unwrap().len(),
        1,
        "{:?}",
        sink.sent.lock().unwrap().iter().map(|(k, u)| (k, u.len())).collect::<Vec<_>>()
    );
    assert_eq!(sink.sent.lock().unwrap()[0].0, key, "the same key");
    assert_eq!(sink.sent.lock().unwrap()[0].1.len(), 100, "the same records");
    assert_eq!(sink.stored_count("u250"), 1, "a replay stores nothing");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

#[test]
fn a_batch_too_large_for_the_rs_goes_again_in_halves() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 4"));
    let src = source(&[(T0, vec!["a", "b", "c", "d"])]);
    let too_large = Act::Answer(Verdict::TooLarge { response: "too large".into() });
    let sink = FakeSink::batches(4).answer("a", vec![too_large]);
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 0);
    let sent: Vec<usize> = sink.sent.lock().unwrap().iter().map(|(_, u)| u.len()).collect();
    assert_eq!(sent, [4, 2, 2]);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

/// Pins silent loss: a sink URL answering 404 (a typo, a dropped table), 401 or 403 (an
/// expired token) or a redirect dead-lettered every record and the run exited 0.
/// One request in flight (`sink.ordered`): the rule is about the requests after the one that
/// stops the pushes; with more in flight they are on their way already (`a_stop_records_*`).
#[test]
fn an_answer_that_blames_the_rs_fails_the_frame_and_dead_letters_nothing() {
    for reason in ["HTTP 404: no such endpoint", "HTTP 401: refused", "HTTP 302, a redirect to /login"] {
        let mut w = World::new(config("ordered = true"));
        let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c"])]);
        let sink = FakeSink::new().answer("a", vec![Act::Answer(Verdict::Broken { reason: reason.into() })]);
        let outcome = w.run(&src, &sink, T0 + 180, Scope::Run);
        assert_eq!(outcome.exit_code(), 1, "{reason}");
        assert_eq!(sink.sent_uids(), ["a"], "pushing stops at once: {reason}");
        assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 0, "{reason}");
        assert_eq!(w.state(T0), Some(FrameState::Pushing));
        assert!(w.text("SELECT last_error FROM frames WHERE start = 1793534400").contains(reason));
        assert!(has(&outcome.failures, "not a record"), "{:?}", outcome.failures);
    }
}

/// One request in flight (`sink.ordered`): the rule is about the requests after the one that
/// stops the pushes; with more in flight they are on their way already (`a_stop_records_*`).
#[test]
fn too_many_refusals_in_a_row_stop_the_pushes_of_the_run() {
    let mut w = World::new(config("max_rejected_in_a_row = 3\nordered = true"));
    let src = source(&[(T0, vec!["a", "b", "c", "d", "e"])]);
    let mut sink = FakeSink::new();
    for uid in ["a", "b", "c", "d", "e"] {
        sink = sink.always(uid, rejected());
    }
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(sink.sent_uids(), ["a", "b", "c"]);
    assert!(has(&outcome.failures, "3 records in a row were refused (HTTP 400)"), "{:?}", outcome.failures);
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 3);
    assert_eq!(w.state(T0), Some(FrameState::Pushing), "the rest waits for a person or a later run");
}

/// One request in flight (`sink.ordered`): the rule is about the requests after the one that
/// stops the pushes; with more in flight they are on their way already (`a_stop_records_*`).
#[test]
fn records_whose_fate_is_unknown_are_looked_up_before_being_sent_again() {
    let mut w = World::new(config("ordered = true"));
    let src = source(&[(T0, vec!["a", "b", "c"])]);
    // a's and b's answers are lost: the RS stored them.
    let sink = FakeSink::new().answer("a", vec![Act::Lost]).answer("b", vec![Act::Lost]);
    w.run(&src, &sink, T0 + 120, Scope::Run);
    let mut sink2 = FakeSink::new();
    sink2.stored = Mutex::new(sink.stored.lock().unwrap().clone());
    sink2.lookup = Some(Lookup::Truthful);
    let outcome = w.run(&src, &sink2, T0 + 600, Scope::Run);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    let looked_up = sink2.looked_up.lock().unwrap().clone();
    assert!(looked_up[0].starts_with("framesync-no-such-record-"), "the lookup is tried first: {looked_up:?}");
    assert_eq!(looked_up[1..], ["a", "b", "c"], "c was about to be sent when pushing stopped");
    assert_eq!(sink2.sent_uids(), ["c"], "present records are not sent again");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

#[test]
fn without_a_lookup_unknown_records_are_sent_again_with_the_same_key() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a", "b"])]);
    let sink = FakeSink::new().answer("a", vec![Act::Lost]);
    w.run(&src, &sink, T0 + 120, Scope::Run);
    sink.clear();
    w.run(&src, &sink, T0 + 600, Scope::Run);
    assert_eq!(sink.sent_uids(), ["a"]);
    assert_eq!(sink.stored_count("a"), 1, "the RS honors the key");
    assert!(sink.looked_up.lock().unwrap().is_empty());
}

/// Pins silent loss: the POST answered 503 and the lookup answered 200 with a maintenance page,
/// and every record counted as delivered.
#[test]
fn a_lookup_that_says_present_for_a_uid_that_cannot_exist_is_not_believed() {
    let mut w = World::new(config("retries = 2\nlookup_url = \"http://127.0.0.1:1/rs/{uid}\""));
    let src = source(&[(T0, vec!["a"])]);
    let mut sink = FakeSink::new().always(
        "a",
        Verdict::RetryLater { reason: "HTTP 503: maintenance".into(), retry_after: None, status: Some(503) },
    );
    sink.lookup = Some(Lookup::Lying);
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 0, "nothing counts as delivered");
    assert_eq!(w.state(T0), Some(FrameState::Pushing));
    assert!(has(&outcome.failures, "a UID that cannot exist"), "{:?}", outcome.failures);
    assert!(w.text("SELECT lookup_off_reason FROM servers WHERE name = 'sink'").contains("cannot exist"));
    // In a later run with the lookup truthful again, the record's unknown fate is resolved.
    sink.lookup = Some(Lookup::Truthful);
    let sink = FakeSink { lookup: Some(Lookup::Truthful), ..FakeSink::new() };
    let later = w.run(&src, &sink, T0 + 1200, Scope::Run);
    assert_eq!(later.exit_code(), 0, "{:?}", later.failures);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

/// Pins a pipeline stuck behind one record the RS always answers 500: its frame stayed
/// `pushing` forever and, first in every run, blocked every later frame.
#[test]
fn a_record_the_rs_always_fails_is_dead_lettered_after_max_attempts_and_the_rest_goes_on() {
    let mut w = World::new(config("max_attempts = 3"));
    let frames: Vec<(Epoch, Vec<&'static str>)> = vec![
        (T0, vec!["poison", "a", "a2"]),
        (T0 + 60, vec!["b", "b2"]),
        (T0 + 120, vec!["c", "c2"]),
        (T0 + 180, vec!["d", "d2"]),
        (T0 + 240, vec!["e", "e2"]),
    ];
    let src = source(&frames);
    let sink = FakeSink::new().always("poison", server_error());
    let mut codes = vec![];
    for (i, now) in [T0 + 120, T0 + 180, T0 + 240, T0 + 300].into_iter().enumerate() {
        let outcome = w.run(&src, &sink, now, Scope::Run);
        codes.push(outcome.exit_code());
        assert!(sink.stored_count(["a", "b", "c", "d"][i]) == 1, "later frames are not blocked (run {i})");
    }
    assert_eq!(codes, [1, 1, 1, 0], "failing, failing, dead-lettered, then nothing wrong");
    assert_eq!(w.state(T0), Some(FrameState::Delivered), "delivered without the poison record");
    let (reason, detail): (String, String) = w.ledger.pair("SELECT reason, detail FROM dead_letters");
    assert_eq!(reason, "exhausted");
    assert!(detail.contains("3 times") && detail.contains("HTTP 500"), "{detail}");
    assert_eq!(sink.sent_uids().iter().filter(|u| *u == "poison").count(), 3);
}

/// Pins a poison record that stayed forever in a quiet feed: the runs that retried it sent
/// nothing else, and "more taken than failed in the run" never held.
#[test]
fn in_a_quiet_feed_a_record_the_rs_always_fails_is_dead_lettered_too() {
    let mut w = World::new(config("max_attempts = 2"));
    let src = source(&[(T0, vec!["poison"]), (T0 + 60, vec!["b"]), (T0 + 180, vec!["c"])]);
    let sink = FakeSink::new().always("poison", server_error());
    // The poison frame is retried alone (backoff 30 s, 60 s, 120 s …) and the other frames go in
    // runs of their own, so every failure of the poison record is the only request of its run.
    let runs = [(T0 + 120, "poison"), (T0 + 150, "poison"), (T0 + 180, "b"), (T0 + 210, "poison")];
    let runs = runs.into_iter().chain([(T0 + 300, "c"), (T0 + 330, "poison")]);
    for (now, sent) in runs {
        let before = sink.sent_uids().len();
        w.run(&src, &sink, now, Scope::Run);
        assert_eq!(sink.sent_uids()[before..], [sent], "the run at {now}");
    }
    // Its first two failures prove nothing; the RS took "b" before the third and "c" before
    // the fourth: two attempts count against it.
    assert_eq!(w.text("SELECT reason FROM dead_letters WHERE uid = 'poison'"), "exhausted");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    // The RS failing more than it takes blames no record.
    let mut w = World::new(config("max_attempts = 1"));
    let src = source(&[(T0, vec!["x", "y", "ok"])]);
    let sink = FakeSink::new().always("x", server_error()).always("y", server_error());
    w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 0, "two failed, one taken");
}

/// Pins a record dead-lettered by an outage: the RS took "b", then went down; in a quiet feed
/// each run retried "c" alone, and every failure counted because the RS had taken "b" within
/// the 15 minutes before.
#[test]
fn an_rs_that_goes_down_after_its_last_acknowledgement_blames_no_record() {
    let mut w = World::new(config("max_attempts = 2"));
    let src = source(&[(T0, vec!["b"]), (T0 + 60, vec!["c"])]);
    w.run(&src, &FakeSink::new(), T0 + 120, Scope::Run);
    let down = FakeSink::new().always("c", server_error());
    for now in (T0 + 180..T0 + 3 * 3600).step_by(60) {
        w.run(&src, &down, now, Scope::Run);
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 0);
    assert!(down.sent_uids().len() >= 5, "c was retried (with backoff): {}", down.sent_uids().len());
    assert_eq!(w.count("SELECT attempts FROM staged WHERE uid = 'c'"), 0, "no failure counted against it");
    // The RS is back: c is delivered.
    w.run(&src, &FakeSink::new(), T0 + 4 * 3600, Scope::Run);
    assert_eq!(w.state(T0 + 60), Some(FrameState::Delivered));
}

/// Pins two records the RS always failed, stuck for ever in a sparse feed: every run took the
/// one new record and failed both, so the RS never took as many requests as it failed.
#[test]
fn records_the_rs_keeps_failing_while_it_takes_every_new_one_are_dead_lettered() {
    let mut w = World::new(config("max_attempts = 2"));
    let mut frames = vec![(T0, vec!["p1"]), (T0 + 60, vec!["p2"])];
    let healthy: Vec<&'static str> = (0..60).map(|i| &*format!("h{i}").leak()).collect();
    frames.extend(healthy.iter().enumerate().map(|(i, &uid)| (T0 + 120 + 60 * i as Epoch, vec![uid])));
    let src = source(&frames);
    let sink = FakeSink::new().always("p1", server_error()).always("p2", server_error());
    for now in (T0 + 240..T0 + 3600).step_by(60) {
        w.run(&src, &sink, now, Scope::Run);
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters WHERE reason = 'exhausted'"), 2);
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state <> 'delivered' AND start < 1793534400 + 3000"), 0);
    for uid in &healthy[..50] {
        assert_eq!(sink.stored_count(uid), 1, "{uid}");
    }
}

#[test]
fn a_batch_the_rs_keeps_failing_with_an_answer_goes_again_record_by_record() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 3\nmax_attempts = 1"));
    let src = source(&[(T0, vec!["a", "poison", "b"]), (T0 + 60, vec!["c"]), (T0 + 120, vec!["d"])]);
    let sink = FakeSink::batches(3).always("poison", server_error());
    w.run(&src, &sink, T0 + 240, Scope::Run);
    assert_eq!(w.count("SELECT COUNT(*) FROM staged WHERE key = ''"), 3, "the batch's records go alone next");
    w.run(&src, &sink, T0 + 600, Scope::Run);
    for uid in ["a", "b", "c"] {
        assert_eq!(sink.stored_count(uid), 1, "{uid}");
    }
    assert_eq!(w.text("SELECT uid FROM dead_letters"), "poison");
}

#[test]
fn a_batch_that_keeps_timing_out_is_dead_lettered_whole_under_its_key() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 2\nmax_attempts = 1"));
    let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c"]), (T0 + 120, vec!["d"])]);
    let timeout = Verdict::RetryLater { reason: "timed out".into(), retry_after: None, status: None };
    let sink = FakeSink::batches(2).always("a", timeout);
    let outcome = w.run(&src, &sink, T0 + 240, Scope::Run);
    assert!(has(&outcome.failures, "2 records were dead-lettered this run (2 exhausted)"), "{:?}", outcome.failures);
    let keys: Vec<String> = w.ledger.column("SELECT key FROM dead_letters");
    assert!(keys.len() == 2 && keys[0] == keys[1] && keys[0].starts_with("batch-"), "{keys:?}");
}

/// Pins a pipeline stuck behind a re-check the SS refuses: it was due again every run, counted
/// toward "three failures in a row, stop pulling", and starved the old gaps.
#[test]
fn failing_rechecks_back_off_are_given_up_and_never_starve_the_gaps() {
    let mut w =
        World::new(config_with("", "recheck = [\"1m\"]", "max_frames = 4\nmax_recheck_attempts = 2\nfresh = \"1m\""));
    let early: Vec<Epoch> = (0..6).map(|i| T0 + i * 60).collect();
    let mut src = source(&early.iter().map(|&f| (f, vec![])).collect::<Vec<_>>());
    // Deliver the first six frames, then the SS refuses them (history it no longer has).
    let mut now = T0 + 7 * 60;
    while w.count("SELECT COUNT(*) FROM frames WHERE state = 'delivered' AND start < 1793534400 + 360") < 6 {
        w.run(&src, &FakeSink::new(), now, Scope::Run);
        now += 30;
    }
    src.refused = early.iter().copied().collect();
    // An hour later: 50 frames are missing, six re-checks are due and fail.
    now = T0 + 70 * 60;
    let before = w.count("SELECT COUNT(*) FROM frames WHERE state = 'delivered'");
    let outcome = w.run(&src, &FakeSink::new(), now, Scope::Run);
    let pulled = w.count("SELECT COUNT(*) FROM frames WHERE state = 'delivered'") - before;
    assert!(pulled >= 2, "gaps are pulled beside failing re-checks: {pulled}");
    assert!(has(&outcome.failures, "re-check: HTTP 400"), "{:?}", outcome.failures);
    assert!(!has(&outcome.failures, "no more pulls"), "{:?}", outcome.failures);
    for _ in 0..20 {
        now += 120;
        w.run(&src, &FakeSink::new(), now, Scope::Run);
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE rechecks_given_up = 1"), 6, "given up, and recorded");
    assert!(w.text("SELECT recheck_error FROM frames WHERE rechecks_given_up = 1 LIMIT 1").contains("HTTP 400"));
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE start < 1793534400 + 360 AND next_recheck IS NOT NULL"), 0);
    let last = w.run(&src, &FakeSink::new(), now + 120, Scope::Run);
    assert_eq!(last.exit_code(), 0, "{:?}", last.failures);
}

#[test]
fn a_recheck_that_meets_an_ss_that_is_down_waits_for_it_and_is_not_given_up() {
    let mut w = World::new(config_with("", "recheck = [\"1m\"]", "max_recheck_attempts = 2"));
    let src = source(&[(T0, vec!["a"])]);
    w.run(&src, &FakeSink::new(), T0 + 120, Scope::Run);
    src.down.borrow_mut().insert(T0);
    let mut now = T0 + 200;
    for _ in 0..6 {
        let outcome = w.run(&src, &FakeSink::new(), now, Scope::Run);
        assert!(has(&outcome.failures, "re-check: connection refused") || outcome.failures.is_empty());
        now += 3600;
    }
    assert_eq!(
        w.count("SELECT rechecks_given_up FROM frames WHERE start = 1793534400"),
        0,
        "an SS that is down is waited for"
    );
    src.down.borrow_mut().clear();
    let late = FakeSource { frames: [(T0, vec!["a", "late"])].into(), ..FakeSource::default() };
    for _ in 0..20 {
        w.run(&late, &FakeSink::new(), now, Scope::Run);
        now += 60;
    }
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered WHERE uid = 'late'"), 1, "the re-check found the late record");
}

#[test]
fn frames_the_ss_refuses_do_not_stop_the_pulls_of_the_run() {
    let mut w = World::new(config_with("", "", "fresh = \"1m\""));
    let mut src = source(&[]);
    src.refused = (0..5).map(|i| T0 + i * 60).collect();
    let outcome = w.run(&src, &FakeSink::new(), T0 + 11 * 60, Scope::Run);
    assert!(!has(&outcome.failures, "no more pulls"), "{:?}", outcome.failures);
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state = 'delivered'"), 5, "the frames after them");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state = 'missing' AND last_error LIKE '%HTTP 400%'"), 5);
}

/// Pins a frame starved behind dropped history (seeds 12672 and 13881 of the simulation): it
/// failed in an outage, and old frames were retried fewest failures first — behind the frames
/// the SS refused once, two more every run — until the SS had dropped it too.
#[test]
fn a_frame_that_failed_in_an_outage_is_retried_before_history_the_ss_no_longer_keeps() {
    let mut w = World::new(config_with("", "", "max_frames = 4\nfresh = \"1m\""));
    let x = T0 + 60 * 60;
    let mut src = source(&[(x, vec!["x"])]);
    src.refused = (0..60).map(|i| T0 + i * 60).collect();
    src.down.borrow_mut().insert(x);
    let mut now = x + 120;
    for _ in 0..2 {
        w.run(&src, &FakeSink::new(), now, Scope::Run);
        now += 60;
    }
    assert_eq!(w.count("SELECT attempts FROM frames WHERE start = 1793534400 + 3600"), 2, "failed twice in the outage");
    src.down.borrow_mut().clear();
    w.run(&src, &FakeSink::new(), now, Scope::Run);
    assert_eq!(w.state(x), Some(FrameState::Delivered), "its retry came due first");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE refused = 1 AND state = 'missing'"), 7, "refused, failing");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE refused = 0 AND state = 'missing'"), 0);
}

/// Pins a pipeline stuck behind an SS clock 150 s behind: it stopped pulling for the whole run,
/// every run. Only the frames the SS says are still open wait.
#[test]
fn an_ss_clock_behind_holds_back_only_the_frames_it_says_are_open() {
    let mut w = World::new(config_with("", "", "fresh = \"5m\""));
    let now = T0 + 20 * 60;
    let src = FakeSource { date_offset: Some(-150), ..source(&[]) };
    let outcome = w.run(&src, &FakeSink::new(), now, Scope::Run);
    // Eligible until 12:19 by this clock; the SS (at 12:17:30) says frames after 12:16 are open.
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state = 'delivered'"), 16);
    assert_eq!(w.count("SELECT MIN(start) FROM frames WHERE state = 'missing'"), T0 + 16 * 60);
    assert!(w.text("SELECT last_error FROM frames WHERE state = 'missing'").contains("too early"));
    assert_eq!(outcome.exit_code(), 1, "150 s is a clock to fix");
    assert!(has(&outcome.failures, "150s ahead of the SS"), "{:?}", outcome.failures);
    assert_eq!(src.calls.borrow().len(), 16, "open frames are not asked once the SS's clock is known");
    // Later, the frames that waited are pulled once the SS's clock says they closed.
    let later = w.run(&src, &FakeSink::new(), now + 240, Scope::Run);
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state = 'missing' AND start < 1793534400 + 1140"), 0);
    assert!(later.figures.frames_delivered >= 3);
}

/// Pins a backlog that drained one frame a run slower than it could: each run planned the
/// freshest frame, which the SS's clock, 3 s behind, called open, and the pull held it back.
#[test]
fn an_ss_clock_a_little_behind_is_planned_around_and_a_large_skew_is_not() {
    for (offset, planned) in [(-3, false), (-150, true), (0, true)] {
        let mut w = World::new(config_with("", "", "fresh = \"5m\""));
        let src = FakeSource { date_offset: Some(offset), ..source(&[]) };
        w.run(&src, &FakeSink::new(), T0 + 600, Scope::Run);
        // At 12:12:01 the frame 12:10 is eligible by this clock (it closed at 12:11, delay 1m);
        // by an SS 3 s behind it is not.
        let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, T0 + 721).unwrap();
        let has = plan.steps.contains(&crate::plan::Step::Pull(T0 + 600));
        assert_eq!(has, planned, "SS {offset}s off: {:?}", plan.steps);
    }
}

/// Pins a pipeline stuck after one run with the clock a year ahead: quiet_until and
/// next_attempt sat a year in the future, and later runs exited 0 pushing nothing.
#[test]
fn waits_written_by_a_clock_a_year_ahead_are_over_once_it_is_back() {
    let mut w = World::new(config(""));
    let year = 365 * 86_400;
    let src = source(&[(T0, vec!["a"])]);
    // Staged at the right time, then a run a year ahead meets an RS asking for quiet.
    w.run(&src, &FakeSink::new(), T0 + 120, Scope::Pull);
    let busy = Verdict::RetryLater {
        reason: "HTTP 503".into(),
        retry_after: Some(Duration::from_secs(600)),
        status: Some(503),
    };
    let sink = FakeSink::new().answer("a", vec![Act::Answer(busy)]);
    w.run(&src, &sink, T0 + year, Scope::Push);
    assert!(w.count("SELECT quiet_until FROM servers WHERE name = 'sink'") > T0 + year);
    assert!(w.count("SELECT next_attempt FROM frames WHERE start = 1793534400") > T0 + year);
    // The clock is back: the record goes.
    let outcome = w.run(&src, &sink, T0 + 300, Scope::Push);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(sink.stored_count("a"), 1);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

/// Pins late records lost after one run with the clock a year ahead: every re-check was due by
/// it, each was done at once and the schedule used up, before the late records reached the SS.
#[test]
fn a_recheck_the_ss_clock_says_is_not_yet_due_waits_for_it() {
    let mut w = World::new(config_with("", "recheck = [\"10m\", \"1h\"]", ""));
    let year = 365 * 86_400;
    let on_time = FakeSource { date_offset: Some(0), ..source(&[(T0, vec!["a"])]) };
    w.run(&on_time, &FakeSink::new(), T0 + 120, Scope::Run);
    let due = w.count("SELECT next_recheck FROM frames WHERE start = 1793534400");
    assert_eq!(due, T0 + 120 + 600);
    // A run a year ahead: the SS's Date says it is 12:05.
    let ahead = FakeSource { server_date: Some(T0 + 300), ..source(&[(T0, vec!["a"])]) };
    let outcome = w.run(&ahead, &FakeSink::new(), T0 + year, Scope::Run);
    assert_eq!(outcome.exit_code(), 1, "a clock to fix");
    assert!(has(&outcome.failures, "ahead of the SS"), "{:?}", outcome.failures);
    assert_eq!(w.count("SELECT rechecks FROM frames WHERE start = 1793534400"), 0, "not re-checked");
    assert_eq!(w.count("SELECT next_recheck FROM frames WHERE start = 1793534400"), due, "still due, as it was");
    // The clock is back; a record arrives at the SS 50 minutes late and the 1 h re-check finds it.
    w.run(&on_time, &FakeSink::new(), T0 + 720, Scope::Run);
    assert_eq!(w.count("SELECT rechecks FROM frames WHERE start = 1793534400"), 1, "re-checked when due");
    let late = FakeSource { date_offset: Some(0), ..source(&[(T0, vec!["a", "late"])]) };
    w.run(&late, &FakeSink::new(), T0 + 3800, Scope::Run);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered WHERE uid = 'late'"), 1, "the last re-check found it");
    // A re-check the SS's clock says is due, done by a clock a year ahead: the schedule goes on
    // in the SS's time, so the 1 h re-check is still to come.
    let mut w = World::new(config_with("", "recheck = [\"10m\", \"1h\"]", ""));
    w.run(&on_time, &FakeSink::new(), T0 + 120, Scope::Run);
    let ahead = FakeSource { server_date: Some(T0 + 120 + 605), ..source(&[(T0, vec!["a"])]) };
    w.run(&ahead, &FakeSink::new(), T0 + year, Scope::Run);
    assert_eq!(w.count("SELECT rechecks FROM frames WHERE start = 1793534400"), 1);
    assert_eq!(w.count("SELECT next_recheck FROM frames WHERE start = 1793534400"), T0 + 120 + 3600);
}

#[test]
fn a_busy_ss_stops_pulling_for_the_run_and_is_left_alone_for_its_retry_after() {
    let mut w = World::new(config(""));
    let src = FakeSource { busy: true, ..FakeSource::default() };
    let outcome = w.run(&src, &FakeSink::new(), T0 + 600, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(src.calls.borrow().len(), 1, "one request, then quiet");
    assert_eq!(w.state(T0), Some(FrameState::Missing));
    assert_eq!(w.count("SELECT next_attempt FROM frames"), T0 + 600 + 600);
    assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0);
}

#[test]
fn a_clock_ahead_of_the_ss_never_stages_a_frame_the_ss_says_is_still_open() {
    let mut w = World::new(config(""));
    let mut src = source(&[(T0, vec!["a"])]);
    src.server_date = Some(T0 + 90); // the SS is at 12:01:30; frame 12:00 needs 12:02 (delay 1m)
    let outcome = w.run(&src, &FakeSink::new(), T0 + 3600, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    assert!(has(&outcome.failures, "ahead of the SS"), "{:?}", outcome.failures);
    assert_eq!(src.calls.borrow().len(), 1, "one request learns the SS's clock");
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state <> 'missing'"), 0, "nothing staged or delivered");
}

#[test]
fn a_broken_ss_is_given_up_on_after_three_frames_in_a_row() {
    let mut w = World::new(config(""));
    let src = FakeSource { broken: true, ..FakeSource::default() };
    let outcome = w.run(&src, &FakeSink::new(), T0 + 600, Scope::Run);
    assert_eq!(src.calls.borrow().len(), 3);
    assert_eq!(outcome.failures.len(), 3);
    assert!(outcome.failures[0].contains("HTTP 500"));
    assert_eq!(w.count("SELECT COUNT(*) FROM frames WHERE state = 'missing' AND last_error = 'HTTP 500'"), 3);
}

#[test]
fn a_record_the_mapping_cannot_satisfy_is_dead_lettered_not_sent() {
    let mut w = World::new(config("map = { event = \"/id\", amount = \"/amount\" }"));
    let src = source(&[(T0, vec!["a"])]);
    let sink = FakeSink::new();
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert!(sink.sent.lock().unwrap().is_empty());
    assert!(w.text("SELECT detail FROM dead_letters").contains("/amount"));
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert!(has(&outcome.failures, "1 invalid"), "{:?}", outcome.failures);
}

#[test]
fn pull_stages_without_pushing_and_push_delivers_what_pull_staged() {
    let mut w = World::new(config(""));
    let src = source(&[(T0, vec!["a"]), (T0 + 60, vec![])]);
    let sink = FakeSink::new();
    w.run(&src, &sink, T0 + 180, Scope::Pull);
    assert!(sink.sent.lock().unwrap().is_empty());
    assert_eq!(w.state(T0), Some(FrameState::Pulled));
    assert_eq!(w.state(T0 + 60), Some(FrameState::Delivered), "an empty frame needs no push");
    let outcome = w.run(&src, &sink, T0 + 180, Scope::Push);
    assert_eq!(outcome.figures.records_pushed, 1);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(src.calls.borrow().len(), 2, "push pulls nothing");
}

/// Pins a record counted twice: a batch split re-mapped (and dead-lettered again) a record
/// `sink.map` had already dead-lettered.
#[test]
fn a_split_batch_sends_only_what_the_mapping_could_fill_and_counts_each_dead_letter_once() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 10\nmap = { id = \"/id\", n = \"/n\" }"));
    let src = FakeSource {
        bodies: [("nomap".to_string(), r#"{"id":"nomap"}"#.to_string())].into(),
        ..source(&[(T0, vec!["a", "nomap", "bad", "c"])])
    };
    let sink = FakeSink::batches(10).always("bad", rejected());
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    let sent: Vec<Vec<String>> = sink.sent.lock().unwrap().iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(sent, vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]);
    assert_eq!(outcome.figures.dead_letters, 2, "nomap and bad, once each");
    assert!(
        has(&outcome.failures, "2 records were dead-lettered this run (1 rejected, 1 invalid)"),
        "{:?}",
        outcome.failures
    );
}

/// Pins a pull that ignored run.max_seconds inside a frame of many pages.
#[test]
fn a_pull_stops_between_pages_at_the_budget_and_a_frame_that_never_fits_says_so() {
    let mut w = World::new(config_with("", "", "max_seconds = 10"));
    let clock = SteppingClock::new(T0 + 120);
    let src = PagedSource { pages: 100, page_takes: Duration::from_secs(1), clock: &clock, served: RefCell::new(0) };
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, T0 + 120).unwrap();
    let outcome = Job::new(&w.config, &mut w.ledger, &src, &FakeSink::new(), &clock).execute(&plan, true).unwrap();
    assert!(*src.served.borrow() <= 11, "stopped at the budget: {}", src.served.borrow());
    assert!(outcome.out_of_time);
    assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0, "rolled back: all pages or none");
    assert!(has(&outcome.failures, "half of run.max_seconds"), "{:?}", outcome.failures);
    assert!(w.text("SELECT last_error FROM frames").contains("framesync backfill"));
}

/// Confirms a gap made safe: a UID delivered in a frame since pruned (run.retain) and served
/// again in a later frame is looked up before it is sent, where the RS has a lookup.
#[test]
fn a_record_stamped_before_the_retention_horizon_is_looked_up_before_it_is_sent() {
    let mut w = World::new(config("lookup_url = \"http://127.0.0.1:1/rs/{uid}\""));
    let old = (T0 - 40 * 86_400) * 1000;
    let src = FakeSource { stamps: [("old".to_string(), old)].into(), ..source(&[(T0, vec!["old", "new"])]) };
    let sink = FakeSink { lookup: Some(Lookup::Truthful), ..FakeSink::new() };
    sink.stored.lock().unwrap().push("old".into()); // delivered 40 days ago, its UID pruned since
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(sink.sent_uids(), ["new"], "old is at the RS: not sent again");
    assert_eq!(sink.stored_count("old"), 1);
}

/// A clock that moves on its own when told, for budgets.
struct SteppingClock {
    now: Epoch,
    elapsed: RefCell<Duration>,
}

impl SteppingClock {
    fn new(now: Epoch) -> Self {
        Self { now, elapsed: RefCell::new(Duration::ZERO) }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Epoch {
        self.now + self.elapsed.borrow().as_secs() as i64
    }
    fn elapsed(&self) -> Duration {
        *self.elapsed.borrow()
    }
    fn sleep(&self, pause: Duration) {
        *self.elapsed.borrow_mut() += pause;
    }
}

/// An SS whose every frame has `pages` pages of one record, each taking `page_takes`.
struct PagedSource<'a> {
    pages: usize,
    page_takes: Duration,
    clock: &'a SteppingClock,
    served: RefCell<usize>,
}

impl Source for PagedSource<'_> {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        Box::new((0..self.pages).map(move |i| {
            self.clock.sleep(self.page_takes);
            *self.served.borrow_mut() += 1;
            let uid = format!("{}-{i}", frame.start);
            let record = StagedRecord { uid: uid.clone(), ts_ms: None, body: format!(r#"{{"id":"{uid}"}}"#) };
            Ok(Page { records: vec![record], ..Page::default() })
        }))
    }
}

#[test]
fn secrets_never_reach_the_ledger() {
    let mut config = config("");
    config.secrets.add("s3cret-token");
    let mut w = World::new(config);
    let src = source(&[(T0, vec!["a"])]);
    let refused = Verdict::RetryLater {
        reason: "POST http://rs/?key=s3cret-token: refused".into(),
        retry_after: None,
        status: None,
    };
    let sink = FakeSink::new().answer("a", vec![Act::Answer(refused)]);
    w.run(&src, &sink, T0 + 120, Scope::Run);
    let error = w.text("SELECT last_error FROM frames");
    assert!(!error.contains("s3cret") && error.contains("***"), "{error}");
}

fn item_429() -> Act {
    Act::Answer(Verdict::RetryLater {
        reason: "item status 429: queue full".into(),
        retry_after: None,
        status: Some(429),
    })
}

/// The keys the ledger holds for staged records, by UID.
fn staged_keys(w: &World) -> Vec<(String, String)> {
    let uids: Vec<String> = w.ledger.column("SELECT uid FROM staged ORDER BY seq");
    let keys: Vec<String> = w.ledger.column("SELECT COALESCE(key, '') FROM staged ORDER BY seq");
    uids.into_iter().zip(keys).collect()
}

#[test]
fn a_batch_answered_item_by_item_delivers_the_taken_retries_the_failed_and_dead_letters_the_refused() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 4\nretries = 1"));
    let src = source(&[(T0, vec!["a", "b", "c", "d"])]);
    let sink = FakeSink::bulk(4).answer("b", vec![item_429()]).always("c", rejected());
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 1, "a dead letter: {:?}", outcome.failures);
    let sent = sink.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "the batch, then only the failed record: {sent:?}");
    assert_eq!(sent[1].1, ["b"]);
    assert!(sent[1].0.is_batch() && sent[1].0 != sent[0].0, "under a key of its own, not the batch's: {sent:?}");
    for uid in ["a", "b", "d"] {
        assert_eq!(sink.stored_count(uid), 1, "{uid} stored once");
    }
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(w.text("SELECT group_concat(uid) FROM (SELECT uid FROM delivered ORDER BY uid)"), "a,b,d");
    assert_eq!(w.text("SELECT uid || ' ' || status || ' ' || response FROM dead_letters"), "c 400 bad record");
    assert_eq!(outcome.figures.records_pushed, 3);
}

/// An RS that honors keys replays the answer it gave the batch's key (results for all four
/// records): sent again under it, the one record left would meet an answer of the wrong
/// length forever.
#[test]
fn records_a_per_item_answer_sent_back_go_in_later_runs_under_their_new_key_only() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 4"));
    let src = source(&[(T0, vec!["a", "b", "c", "d"])]);
    let sink = FakeSink::bulk(4).answer("b", vec![item_429(), item_429()]);
    let first = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(first.exit_code(), 1);
    assert_eq!(w.state(T0), Some(FrameState::Pushing));
    let batch = sink.sent.lock().unwrap()[0].0.clone();
    let keys = staged_keys(&w);
    let again = keys.iter().find(|(uid, _)| uid == "b").unwrap().1.clone();
    assert!(again.starts_with("batch-") && again != batch.to_sql(), "{keys:?}");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3, "the others are recorded at once");

    sink.clear();
    w.run(&src, &sink, T0 + 200, Scope::Run);
    let second = sink.sent.lock().unwrap().clone();
    assert_eq!(second, [(Key::Batch(again.clone()), vec!["b".to_string()])], "b alone under its new key");
    sink.clear();
    let third = w.run(&src, &sink, T0 + 400, Scope::Run);
    assert_eq!(third.exit_code(), 0, "{:?}", third.failures);
    let sent = sink.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_ne!(sent[0].0, Key::Batch(again), "each retry under a key of its own");
    assert_eq!(sink.stored_count("b"), 1);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
}

/// Pins a record the RS answers 500 item by item, run after run, while it takes the others:
/// each per-item answer sent it again under a new key with its failures reset, so it never
/// reached `sink.max_attempts` and kept its frame pushing forever (found by the simulation).
#[test]
fn a_record_the_rs_fails_item_by_item_is_dead_lettered_after_max_attempts() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 3\nmax_attempts = 3"));
    let frames: Vec<(Epoch, Vec<&'static str>)> = vec![
        (T0, vec!["poison", "a"]),
        (T0 + 60, vec!["b"]),
        (T0 + 120, vec!["c"]),
        (T0 + 180, vec!["d"]),
        (T0 + 240, vec!["e"]),
    ];
    let src = source(&frames);
    let sink = FakeSink::bulk(3).always("poison", server_error());
    let mut codes = vec![];
    for (i, now) in [T0 + 120, T0 + 180, T0 + 240, T0 + 300].into_iter().enumerate() {
        let outcome = w.run(&src, &sink, now, Scope::Run);
        codes.push(outcome.exit_code());
        assert_eq!(sink.stored_count(["a", "b", "c", "d"][i]), 1, "later frames are not blocked (run {i})");
    }
    assert_eq!(codes, [1, 1, 1, 0], "failing, failing, dead-lettered, then nothing wrong");
    assert_eq!(w.state(T0), Some(FrameState::Delivered), "delivered without the poison record");
    let (reason, detail): (String, String) = w.ledger.pair("SELECT reason, detail FROM dead_letters");
    assert_eq!(reason, "exhausted");
    assert!(detail.contains("3 times") && detail.contains("500"), "{detail}");
    assert_eq!(sink.sent_uids().iter().filter(|u| *u == "poison").count(), 3);
}

#[test]
fn an_item_that_blames_the_rs_stops_the_pushes_but_what_the_rs_took_is_recorded() {
    let mut w = World::new(config("mode = \"batch\"\nbatch_size = 3"));
    let src = source(&[(T0, vec!["a", "b", "c"]), (T0 + 60, vec!["d"])]);
    let broken = Verdict::Broken { reason: "item status 404: no such index".into() };
    let sink = FakeSink::bulk(3).answer("b", vec![Act::Answer(broken)]);
    let outcome = w.run(&src, &sink, T0 + 180, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    assert!(has(&outcome.failures, "no such index"), "{:?}", outcome.failures);
    assert_eq!(sink.sent.lock().unwrap().len(), 1, "pushing stopped");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 2);
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 0, "not the record's fault");
    let later = w.run(&src, &sink, T0 + 400, Scope::Run);
    assert_eq!(later.exit_code(), 0, "{:?}", later.failures);
    assert_eq!(sink.stored_count("b"), 1);
}

#[test]
fn requests_keep_up_to_the_in_flight_limit_in_flight_and_are_acted_on_in_the_order_formed() {
    let uids = vec!["a", "b", "c", "d", "e", "f", "g"];
    for (extra, most) in [
        ("concurrency = 3\nadaptive = false", 3),
        ("concurrency = 3\nordered = true", 1),
        ("concurrency = 1\nadaptive = false", 1),
    ] {
        let mut w = World::new(config(extra));
        let src = source(&[(T0, uids.clone())]);
        let (sink, dispatch) = (FakeSink::new(), InOrder::default());
        let outcome = w.run_with(&src, &sink, T0 + 120, Scope::Run, &dispatch);
        assert_eq!(outcome.exit_code(), 0, "{extra}: {:?}", outcome.failures);
        assert_eq!(dispatch.most_in_flight(), most, "{extra}");
        assert_eq!(dispatch.limits(), vec![most; 7], "{extra}");
        assert_eq!(sink.sent_uids(), uids, "{extra}: acted on in the order formed");
        assert_eq!(w.state(T0), Some(FrameState::Delivered), "{extra}");
    }
}

#[test]
fn an_adaptive_limit_starts_at_one_request_and_grows_to_sink_concurrency_while_the_rs_keeps_up() {
    let uids: Vec<&'static str> = vec!["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"];
    let mut w = World::new(config("concurrency = 3"));
    let src = source(&[(T0, uids.clone())]);
    let (sink, dispatch) = (FakeSink::new(), InOrder::default());
    let outcome = w.run_with(&src, &sink, T0 + 120, Scope::Run, &dispatch);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    let limits = dispatch.limits();
    assert_eq!(limits[0], 1, "it starts at one: {limits:?}");
    assert!(limits.windows(2).all(|p| p[1] >= p[0]), "it only grows while the RS keeps up: {limits:?}");
    assert_eq!(limits.last(), Some(&3), "it reached sink.concurrency and no further: {limits:?}");
    assert!(dispatch.most_in_flight() <= 3);
    assert_eq!(sink.sent_uids(), uids);
}

#[test]
fn the_next_run_goes_on_from_half_the_in_flight_limit_the_last_push_left() {
    let mut w = World::new(config("concurrency = 8"));
    let names: Vec<&'static str> = (0..50).map(|n| &*Box::leak(format!("r{n:02}").into_boxed_str())).collect();
    let src = source(&[(T0, names[..40].to_vec()), (T0 + 60, names[40..].to_vec())]);
    let (sink, dispatch) = (FakeSink::new(), InOrder::default());
    assert_eq!(w.ledger.in_flight_limit().unwrap(), None, "no push yet");
    w.run_with(&src, &sink, T0 + 120, Scope::Run, &dispatch);
    assert_eq!(w.ledger.in_flight_limit().unwrap(), Some(8), "it climbed to sink.concurrency: {:?}", dispatch.limits());
    dispatch.starts.borrow_mut().clear();
    let outcome = w.run_with(&src, &sink, T0 + 180, Scope::Run, &dispatch);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(dispatch.limits()[0], 4, "from half of where the last push left it, not from one");
}

#[test]
fn a_stop_records_the_acks_of_the_requests_in_flight_and_starts_no_more() {
    let mut w = World::new(config("concurrency = 3\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b", "c", "d", "e", "f"])]);
    let busy = Verdict::RetryLater {
        reason: "HTTP 503 (Retry-After 60s)".into(),
        retry_after: Some(Duration::from_secs(60)),
        status: Some(503),
    };
    let sink = FakeSink::new().answer("b", vec![Act::Answer(busy)]).answer("c", vec![retry()]);
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    // a, b, c start; a's answer lets d start; b's Retry-After stops the pushes: c and d were in
    // flight, and e never starts.
    assert_eq!(sink.sent_uids(), ["a", "b", "c", "d"], "no request starts after the stop");
    assert!(has(&outcome.failures, "no more pushes this run"), "{:?}", outcome.failures);
    let delivered = |uid: &str| w.count(&format!("SELECT COUNT(*) FROM delivered WHERE uid = '{uid}'"));
    assert_eq!((delivered("a"), delivered("d")), (1, 1), "acknowledged, before the stop and in flight at it");
    assert_eq!((delivered("b"), delivered("c")), (0, 0), "not acknowledged: unknown fate");
    assert_eq!(w.state(T0), Some(FrameState::Pushing));
    // c failed after the stop: it waits as unknown fate and goes again under its key.
    let later = w.run(&src, &sink, T0 + 600, Scope::Run);
    assert_eq!(later.exit_code(), 0, "{:?}", later.failures);
    assert_eq!(sink.sent_uids()[4..], ["b", "c", "e", "f"]);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 6);
    for uid in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(sink.stored_count(uid), 1, "{uid} stored once");
    }
}

#[test]
fn an_acknowledgement_in_flight_when_pushing_stopped_is_recorded() {
    let mut w = World::new(config("concurrency = 4\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b", "c", "d"])]);
    let broken = Verdict::Broken { reason: "HTTP 404: no such endpoint".into() };
    let sink = FakeSink::new().answer("a", vec![Act::Answer(broken)]);
    let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(sink.sent_uids(), ["a", "b", "c", "d"], "all four in flight");
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3, "b, c and d: the RS acknowledged them");
    assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 0);
    assert_eq!(w.state(T0), Some(FrameState::Pushing), "a is not delivered");
}

#[test]
fn requests_in_flight_from_threads_deliver_every_record_once() {
    let uids: Vec<&'static str> = (0..100).map(|i| &*Box::leak(format!("u{i:03}").into_boxed_str())).collect();
    for extra in ["concurrency = 16", "mode = \"batch\"\nbatch_size = 3\nconcurrency = 16"] {
        let mut w = World::new(config(extra));
        let src = source(&[(T0, uids.clone())]);
        let sink = if extra.contains("batch") { FakeSink::batches(3) } else { FakeSink::new() };
        let sink = sink.answer("u007", vec![Act::Lost]).answer("u042", vec![Act::Lost]);
        w.run_with(&src, &sink, T0 + 120, Scope::Run, &Threads::default());
        w.run_with(&src, &sink, T0 + 600, Scope::Run, &Threads::default());
        assert_eq!(w.state(T0), Some(FrameState::Delivered), "{extra}");
        let mut stored = sink.stored.lock().unwrap().clone();
        stored.sort();
        assert_eq!(stored, uids, "{extra}: each record stored once");
    }
}

fn busy_for(secs: u64) -> Act {
    Act::Answer(Verdict::RetryLater {
        reason: format!("HTTP 503 (Retry-After {secs}s)"),
        retry_after: Some(Duration::from_secs(secs)),
        status: Some(503),
    })
}

/// A run on a clock that moves only when the job sleeps; what it slept is `clock.elapsed()`.
fn run_stepping(w: &mut World, src: &FakeSource, sink: &FakeSink, clock: &SteppingClock) -> Outcome {
    *src.now.borrow_mut() = clock.now();
    let plan = crate::cmd::run::make_plan(&w.config, &w.ledger, Scope::Run, clock.now()).unwrap();
    let dispatch = InOrder::default();
    Job::new(&w.config, &mut w.ledger, src, sink, clock).with_dispatch(&dispatch).execute(&plan, true).unwrap()
}

#[test]
fn a_short_retry_after_is_waited_out_within_the_run_and_a_burst_of_them_costs_one_quiet() {
    let mut w = World::new(config("retries = 2\nconcurrency = 4\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b", "c", "d", "e", "f", "g", "h"])]);
    // b, c and d were in flight together when the RS, overloaded, answered each with 503 and
    // Retry-After: 1.
    let sink =
        FakeSink::new().answer("b", vec![busy_for(1)]).answer("c", vec![busy_for(1)]).answer("d", vec![busy_for(1)]);
    let clock = SteppingClock::new(T0 + 120);
    let outcome = run_stepping(&mut w, &src, &sink, &clock);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 8, "every record, in this run");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(
        w.count("SELECT COUNT(*) FROM servers WHERE quiet_until IS NOT NULL"),
        0,
        "no quiet left for later runs"
    );
    // One quiet of 1 s for b; c and d were sent before it ended, and go again at once.
    let slept = clock.elapsed();
    assert_eq!(slept, Duration::from_secs(1), "{slept:?}");
    // (The in-order dispatch sends a request when it finishes: each retry follows its answer.)
    assert_eq!(sink.sent_uids(), ["a", "b", "b", "c", "c", "d", "d", "e", "f", "g", "h"]);
}

#[test]
fn a_request_of_the_burst_that_fails_again_after_the_quiet_pauses_before_its_next_try() {
    let mut w = World::new(config("retries = 2\nconcurrency = 4\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b", "c", "d"])]);
    let sink = FakeSink::new().answer("b", vec![busy_for(1)]).answer("c", vec![busy_for(1), busy_for(1)]);
    let clock = SteppingClock::new(T0 + 120);
    let outcome = run_stepping(&mut w, &src, &sink, &clock);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    // The quiet for b; c, sent before it ended, goes again at once, and after its second
    // failure waits its second attempt's pause.
    assert_eq!(clock.elapsed(), Duration::from_secs(1) + super::backoff::retry_pause(1));
    assert_eq!(sink.sent_uids(), ["a", "b", "b", "c", "c", "c", "d"]);
}

#[test]
fn a_retry_after_too_long_for_the_run_stops_its_pushes_and_is_remembered() {
    for (asked, max_seconds, why) in [(6, 50, "longer than SHORT_QUIET"), (3, 2, "ends after run.max_seconds")] {
        let mut w =
            World::new(config_with("retries = 2\nadaptive = false", "", &format!("max_seconds = {max_seconds}")));
        let src = source(&[(T0, vec!["a", "b"])]);
        let sink = FakeSink::new().answer("a", vec![busy_for(asked)]);
        let clock = SteppingClock::new(T0 + 120);
        let outcome = run_stepping(&mut w, &src, &sink, &clock);
        assert_eq!(outcome.exit_code(), 1, "{why}");
        assert!(has(&outcome.failures, "no more pushes this run"), "{why}: {:?}", outcome.failures);
        assert_eq!(clock.elapsed(), Duration::ZERO, "{why}: not waited out in the run");
        assert_eq!(w.count("SELECT COUNT(*) FROM servers WHERE name = 'sink' AND quiet_until IS NOT NULL"), 1, "{why}");
    }
}

#[test]
fn staged_frames_of_few_records_go_in_one_window_and_each_is_delivered_once_its_answers_are_in() {
    let mut w = World::new(config("concurrency = 4\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c", "d"]), (T0 + 120, vec!["e"])]);
    let (sink, dispatch) = (FakeSink::new(), InOrder::default());
    w.run(&src, &sink, T0 + 240, Scope::Pull);
    let outcome = w.run_with(&src, &sink, T0 + 240, Scope::Push, &dispatch);
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures);
    assert_eq!(*dispatch.windows.borrow(), [5], "one window across the three frames");
    assert_eq!(dispatch.most_in_flight(), 4, "the limit's worth in flight across frame boundaries");
    for start in [T0, T0 + 60, T0 + 120] {
        assert_eq!(w.state(start), Some(FrameState::Delivered), "frame {start}");
    }
    assert_eq!(sink.sent_uids(), ["a", "b", "c", "d", "e"]);
}

#[test]
fn a_stop_in_a_window_across_frames_delivers_the_frames_before_it_and_leaves_the_rest() {
    let mut w = World::new(config("concurrency = 4\nadaptive = false"));
    let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c", "d"]), (T0 + 120, vec!["e"])]);
    let broken = Verdict::Broken { reason: "HTTP 404".into() };
    let (sink, dispatch) = (FakeSink::new().answer("c", vec![Act::Answer(broken)]), InOrder::default());
    w.run(&src, &sink, T0 + 240, Scope::Pull);
    let outcome = w.run_with(&src, &sink, T0 + 240, Scope::Push, &dispatch);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(w.state(T0), Some(FrameState::Delivered), "its answers all came before the stop");
    assert_eq!(w.state(T0 + 60), Some(FrameState::Pushing), "its request for c stopped the pushes");
    assert_ne!(w.state(T0 + 120), Some(FrameState::Delivered), "after the stop: not done this run");
    // d and e were in flight at the stop: their acknowledgements are recorded.
    let delivered = |uid: &str| w.count(&format!("SELECT COUNT(*) FROM delivered WHERE uid = '{uid}'"));
    assert_eq!([delivered("a"), delivered("b"), delivered("c"), delivered("d"), delivered("e")], [1, 1, 0, 1, 1]);
    let later = w.run(&src, &sink, T0 + 900, Scope::Run);
    assert_eq!(later.exit_code(), 0, "{:?}", later.failures);
    for start in [T0, T0 + 60, T0 + 120] {
        assert_eq!(w.state(start), Some(FrameState::Delivered), "frame {start}");
    }
    for uid in ["a", "b", "c", "d", "e"] {
        assert_eq!(sink.stored_count(uid), 1, "{uid} stored once");
    }
}

/// Pins a pipeline stuck for good: windows running across frames looked up the unknown records
/// of the next frames before the requests of the first went, so one failing lookup anywhere
/// held back every record of the window, run after run.
#[test]
fn a_failing_lookup_in_a_later_frame_does_not_hold_back_the_requests_of_the_frame_before() {
    let mut w = World::new(config("ordered = true"));
    let src = source(&[(T0, vec!["a1", "a2"]), (T0 + 60, vec!["b1", "b2"])]);
    // a1 is stored but its answer lost, a2 fails: the pushes stop, and b1 and b2, in the same
    // window, are of unknown fate too.
    let sink = FakeSink::new().answer("a1", vec![Act::Lost]).answer("a2", vec![retry()]);
    w.run(&src, &sink, T0 + 180, Scope::Pull);
    w.run(&src, &sink, T0 + 180, Scope::Push);
    assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 0);
    let mut sink2 = FakeSink { lookup: Some(Lookup::FailingFor("b1")), ..FakeSink::new() };
    sink2.stored = Mutex::new(sink.stored.lock().unwrap().clone());
    let outcome = w.run(&src, &sink2, T0 + 600, Scope::Run);
    assert_eq!(outcome.exit_code(), 1, "b1's lookup failed: {:?}", outcome.failures);
    assert_eq!(sink2.sent_uids(), ["a2"], "a1 was found at the RS; a2 was not, and went before b1 was looked up");
    assert_eq!(w.state(T0), Some(FrameState::Delivered));
    assert_eq!(w.state(T0 + 60), Some(FrameState::Pushing), "its lookup failed: it waits");
    let later = w.run(&src, &FakeSink { lookup: Some(Lookup::Truthful), ..FakeSink::new() }, T0 + 1200, Scope::Run);
    assert_eq!(later.exit_code(), 0, "{:?}", later.failures);
    assert_eq!(w.state(T0 + 60), Some(FrameState::Delivered));
}
