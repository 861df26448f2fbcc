//! The invariants, checked after every simulated run (killed or not) and at the end of a
//! seed. Each check reads only what the run could have changed: the frames of its plan, the
//! dead letters it added, the walks the SS served during it; whole-ledger checks
//! (`PRAGMA integrity_check`, `foreign_key_check`) run every `INTEGRITY_EVERY` runs and at the end.
//!
//! 1. Acknowledged ⇒ stored: every UID in `delivered` is stored at the RS.
//! 2. No doubles: none at an RS that honors keys or has a truthful lookup; elsewhere at most one
//!    per record whose answer was lost, plus `ack_group` + a wave of requests in flight
//!    (`sink.concurrency` batches, one when `sink.ordered`) per killed run.
//! 3. A delivered frame is complete: it holds (stored at the RS or dead-lettered) every record
//!    that the walks framesync committed served; a frame is committed only from a walk whose
//!    last page came whole.
//! 4. Coverage: every SS query covers its whole frame (checked by the SS model as it answers).
//! 5. Exit honesty: a run that created dead letters does not exit 0; a run that exits 0 leaves no
//!    eligible frame undelivered without one of the `ACCEPTED_REASONS`.
//! 6. The ledger: a delivered frame has no staged rows; integrity and foreign keys hold; a run
//!    never ends with exit 3 (the ledger failed) nor panics.
//! 7. Liveness at the end of the calm phase: every frame eligible more than N runs ago is
//!    delivered, every re-check due when the calm phase began is done, and the last run exits 0
//!    — except frames the SS no longer has the history of (the ledger records them failed: refused
//!    with HTTP 400, or failed while the SS had them and still waiting for their retry), and a
//!    fresh frame the SS's clock (within its drift) says is not yet due.
//!    N = (the longest wait: `retry_max` or the longest Retry-After) / 1 min + 3. The calm phase
//!    lasts N + the backlog's drain time + 10 runs, where the drain time is the backlog at its
//!    start (eligible undelivered frames and due re-checks) × (1 + re-checks per frame) / (what
//!    the fresh frames and their re-checks leave of `max_frames`) + 10%, stretched to whole days
//!    by a backfill window (`world.rs`, `Driver::calm`). A drain longer than 4× the schedule is
//!    not waited for: then the backlog must have shrunk, and later frames must be delivered
//!    (later than the latest this machine's clock read before the calm: after it jumped back,
//!    frames past the calm's own horizon may be fault-phase frames, waiting for the window).
//! 8. Dead letters are deserved: each is a record the RS refuses for good (a bad record), one
//!    `sink.map` cannot satisfy, one that crashes the RS, or one of a batch holding such a record
//!    that never got an answer (it may have been stored, so it is dead-lettered whole, under its
//!    key) — never a record refused because the RS was misconfigured.
//! 9. Nothing promised is lost (at the end): every record stamped in a delivered frame whose
//!    re-checks are done is stored or dead-lettered, unless the SS refused that frame's history,
//!    or a lying SS left it out of a committed walk where no client could tell (a page number
//!    past it after a short page, a total that ended the walk before it, an ignored offset;
//!    `ss.rs`, `lie`) and no committed walk served it.
//! 10. What the operator reads agrees with the ledger: after every run that ended, the metrics
//!     file the run wrote (and every `STATUS_EVERY` runs, `status --json`) names the run's exit
//!     code, and counts the dead letters, the records the RS keeps failing, the re-checks given
//!     up, the failing frames and the missing frames as the ledger's own rows do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use framesync::frames::{FrameSize, rfc3339};
use framesync::ledger::Ledger;
use framesync::plan::{Plan, Scope, Step};
use rusqlite::{OptionalExtension, params};

use super::net::Net;
use super::records::Poison;
use super::report::Kind;
use super::scenario::{Bounds, Format, Keys, Lookup, Scenario};

/// Whole-ledger checks run this often (in runs), and at the end.
pub const INTEGRITY_EVERY: usize = 300;
/// `status --json` is checked against the ledger every this many runs (invariant 10).
pub const STATUS_EVERY: usize = 30;

/// Why an eligible frame may stay undelivered after a run that exited 0 (invariant 5).
pub const ACCEPTED_REASONS: &[&str] = &[
    "the plan was full (run.max_frames): the frame waits for a later run",
    "the run ran out of time (run.max_seconds)",
    "an old gap outside run.backfill_window",
    "the frame's next attempt is later, within retry_max or the longest Retry-After (plus any backward clock jump)",
    "the SS asked for quiet (a missing frame) for at most the longest Retry-After (plus any backward clock jump)",
    "the RS asked for quiet (a staged frame) for at most the longest Retry-After (plus any backward clock jump)",
    "the other cron line does it: `pull` leaves staged frames to `push`, `push` leaves missing frames to `pull`",
];

/// Whether the backfill window (minutes of the UTC day, `[from, to)`, wrapping midnight) is
/// open at `t`; always without one.
fn in_window(window: Option<(u32, u32)>, t: i64) -> bool {
    let Some((from, to)) = window else { return true };
    let minute = (t.rem_euclid(86_400) / 60) as u32;
    if from < to { (from..to).contains(&minute) } else { minute >= from || minute < to }
}

/// A dead letter as invariant 8 reads it: uid, reason, status, frame, detail, key.
type DeadLetterRow = (String, String, Option<i64>, i64, String, Option<String>);

/// At most this many undelivered frames are looked at per run for invariant 5.
const MAX_EXPLAINED: usize = 5_000;
/// A feed the RS took nothing from in this long is quiet: a record that crashes the RS, retried
/// alone or beside other such records, is blamed for none of its failures and rightly waits.
const QUIET_FEED: i64 = 15 * 60;

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: u8,
    /// A stable name for the kind of violation (`SIM_TOLERATE` takes these).
    pub tag: &'static str,
    pub detail: String,
    /// The hole (`HOLES` in `tests/simulation.rs`) this violation is traced back to.
    pub hole: Option<char>,
}

impl Violation {
    fn hole(mut self, hole: Option<char>) -> Self {
        self.hole = hole;
        self
    }
}

/// How a simulated run ended.
#[derive(Debug)]
pub enum Ending {
    Exit {
        code: i32,
        failures: Vec<String>,
        out_of_time: bool,
    },
    /// `execute` returned an error: framesync would exit 3.
    LedgerFailed(String),
    Killed(&'static str),
    Panicked(String),
}

/// What the end of the calm phase must have settled: frames eligible before `frames_until`
/// delivered, re-checks due before `rechecks_until` (the calm phase's start: later ones may
/// lag behind a budget the fresh frames and the backlog share) done; `now` is this machine's clock.
pub struct Settled {
    /// When the backlog was too large to drain in the calm phase: from which frame on every
    /// frame must be delivered, and how many undelivered frames (and due re-checks) were
    /// before it when the calm phase began — fewer must be left.
    pub frames_from: Option<(i64, usize)>,
    pub frames_until: i64,
    pub rechecks_until: i64,
    pub now: i64,
}

/// What a run's checks need to know about the ledger before it.
#[derive(Debug, Default)]
pub struct Before {
    /// State and re-check count of the frames the plan pulls or re-checks.
    frames: BTreeMap<i64, (Option<String>, i64)>,
    dead_letters: i64,
}

/// The facts of one run.
pub struct RunFacts<'a> {
    pub config: &'a framesync::config::Config,
    pub run: usize,
    pub scope: Scope,
    pub plan: &'a Plan,
    /// This machine's clock when the run planned, and when it ended.
    pub plan_now: i64,
    pub end_now: i64,
    pub ending: &'a Ending,
    /// This machine's clock was more than `FAR` ahead of true time during the run.
    pub clock_far_ahead: bool,
}

pub struct Checker {
    scenario: Arc<Scenario>,
    /// `sink.max_attempts`: failures that dead-letter a record the RS keeps failing.
    max_attempts: i64,
    size: FrameSize,
    /// Per frame, the records served by the walks framesync committed.
    committed: BTreeMap<i64, BTreeSet<usize>>,
    /// Records a lying SS left out of a walk framesync committed, where no client could tell.
    withheld: BTreeSet<usize>,
    pub killed_runs: u64,
    /// The largest backward jump of this machine's clock so far, in seconds.
    pub jump_back: i64,
    pub records_served: u64,
    go_on: Vec<char>,
    pub ignored: BTreeMap<Kind, u64>,
    /// In the calm phase: runs, and runs whose pulls stopped at a frame the SS's clock said was
    /// not yet due (what a starved re-check or gap is traced back to).
    pub calm: bool,
    calm_runs: u64,
    calm_too_early_stops: u64,
    /// Frames pulled or re-checked while this machine's clock was far ahead (j).
    committed_far_ahead: BTreeSet<i64>,
    /// Of those, frames committed while the SS's clock was ahead too (its Date said closed).
    committed_with_ss_ahead: BTreeSet<i64>,
}

type Checked = Result<(), Violation>;

fn violation(invariant: u8, tag: &'static str, detail: String) -> Violation {
    Violation { invariant, tag, detail, hole: None }
}

/// Waits longer than this (seconds) are a clock that was far ahead, not a backoff.
pub const FAR: i64 = 30 * 86_400;

impl Checker {
    pub fn new(scenario: Arc<Scenario>, max_attempts: u32, go_on: Vec<char>) -> Self {
        let size = FrameSize::new(scenario.size).expect("the scenario's size divides a day");
        Self {
            scenario,
            max_attempts: i64::from(max_attempts),
            size,
            committed: BTreeMap::new(),
            withheld: BTreeSet::new(),
            killed_runs: 0,
            jump_back: 0,
            records_served: 0,
            go_on,
            ignored: BTreeMap::new(),
            calm: false,
            calm_runs: 0,
            calm_too_early_stops: 0,
            committed_far_ahead: BTreeSet::new(),
            committed_with_ss_ahead: BTreeSet::new(),
        }
    }

    /// A violation ends the seed (the driver decides whether it is a known hole), unless it
    /// is of a hole the seed goes on past: then it is only counted.
    fn flag(&mut self, v: Violation) -> Checked {
        if v.hole.is_some_and(|h| self.go_on.contains(&h)) {
            *self.ignored.entry((v.invariant, v.tag, v.hole)).or_default() += 1;
            return Ok(());
        }
        Err(v)
    }

    pub fn before(&self, ledger: &Ledger, plan: &Plan) -> rusqlite::Result<Before> {
        let mut before = Before { dead_letters: max_dead_letter(ledger)?, ..Before::default() };
        for step in &plan.steps {
            if let Step::Pull(start) | Step::Recheck(start) = *step {
                before.frames.insert(start, frame_row(ledger, start)?);
            }
        }
        Ok(before)
    }

    /// Every per-run invariant, cheapest first.
    pub fn after(&mut self, ledger: &Ledger, net: &mut Net, before: &Before, facts: &RunFacts) -> Checked {
        if matches!(facts.ending, Ending::Killed(_)) {
            self.killed_runs += 1;
        }
        if self.calm {
            self.calm_runs += 1;
            self.calm_too_early_stops += u64::from(stopped_too_early(facts.ending));
        }
        self.ending(facts.ending)?;
        self.protocol(net)?;
        self.acknowledged_are_stored(ledger, net, facts.plan)?;
        self.no_doubles(net)?;
        self.walks(ledger, net, before, facts)?;
        self.delivered_frames_are_complete(ledger, net, facts.plan)?;
        let new_letters = self.dead_letters_are_deserved(ledger, net, before.dead_letters)?;
        self.exit_honesty(ledger, facts, new_letters)?;
        self.nothing_staged_in_delivered_frames(ledger)?;
        self.status_agrees(ledger, facts)?;
        if facts.run % INTEGRITY_EVERY == INTEGRITY_EVERY - 1 {
            self.integrity(ledger)?;
        }
        Ok(())
    }

    /// Invariant 10: `status --json` and the metrics file the run wrote agree with the ledger's
    /// rows and with how the run ended. (Their missing frames count up to the real clock's
    /// horizon, as the operator views do: the checker counts to the same horizon.)
    fn status_agrees(&mut self, ledger: &Ledger, facts: &RunFacts) -> Checked {
        let conn = db(ledger);
        let Ending::Exit { code, .. } = facts.ending else { return Ok(()) };
        let count = |query: &str| -> Result<i64, Violation> { conn.query_row(query, [], |r| r.get(0)).map_err(sql) };
        let horizon = count("SELECT horizon FROM horizon")?;
        // `status` reads a day of timeline: every `STATUS_EVERY` runs; the metrics every run.
        let status = if facts.run % STATUS_EVERY == STATUS_EVERY - 1 {
            Some(framesync::cmd::status::json(facts.config, ledger, facts.end_now).map_err(ledger_err)?)
        } else {
            None
        };
        let path = facts.config.run.metrics_file.as_ref().expect("the simulation writes metrics");
        let metrics = std::fs::read_to_string(path)
            .map_err(|e| violation(10, "metrics-unwritten", format!("the run wrote no metrics file: {e}")))?;
        let same_horizon = count("SELECT horizon FROM horizon")? == horizon;
        let command = match facts.scope {
            Scope::Run => "run",
            Scope::Pull => "pull",
            Scope::Push => "push",
        };
        let metric = |name: &str| metric(&metrics, name, command);
        let spans = ledger.delivered_spans(self.scenario.reference, horizon).map_err(ledger_err)?;
        let missing: i64 = framesync::plan::gaps(&spans, self.scenario.reference, horizon)
            .iter()
            .map(|(from, to)| (to - from) / self.scenario.size)
            .sum();
        let figures: [(&str, &str, i64); 4] = [
            ("dead_letters", "framesync_dead_letters", count("SELECT COUNT(*) FROM dead_letters")?),
            ("records_failing", "framesync_records_failing", count("SELECT COUNT(*) FROM staged WHERE attempts > 0")?),
            (
                "rechecks_given_up",
                "framesync_rechecks_given_up",
                count("SELECT COUNT(*) FROM frames WHERE rechecks_given_up > 0")?,
            ),
            (
                "failing_frames",
                "framesync_failing_frames",
                count("SELECT COUNT(*) FROM frames WHERE state <> 'delivered' AND last_error IS NOT NULL")?,
            ),
        ];
        let mut wrong = Vec::new();
        let status = status.unwrap_or(serde_json::Value::Null);
        let last = &status["last_run"];
        if !status.is_null() && (last["command"] != command || last["exit_code"].as_i64() != Some(i64::from(*code))) {
            wrong.push(format!(
                "status's last run is {} exiting {}, not {command} exiting {code}",
                last["command"], last["exit_code"]
            ));
        }
        if metric("framesync_last_run_exit_code") != Some(f64::from(*code)) {
            wrong.push(format!(
                "the metrics say the last {command} exited {:?}, not {code}",
                metric("framesync_last_run_exit_code")
            ));
        }
        for (field, name, rows) in figures {
            if (!status.is_null() && status[field] != rows) || metric(name) != Some(rows as f64) {
                wrong.push(format!("{field}: status {}, metrics {:?}, the ledger {rows}", status[field], metric(name)));
            }
        }
        // The metrics were written a moment before: the real clock may have crossed a frame.
        let in_status = status["lag"]["missing_frames"].as_i64();
        let in_metrics = metric("framesync_missing_frames").map(|m| m as i64);
        let status_wrong = !status.is_null() && in_status != Some(missing);
        if same_horizon && (status_wrong || in_metrics.is_none_or(|m| !(missing - 1..=missing).contains(&m))) {
            wrong.push(format!("missing frames: status {in_status:?}, metrics {in_metrics:?}, the ledger {missing}"));
        }
        if wrong.is_empty() {
            return Ok(());
        }
        self.flag(violation(10, "status-disagrees", wrong.join("; ")))
    }

    /// Invariant 6: framesync neither panicked nor found its ledger unusable.
    fn ending(&mut self, ending: &Ending) -> Checked {
        match ending {
            Ending::LedgerFailed(e) => self.flag(violation(6, "exit-3", format!("the run failed with exit 3: {e}"))),
            Ending::Panicked(e) => self.flag(violation(6, "panic", format!("framesync panicked: {e}"))),
            _ => Ok(()),
        }
    }

    /// Invariant 4 (coverage) and requests the servers should never get.
    fn protocol(&mut self, net: &mut Net) -> Checked {
        for detail in std::mem::take(&mut net.ss.violations) {
            let coverage = detail.contains(" covers ");
            let tag = if coverage { "coverage" } else { "ss-protocol" };
            let s = &self.scenario;
            let last_second =
                coverage && s.bounds == Bounds::Inclusive && s.format == Format::Rfc3339 && !s.whole_seconds;
            self.flag(violation(4, tag, detail).hole(last_second.then_some('h')))?;
        }
        for detail in std::mem::take(&mut net.rs.violations) {
            self.flag(violation(4, "rs-protocol", detail))?;
        }
        Ok(())
    }

    /// Invariant 1, for the frames the run worked on (only they gain acknowledgements).
    fn acknowledged_are_stored(&mut self, ledger: &Ledger, net: &Net, plan: &Plan) -> Checked {
        let conn = db(ledger);
        let mut stmt = conn.prepare_cached("SELECT uid FROM delivered WHERE frame = ?1").map_err(sql)?;
        let mut missing = Vec::new();
        for step in &plan.steps {
            let uids = stmt.query_map([step.start()], |r| r.get::<_, String>(0)).map_err(sql)?;
            for uid in uids {
                let uid = uid.map_err(sql)?;
                if !net.rs.has(&uid) {
                    missing.push((step.start(), uid));
                }
            }
        }
        drop(stmt);
        if let Some((frame, uid)) = missing.first() {
            let detail = format!(
                "{} UIDs recorded as delivered are not stored at the RS, e.g. {uid:?} of frame {}{}",
                missing.len(),
                rfc3339(*frame),
                misled(net, uid).map_or("", |(_, why)| why)
            );
            let hole = misled(net, uid).map(|(hole, _)| hole);
            return self.flag(violation(1, "acknowledged-not-stored", detail).hole(hole));
        }
        Ok(())
    }

    /// Invariant 2.
    fn no_doubles(&mut self, net: &Net) -> Checked {
        let doubles = net.rs.doubles.len() as u64;
        if doubles == 0 {
            return Ok(());
        }
        let (first, first_key, key) = &net.rs.doubles[0];
        if self.scenario.keys != Keys::Ignores || self.scenario.lookup == Lookup::Truthful {
            let detail = format!(
                "UID {first:?} is stored {} times at an RS that {}: first under key {first_key:?}, again under {key:?}",
                net.rs.stored.get(first).copied().unwrap_or(0),
                if self.scenario.keys != Keys::Ignores { "honors keys" } else { "has a truthful lookup" }
            );
            // The record went again under another key, a batch's (a).
            let regrouped = self.scenario.keys != Keys::Ignores
                && first_key != key
                && (first_key.starts_with("batch-") || key.starts_with("batch-"));
            return self.flag(violation(2, "double", detail).hole(regrouped.then_some('a')));
        }
        let bound = self.double_bound(net);
        if doubles > bound {
            let detail = format!("{doubles} doubles exceed the bound {bound} ({})", self.bound_terms(net));
            return self.flag(violation(2, "doubles-over-bound", detail));
        }
        Ok(())
    }

    /// Doubles allowed at an RS that ignores keys and has no truthful lookup: one per record
    /// whose answer was lost, plus per killed run a group of acknowledgements and the requests
    /// of one wave (each a batch).
    pub fn double_bound(&self, net: &Net) -> u64 {
        let unit = self.scenario.batch.unwrap_or(1) as u64;
        net.rs.lost_records + self.killed_runs * (self.scenario.ack_group as u64 + self.in_flight() * unit)
    }

    fn in_flight(&self) -> u64 {
        if self.scenario.ordered { 1 } else { self.scenario.concurrency as u64 }
    }

    pub fn bound_terms(&self, net: &Net) -> String {
        format!(
            "{} records with lost answers + {} killed runs × (ack_group {} + {} in flight × batch {})",
            net.rs.lost_records,
            self.killed_runs,
            self.scenario.ack_group,
            self.in_flight(),
            self.scenario.batch.unwrap_or(1)
        )
    }

    /// Invariant 3, first half: which walks did framesync commit? A pull walk committed if its
    /// frame had no row (or was missing) before the run and is staged or delivered after it; a
    /// re-check walk committed if the frame's re-check count went up (or its row was pruned).
    fn walks(&mut self, ledger: &Ledger, net: &mut Net, before: &Before, facts: &RunFacts) -> Checked {
        let walks = net.ss.take_walks(facts.run);
        let mut last: BTreeMap<i64, &super::ss::Walk> = BTreeMap::new();
        for walk in &walks {
            self.records_served += walk.served.len() as u64;
            if !before.frames.contains_key(&walk.frame) {
                let detail = format!("frame {} was queried but the plan did not name it", rfc3339(walk.frame));
                self.flag(violation(3, "unplanned-pull", detail))?;
            }
            last.insert(walk.frame, walk);
        }
        for (frame, walk) in last {
            let Some((state, rechecks)) = before.frames.get(&frame) else { continue };
            let (after, after_rechecks) = frame_row(ledger, frame).map_err(sql)?;
            let pulled = matches!(state.as_deref(), None | Some("missing"))
                && matches!(after.as_deref(), Some("pulled" | "pushing" | "delivered"));
            // A frame re-checked for the last time may be pruned in the same run (its row gone).
            let rechecked = state.as_deref() == Some("delivered") && (after_rechecks > *rechecks || after.is_none());
            if !(pulled || rechecked) {
                continue;
            }
            if !walk.complete {
                let detail = format!(
                    "frame {} was committed from a walk whose last page never came whole ({} pages)",
                    rfc3339(frame),
                    walk.pages
                );
                self.flag(violation(3, "incomplete-walk-committed", detail))?;
            }
            self.committed.entry(frame).or_default().extend(walk.served.iter().copied());
            self.withheld.extend(walk.withheld.iter().copied());
            net.trace(|| {
                format!(
                    "  committed: walk {} of frame {} ({}, first page at {}, {} pages, {} records served)",
                    walk.id,
                    rfc3339(frame),
                    if pulled { "pull" } else { "re-check" },
                    framesync::frames::rfc3339_ms(walk.first_page_ms),
                    walk.pages,
                    walk.served.len()
                )
            });
            if facts.clock_far_ahead {
                self.committed_far_ahead.insert(frame);
                if net.time.ss_jump > 0 {
                    self.committed_with_ss_ahead.insert(frame);
                }
            }
        }
        Ok(())
    }

    /// Invariant 3, second half: a delivered frame (or one pruned this run) holds every
    /// record its committed walks served.
    fn delivered_frames_are_complete(&mut self, ledger: &Ledger, net: &Net, plan: &Plan) -> Checked {
        for step in &plan.steps {
            let frame = step.start();
            let Some(served) = self.committed.get(&frame) else { continue };
            let (state, _) = frame_row(ledger, frame).map_err(sql)?;
            if !matches!(state.as_deref(), Some("delivered") | None) {
                continue;
            }
            for &i in served {
                let uid = &net.catalog.records[i].uid;
                if !net.rs.has(uid) && !is_dead_letter(ledger, uid)? {
                    let detail = format!(
                        "frame {} is delivered but record {uid:?} (stamped {}) that its walk served is neither stored nor dead-lettered{}",
                        rfc3339(frame),
                        framesync::frames::rfc3339_ms(net.catalog.records[i].stamp_ms),
                        misled(net, uid).map_or("", |(_, why)| why)
                    );
                    let hole = misled(net, uid).map(|(hole, _)| hole);
                    return self.flag(violation(3, "delivered-frame-incomplete", detail).hole(hole));
                }
            }
        }
        Ok(())
    }

    /// Invariant 8; returns how many dead letters the run added.
    fn dead_letters_are_deserved(&mut self, ledger: &Ledger, net: &Net, since: i64) -> Result<i64, Violation> {
        let conn = db(ledger);
        let letters: Vec<DeadLetterRow> = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT uid, reason, status, frame, detail, key FROM dead_letters WHERE id > ?1 ORDER BY id",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)?
        };
        // Batches dead-lettered whole: one that never got an answer may have been stored, so its
        // records are not split under other keys. It is deserved if one of them crashes the RS.
        let crashing_batch = |key: &Option<String>| -> Result<bool, Violation> {
            let Some(key) = key.as_ref().filter(|k| k.starts_with("batch-")) else { return Ok(false) };
            let mut stmt = conn.prepare_cached("SELECT uid FROM dead_letters WHERE key = ?1").map_err(sql)?;
            let uids: Vec<String> =
                stmt.query_map([key], |r| r.get(0)).map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?;
            Ok(uids.iter().any(|u| net.catalog.by_uid(u).is_some_and(|r| r.poison == Poison::Crash)))
        };
        for (uid, reason, status, frame, why, key) in &letters {
            let rec = net.catalog.by_uid(uid);
            let deserved = match (reason.as_str(), status) {
                ("invalid", _) => rec.is_some_and(|r| !r.has_amount),
                ("rejected", Some(s)) => {
                    *s == i64::from(self.scenario.poison_status) && rec.is_some_and(|r| r.poison == Poison::Bad)
                }
                // The RS failed it sink.max_attempts times while taking others: it crashes the RS
                // (its last failure may have met another fault: the status is the last one's).
                ("exhausted", _) => rec.is_some_and(|r| r.poison == Poison::Crash) || crashing_batch(key)?,
                _ => false,
            };
            if !deserved {
                let detail = format!(
                    "record {uid:?} of frame {} was dead-lettered ({reason}, HTTP {}: {why}) though the RS would take it",
                    rfc3339(*frame),
                    status.map_or("-".into(), |s| s.to_string())
                );
                let misconfigured = matches!(status, Some(401 | 404));
                self.flag(violation(8, "undeserved-dead-letter", detail).hole(misconfigured.then_some('c')))?;
            }
        }
        Ok(letters.len() as i64)
    }

    /// Invariant 5.
    fn exit_honesty(&mut self, ledger: &Ledger, facts: &RunFacts, new_letters: i64) -> Checked {
        let Ending::Exit { code: 0, out_of_time, .. } = facts.ending else { return Ok(()) };
        if new_letters > 0 {
            let detail = format!("the run created {new_letters} dead letters and exited 0");
            self.flag(violation(5, "dead-letters-exit-0", detail).hole(Some('c')))?;
        }
        if *out_of_time {
            return Ok(());
        }
        let unexplained = self.unexplained_undelivered(ledger, facts)?;
        if let Some((frame, what)) = unexplained {
            let detail = format!(
                "the run exited 0 but left frame {} undelivered with no accepted reason: {what}",
                rfc3339(frame)
            );
            let far = far_ahead(ledger, frame, facts.end_now).map_err(sql)?;
            return self.flag(violation(5, "exit-0-unexplained", detail).hole(far.then_some('e')));
        }
        Ok(())
    }

    /// The first eligible undelivered frame no accepted reason explains, with what the ledger says of it.
    fn unexplained_undelivered(&self, ledger: &Ledger, facts: &RunFacts) -> Result<Option<(i64, String)>, Violation> {
        let plan = facts.plan;
        let reference = self.scenario.reference;
        let horizon = plan.horizon;
        if horizon <= reference {
            return Ok(None);
        }
        let full = plan.steps.len() >= self.scenario.max_frames;
        let fresh_from = self.size.align_down(horizon - self.scenario.fresh).max(reference);
        let planned: BTreeSet<i64> = plan.steps.iter().map(|s| s.start()).collect();
        let spans = ledger.delivered_spans(reference, horizon).map_err(ledger_err)?;
        let open = ledger.open_frames().map_err(ledger_err)?;
        let mut candidates: Vec<i64> =
            open.iter().map(|f| f.start).filter(|s| (reference..horizon).contains(s)).collect();
        for (from, to) in framesync::plan::gaps(&spans, reference, horizon) {
            let from = if full || plan.outside_window { from.max(fresh_from) } else { from };
            candidates.extend((from..to).step_by(self.scenario.size as usize).take(MAX_EXPLAINED));
            if candidates.len() > MAX_EXPLAINED {
                break;
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let quiet = quiet(ledger).map_err(sql)?;
        for frame in candidates {
            if self.explained(ledger, facts, frame, full, fresh_from, &planned, &quiet).map_err(sql)?.is_some() {
                continue;
            }
            let row = describe_frame(ledger, frame).map_err(sql)?;
            return Ok(Some((frame, row)));
        }
        Ok(None)
    }

    /// Which of the `ACCEPTED_REASONS` explains an undelivered frame after an exit-0 run.
    #[allow(clippy::too_many_arguments)]
    fn explained(
        &self,
        ledger: &Ledger,
        facts: &RunFacts,
        frame: i64,
        full: bool,
        fresh_from: i64,
        planned: &BTreeSet<i64>,
        quiet: &BTreeMap<String, (i64, i64)>,
    ) -> rusqlite::Result<Option<&'static str>> {
        let conn = db(ledger);
        let (state, next_attempt): (Option<String>, Option<i64>) = conn
            .prepare_cached("SELECT state, next_attempt FROM frames WHERE start = ?1")?
            .query_row([frame], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((None, None));
        let staged = matches!(state.as_deref(), Some("pulled" | "pushing"));
        let longest = self.scenario.longest_wait() + self.jump_back + 5;
        let plausible = |until: i64| until - facts.end_now <= longest;
        let quiet_for =
            |server: &str| quiet.get(server).is_some_and(|&(until, _)| until > facts.plan_now && plausible(until));
        let reasons = [
            full && !planned.contains(&frame),
            facts.plan.outside_window && frame < fresh_from && !planned.contains(&frame),
            next_attempt.is_some_and(|t| t > facts.plan_now && plausible(t)),
            !staged && quiet_for("source"),
            staged && quiet_for("sink"),
            (staged && facts.scope == Scope::Pull) || (!staged && facts.scope == Scope::Push),
        ];
        // ACCEPTED_REASONS[1] (out of time) is checked before any frame is looked at.
        let index = [0, 2, 3, 4, 5, 6];
        Ok(reasons.iter().zip(index).find(|(holds, _)| **holds).map(|(_, i)| ACCEPTED_REASONS[i]))
    }

    /// A stamp in the last second's fraction, which an inclusive rfc3339 `{last}` at whole
    /// seconds leaves out (h).
    fn last_second(&self, stamp_ms: i64) -> Option<char> {
        let s = &self.scenario;
        let inclusive_seconds = s.bounds == Bounds::Inclusive && s.format == Format::Rfc3339;
        let in_fraction = stamp_ms.rem_euclid(s.size * 1000) > (s.size - 1) * 1000;
        (inclusive_seconds && in_fraction).then_some('h')
    }

    /// Invariant 6, per run: no delivered frame keeps staged records.
    fn nothing_staged_in_delivered_frames(&mut self, ledger: &Ledger) -> Checked {
        let conn = db(ledger);
        let frame: Option<i64> = conn
            .prepare_cached(
                // CROSS JOIN keeps this order: the few staged rows, then their frames.
                "SELECT s.frame FROM staged s CROSS JOIN frames f ON f.start = s.frame WHERE f.state = 'delivered' LIMIT 1",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(sql)?;
        match frame {
            Some(frame) => self.flag(violation(
                6,
                "staged-in-delivered-frame",
                format!("frame {} is delivered but keeps staged records", rfc3339(frame)),
            )),
            None => Ok(()),
        }
    }

    /// Invariant 6, whole ledger.
    pub fn integrity(&mut self, ledger: &Ledger) -> Checked {
        let conn = db(ledger);
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(sql)?;
        if ok != "ok" {
            self.flag(violation(6, "integrity", format!("PRAGMA integrity_check: {ok}")))?;
        }
        let broken: Option<String> =
            conn.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional().map_err(sql)?;
        if let Some(table) = broken {
            self.flag(violation(6, "foreign-keys", format!("PRAGMA foreign_key_check: a row of {table}")))?;
        }
        Ok(())
    }

    /// Invariant 7: after the calm phase, every frame eligible before `settled_until` is
    /// delivered and none of their re-checks is overdue, except frames whose history the SS
    /// refused; and the last run exited 0 unless only such refusals failed it.
    pub fn liveness(&mut self, ledger: &Ledger, net: &Net, settled: &Settled, last: &Ending) -> Checked {
        let (settled_until, now) = (settled.frames_until, settled.now);
        if let Some((from, before)) = settled.frames_from {
            self.backlog_shrank(ledger, net, from, before, now)?;
        }
        let reference = settled.frames_from.map_or(self.scenario.reference, |(from, _)| from);
        if settled_until > reference {
            let spans = ledger.delivered_spans(reference, settled_until).map_err(ledger_err)?;
            let mut undelivered: Vec<i64> = ledger
                .open_frames()
                .map_err(ledger_err)?
                .iter()
                .map(|f| f.start)
                .filter(|s| (reference..settled_until).contains(s))
                .collect();
            for (from, to) in framesync::plan::gaps(&spans, reference, settled_until) {
                undelivered.extend((from..to).step_by(self.scenario.size as usize).take(MAX_EXPLAINED));
            }
            undelivered.sort_unstable();
            for frame in undelivered {
                if !self.history_refused(ledger, net, frame, now)? && !self.poison_waits(ledger, net, frame, now)? {
                    let detail = format!(
                        "after the calm phase frame {} is still undelivered: {}",
                        rfc3339(frame),
                        describe_frame(ledger, frame).map_err(sql)?
                    );
                    let hole = self.why_stuck(ledger, net, frame, now).map_err(sql)?;
                    return self.flag(violation(7, "not-delivered-after-calm", detail).hole(hole));
                }
            }
        }
        self.rechecks_are_not_overdue(ledger, net, settled.rechecks_until, now)?;
        self.last_run_succeeded(net, last)
    }

    /// The frame holds a record that crashes the RS and is on its way to a dead letter, or
    /// rightly waits: pulled recently enough that its `sink.max_attempts` failures, each
    /// after the frame's backoff (at most `retry_max`), may not all have come yet; or nothing
    /// blames it yet — the RS took no other request in the `QUIET_FEED` before now, or, since
    /// the record last failed, took none, failed a newcomer or let a failed unit through (so
    /// an RS that fails everything, or fails at random, keeps it failing, exit 1 every run);
    /// or the retry whose failure will count may not have come yet.
    fn poison_waits(&self, ledger: &Ledger, net: &Net, frame: i64, now: i64) -> Result<bool, Violation> {
        let conn = db(ledger);
        let rows: Vec<(Option<i64>, String, Option<i64>)> = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT f.pulled_at, s.uid, s.failed_at FROM frames f JOIN staged s ON s.frame = f.start
                     WHERE f.start = ?1",
                )
                .map_err(sql)?;
            let rows = stmt.query_map([frame], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)?
        };
        let Some(&(Some(pulled_at), _, _)) = rows.first() else { return Ok(false) };
        let mut crashing =
            rows.iter().filter(|(_, uid, _)| net.catalog.by_uid(uid).is_some_and(|r| r.poison == Poison::Crash));
        let Some(first) = crashing.next() else { return Ok(false) };
        let failed_at = crashing.fold(first.2, |last, row| last.max(row.2));
        let recent = now < pulled_at + 2 * self.max_attempts * (self.scenario.retry_max + 60);
        let acked_at: Option<i64> = conn
            .query_row("SELECT acked_at FROM servers WHERE name = 'sink' AND acked_at <= ?1", [now], |r| r.get(0))
            .optional()
            .map_err(sql)?
            .flatten();
        let quiet = match (acked_at, failed_at) {
            (None, _) => true,
            (Some(acked), _) if acked < now - QUIET_FEED => true,
            (Some(_), Some(failed)) => !ledger.sink_fails_only_the_same(failed, now).map_err(ledger_err)?,
            (Some(_), None) => false,
        };
        // Its next failure counts: it is due at most its backoff after the RS took the other.
        let retry_due = acked_at.is_some_and(|acked| now > acked + 2 * (self.scenario.retry_max + 60));
        Ok(recent || quiet || !retry_due)
    }

    /// The first frame the SS still keeps at `now` (its history limit is in true time: a
    /// minute's slack); every frame without a limit.
    fn kept_from(&self, now: i64) -> i64 {
        let size = self.scenario.size;
        self.scenario.history.map_or(i64::MIN, |h| (now - size - h - 60 + size - 1).div_euclid(size) * size)
    }

    /// Which known hole keeps a frame undelivered: a wait a clock far ahead set (e), a record
    /// that crashes the RS (f), or re-checks the SS refuses starving the old gaps (d).
    fn why_stuck(&self, ledger: &Ledger, net: &Net, frame: i64, now: i64) -> rusqlite::Result<Option<char>> {
        let conn = db(ledger);
        if far_ahead(ledger, frame, now)? {
            return Ok(Some('e'));
        }
        // The frame holds a record that crashes the RS, or frames that do take the budget.
        let staged: Vec<String> = {
            let mut stmt = conn.prepare_cached("SELECT uid FROM staged")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if staged.iter().any(|u| net.catalog.by_uid(u).is_some_and(|r| r.poison == Poison::Crash)) {
            // Answered item by item, its failures were reset under every new key (k).
            return Ok(Some(if self.scenario.shapes.items { 'k' } else { 'f' }));
        }
        if let Some(hole) = self.starved_by_too_early() {
            return Ok(Some(hole));
        }
        let attempted: Option<String> = conn
            .query_row("SELECT COALESCE(last_error, '') FROM frames WHERE start = ?1", [frame], |r| r.get(0))
            .optional()?;
        let starved = !net.ss.refused_history.is_empty();
        Ok((starved && attempted.is_none_or(|e| !e.contains("HTTP 400"))).then_some('d'))
    }

    /// (i): a tenth or more of the calm runs stopped pulling at their freshest frame, which the
    /// SS's clock, a little behind this machine's, said was not yet due — so what comes after it
    /// in the plan (re-checks, old gaps) did not run, and the budget's spare quarter was lost.
    fn starved_by_too_early(&self) -> Option<char> {
        (self.calm_runs > 0 && self.calm_too_early_stops * 10 >= self.calm_runs).then_some('i')
    }

    /// A backlog too large to drain in the calm phase at least shrank — where the backfill
    /// window was open for some of it (old gaps are pulled only then). Frames whose history the
    /// SS refuses can never be delivered: neither count is of them.
    fn backlog_shrank(&mut self, ledger: &Ledger, net: &Net, until: i64, before: usize, now: i64) -> Checked {
        // Frames the SS no longer keeps (framesync reached them too late) are not left either.
        let from = self.kept_from(now).max(self.scenario.reference);
        let left = if from < until { undelivered(ledger, net, from, until, self.scenario.size)? } else { 0 };
        let calm_from = until + self.scenario.delay + self.scenario.size;
        let open_runs = (calm_from..now).step_by(60).filter(|&t| in_window(self.scenario.backfill_window, t)).count();
        if before > 0 && left >= before && open_runs >= 10 {
            let detail = format!(
                "the backlog did not shrink in the calm phase: {before} frames then, {left} now (besides those whose history the SS refused)"
            );
            // Frames the SS refuses for good stop the run's pulls before the rest (d).
            let hole = (!net.ss.refused_history.is_empty()).then_some('d');
            return self.flag(violation(7, "backlog-stuck", detail).hole(hole));
        }
        Ok(())
    }

    fn rechecks_are_not_overdue(&mut self, ledger: &Ledger, net: &Net, due_before: i64, now: i64) -> Checked {
        let conn = db(ledger);
        let overdue: Vec<i64> = {
            let mut stmt = conn
                .prepare("SELECT start FROM frames WHERE state = 'delivered' AND next_recheck < ?1 ORDER BY start")
                .map_err(sql)?;
            let rows = stmt.query_map([due_before], |r| r.get(0)).map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)?
        };
        for frame in overdue {
            // The SS refused it, or no longer keeps it: a re-check would be refused, then given up.
            if !net.ss.refused_history.contains(&frame) && frame >= self.kept_from(now) {
                let detail = format!(
                    "frame {}'s re-check is overdue after the calm phase ({} of {} calm runs stopped pulling at a frame the SS's clock said was not yet due)",
                    rfc3339(frame),
                    self.calm_too_early_stops,
                    self.calm_runs
                );
                // Re-checks the SS refuses stay due and stop the run's pulls: the others starve (d).
                let refused = (!net.ss.refused_history.is_empty()).then_some('d');
                let hole = self.starved_by_too_early().or(refused);
                return self.flag(violation(7, "recheck-overdue", detail).hole(hole));
            }
        }
        Ok(())
    }

    fn last_run_succeeded(&mut self, net: &Net, last: &Ending) -> Checked {
        let Ending::Exit { code, failures, .. } = last else { return Ok(()) };
        // The SS refusing a frame's history, or its clock (within its drift) saying a frame
        // this machine's clock finds eligible is not yet: framesync rightly fails the pull.
        // Dead letters (each checked by invariant 8) make a run exit 1 by design, and so does a
        // lookup that cannot say "absent" when the run needed it, or a record that crashes the
        // RS until it is dead-lettered.
        let explained = |f: &String| {
            (f.contains("HTTP 400") && !net.ss.refused_history.is_empty())
                || f.contains("too early for this frame")
                || (f.contains("fix the clock that is wrong") && self.scenario.date_header)
                || f.contains("dead-lettered this run")
                || (f.contains("a UID that cannot exist") && self.scenario.lookup_lies())
                || ((f.contains("HTTP 500") || f.contains("item status 500")) && self.scenario.crash_rate > 0.0)
        };
        if *code != 0 && !failures.iter().all(explained) {
            let detail = format!("the last run of the calm phase exited {code}: {}", failures.join("; "));
            let crash = self.scenario.crash_rate > 0.0 && failures.iter().any(|f| f.contains("HTTP 500"));
            let item_crash = self.scenario.crash_rate > 0.0 && failures.iter().any(|f| f.contains("item status 500"));
            let hole = if item_crash { Some('k') } else { crash.then_some('f') };
            return self.flag(violation(7, "last-run-failed", detail).hole(hole));
        }
        Ok(())
    }

    /// The SS no longer keeps this frame's history, and the ledger records the frame failed.
    fn history_refused(&self, ledger: &Ledger, net: &Net, frame: i64, now: i64) -> Result<bool, Violation> {
        let conn = db(ledger);
        // The SS refused it, or no longer keeps it (its limit is in true time: a minute's slack).
        let gone = frame < self.kept_from(now);
        if !net.ss.refused_history.contains(&frame) && !gone {
            return Ok(false);
        }
        let error: Option<String> = conn
            .query_row("SELECT last_error FROM frames WHERE start = ?1", [frame], |r| r.get(0))
            .optional()
            .map_err(sql)?
            .flatten();
        // Refused with HTTP 400, or failed otherwise while the SS still had it and retried
        // (the failure on its row) behind a backlog of such frames: the SS no longer keeps it.
        if error.is_some() {
            return Ok(true);
        }
        // Never tried, no longer kept, and waiting behind older frames the SS refused: the old
        // gaps are walked oldest first, one refusal at a time.
        let behind_refused: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM frames WHERE start < ?1 AND last_error LIKE '%HTTP 400%')",
                [frame],
                |r| r.get(0),
            )
            .map_err(sql)?;
        Ok(gone && behind_refused)
    }

    /// Invariant 9: every record stamped in a delivered frame whose re-checks are done is
    /// stored or dead-lettered, unless the SS refused the frame's history.
    pub fn nothing_promised_is_lost(&mut self, ledger: &Ledger, net: &Net, until: i64) -> Checked {
        let conn = db(ledger);
        let reference = self.scenario.reference;
        let spans = ledger.delivered_spans(reference, until).map_err(ledger_err)?;
        let pending: BTreeSet<i64> = {
            let mut stmt = conn
                .prepare("SELECT start FROM frames WHERE state <> 'delivered' OR next_recheck IS NOT NULL")
                .map_err(sql)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)?
        };
        for (from, to) in spans {
            for i in net.catalog.stamped(from.max(reference) * 1000, to.min(until) * 1000) {
                let rec = &net.catalog.records[i];
                let frame = self.size.align_down(rec.stamp_ms.div_euclid(1000));
                if pending.contains(&frame) || net.ss.refused_history.contains(&frame) || net.rs.has(&rec.uid) {
                    continue;
                }
                // A lying SS left it out of a walk framesync committed, and no committed walk
                // served it: the SS never gave it (invariant 3 holds framesync to what it did).
                let served = self.committed.get(&frame).is_some_and(|c| c.contains(&i));
                if self.withheld.contains(&i) && !served {
                    continue;
                }
                // A frame pulled by a clock far ahead from an SS that sends no Date header, or
                // whose own clock was ahead too: nothing told framesync it was early, which is
                // outside the promise (README).
                let misled_by_clocks = !self.scenario.date_header || self.committed_with_ss_ahead.contains(&frame);
                if self.committed_far_ahead.contains(&frame) && misled_by_clocks {
                    continue;
                }
                if !is_dead_letter(ledger, &rec.uid)? {
                    let detail = format!(
                        "record {:?} stamped {} (visible {}) of delivered frame {} is neither stored nor dead-lettered{}",
                        rec.uid,
                        framesync::frames::rfc3339_ms(rec.stamp_ms),
                        framesync::frames::rfc3339_ms(rec.visible_ms),
                        rfc3339(frame),
                        misled(net, &rec.uid).map_or("", |(_, why)| why)
                    );
                    let early = self.committed_far_ahead.contains(&frame).then_some('j');
                    let hole = misled(net, &rec.uid).map(|(hole, _)| hole).or(self.last_second(rec.stamp_ms)).or(early);
                    return self.flag(violation(9, "promised-record-lost", detail).hole(hole));
                }
            }
        }
        Ok(())
    }
}

/// A sample's value in a Prometheus text file: the one of `command` for per-command series.
fn metric(text: &str, name: &str, command: &str) -> Option<f64> {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .find(|line| !line.contains("command=") || line.contains(&format!("command=\"{command}\"")))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Frames from `reference` to `until` not delivered, besides those whose history the SS refuses.
pub fn undelivered(ledger: &Ledger, net: &Net, reference: i64, until: i64, size: i64) -> Result<usize, Violation> {
    let spans = ledger.delivered_spans(reference, until).map_err(ledger_err)?;
    let frames = framesync::plan::gaps(&spans, reference, until)
        .iter()
        .map(|&(from, to)| ((to - from) / size) as usize - net.ss.refused_history.range(from..to).count())
        .sum();
    Ok(frames)
}

/// A record the RS misled framesync about: a lookup lied (b), or its POST was redirected (g).
fn misled(net: &Net, uid: &str) -> Option<(char, &'static str)> {
    if net.rs.lied_about.contains(uid) {
        Some(('b', " (a lookup answered 200 with an HTML page for it)"))
    } else if net.rs.redirected.contains(uid) {
        Some(('g', " (the RS answered its request with a redirect to a login page)"))
    } else {
        None
    }
}

/// The frame's next attempt, or a server's quiet, is more than `FAR` ahead of `now`.
fn far_ahead(ledger: &Ledger, frame: i64, now: i64) -> rusqlite::Result<bool> {
    let conn = db(ledger);
    let next: Option<i64> =
        conn.query_row("SELECT next_attempt FROM frames WHERE start = ?1", [frame], |r| r.get(0)).optional()?.flatten();
    let quiet = quiet(ledger)?;
    Ok(next.is_some_and(|t| t > now + FAR) || quiet.values().any(|&(until, _)| until > now + FAR))
}

/// The run's pulls stopped at a frame the SS's clock said was not yet due.
fn stopped_too_early(ending: &Ending) -> bool {
    let Ending::Exit { failures, .. } = ending else { return false };
    failures.iter().any(|f| f.contains("too early for this frame") && f.contains("no more pulls this run"))
}

fn frame_row(ledger: &Ledger, start: i64) -> rusqlite::Result<(Option<String>, i64)> {
    let conn = db(ledger);
    Ok(conn
        .prepare_cached("SELECT state, rechecks FROM frames WHERE start = ?1")?
        .query_row([start], |r| Ok((Some(r.get(0)?), r.get(1)?)))
        .optional()?
        .unwrap_or((None, 0)))
}

fn max_dead_letter(ledger: &Ledger) -> rusqlite::Result<i64> {
    let conn = db(ledger);
    conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM dead_letters")?.query_row([], |r| r.get(0))
}

fn is_dead_letter(ledger: &Ledger, uid: &str) -> Result<bool, Violation> {
    let conn = db(ledger);
    conn.prepare_cached("SELECT 1 FROM dead_letters WHERE uid = ?1").and_then(|mut s| s.exists([uid])).map_err(sql)
}

/// The servers' quiet, by name: (until, set at).
fn quiet(ledger: &Ledger) -> rusqlite::Result<BTreeMap<String, (i64, i64)>> {
    let conn = db(ledger);
    let mut stmt =
        conn.prepare_cached("SELECT name, quiet_until, updated_at FROM servers WHERE quiet_until IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    rows.collect()
}

/// What the ledger says of a frame, for a violation's message.
fn describe_frame(ledger: &Ledger, frame: i64) -> rusqlite::Result<String> {
    let conn = db(ledger);
    let row: Option<(String, i64, Option<String>, Option<i64>)> = conn
        .query_row(
            "SELECT state, attempts, last_error, next_attempt FROM frames WHERE start = ?1",
            params![frame],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let quiet = quiet(ledger)?;
    let quiet: Vec<String> =
        quiet.iter().map(|(n, (until, _))| format!("{n} quiet until {}", rfc3339(*until))).collect();
    Ok(match row {
        None => format!("no frame row (never attempted); {}", quiet.join(", ")),
        Some((state, attempts, error, next)) => format!(
            "state {state}, {attempts} attempts, next attempt {}, last error {}; {}",
            next.map_or("-".into(), rfc3339),
            error.unwrap_or_else(|| "-".into()),
            quiet.join(", ")
        ),
    })
}

/// A query the checker itself could not run: reported as a ledger failure.
fn sql(e: rusqlite::Error) -> Violation {
    violation(6, "checker-query", format!("the checker's query failed: {e}"))
}

/// The ledger failed under a check: framesync would exit 3 on it too.
pub fn ledger_err(e: anyhow::Error) -> Violation {
    violation(6, "exit-3", format!("the ledger failed: {e:#}"))
}

/// A connection of its own on the ledger's file, for the checks' reads: what a run committed.
/// The checks' own connection to the ledger, as another process would read it: one per thread
/// and ledger file, kept between checks (opening one per check costs more than the checks).
fn db(ledger: &Ledger) -> std::rc::Rc<rusqlite::Connection> {
    thread_local! {
        static OPEN: std::cell::RefCell<Option<(std::path::PathBuf, std::rc::Rc<rusqlite::Connection>)>> =
            const { std::cell::RefCell::new(None) };
    }
    OPEN.with_borrow_mut(|open| match open {
        Some((path, conn)) if path == ledger.path() => conn.clone(),
        _ => {
            let conn = rusqlite::Connection::open(ledger.path()).expect("the ledger opens for the checks");
            let conn = std::rc::Rc::new(conn);
            *open = Some((ledger.path().to_path_buf(), conn.clone()));
            conn
        }
    })
}
