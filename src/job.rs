//! The work of one run: push what is staged, pull what is missing, push it, within the budget.
//! Given a plan, the ledger, the two clients and a clock, it is tested without sockets. Every
//! failure is recorded on its frame (error, attempts, next attempt) and in the outcome, so
//! the exit code says whether all attempted work succeeded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::Config;
use crate::frames::{Epoch, Frame};
use crate::ledger::{DeadLetter, Ledger, Pending, RunFigures};
use crate::plan::{Plan, Step};
use crate::sink::{Outgoing, Sink, Verdict};
use crate::source::{PullError, Source};

/// The time of day, injected so tests can move it.
pub trait Clock {
    fn now(&self) -> Epoch;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Epoch {
        chrono::Utc::now().timestamp()
    }
}

/// How a run ended: its figures and the failures recorded for later runs.
#[derive(Debug, Default)]
pub struct Outcome {
    pub figures: RunFigures,
    pub failures: Vec<String>,
    /// The run stopped at `max_seconds` with planned work left.
    pub out_of_time: bool,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        if self.failures.is_empty() { 0 } else { 1 }
    }
}

/// Records staged from 'sent_through' on are marked as possibly sent in windows of this size:
/// one ledger write per window instead of one per request.
const SEND_WINDOW: usize = 256;
/// Warn when the SS clock differs from ours by more than this.
const SKEW_WARNING: i64 = 5;

pub struct Job<'a> {
    config: &'a Config,
    ledger: &'a mut Ledger,
    source: &'a dyn Source,
    sink: &'a dyn Sink,
    clock: &'a dyn Clock,
    deadline: Instant,
    outcome: Outcome,
    source_stopped: bool,
    sink_stopped: bool,
    pull_failures_in_a_row: u32,
}

impl<'a> Job<'a> {
    pub fn new(
        config: &'a Config,
        ledger: &'a mut Ledger,
        source: &'a dyn Source,
        sink: &'a dyn Sink,
        clock: &'a dyn Clock,
    ) -> Self {
        Self {
            config,
            ledger,
            source,
            sink,
            clock,
            deadline: Instant::now() + config.run.max_seconds,
            outcome: Outcome::default(),
            source_stopped: false,
            sink_stopped: false,
            pull_failures_in_a_row: 0,
        }
    }

    /// Carries out the plan in order; `push_after_pull` is false for the `pull` command.
    pub fn execute(mut self, plan: &Plan, push_after_pull: bool) -> Result<Outcome> {
        for (done, step) in plan.steps.iter().enumerate() {
            if self.out_of_time() {
                log::info!("max_seconds reached; {} planned frames are left for the next run", plan.steps.len() - done);
                break;
            }
            match *step {
                Step::Push(start) if !self.sink_stopped => {
                    self.push(self.frame(start))?;
                }
                Step::Pull(start) if !self.source_stopped => {
                    let frame = self.frame(start);
                    if self.pull(frame)? && push_after_pull && !self.sink_stopped {
                        self.push(frame)?;
                    }
                }
                _ => {}
            }
        }
        Ok(self.outcome)
    }

    fn frame(&self, start: Epoch) -> Frame {
        self.config.frames.size.frame_at(start)
    }

    fn out_of_time(&mut self) -> bool {
        let over = Instant::now() >= self.deadline;
        self.outcome.out_of_time |= over;
        over
    }

    fn fail(&mut self, frame: Frame, message: String) {
        let message = self.config.secrets.scrub(&message);
        log::error!("frame {frame}: {message}");
        self.outcome.failures.push(format!("frame {frame}: {message}"));
        self.outcome.figures.errors += 1;
    }

    /// Exponential backoff from the frame's attempts so far.
    fn next_attempt(&self, frame: Frame, retry_after: Option<Duration>) -> Result<Epoch> {
        let attempts = self.ledger.attempts(frame.start)?.clamp(0, 30) as u32;
        let run = &self.config.run;
        let backoff = run.retry_base.saturating_mul(1i64 << attempts.min(20)).min(run.retry_max);
        let asked = retry_after.map_or(0, |d| d.as_secs() as i64);
        Ok(self.clock.now() + backoff.max(asked))
    }

    // ---- pull --------------------------------------------------------------------------------

    /// Pulls and stages one frame; true when it is staged.
    fn pull(&mut self, frame: Frame) -> Result<bool> {
        match self.source.pull(frame) {
            Ok(pulled) => {
                self.pull_failures_in_a_row = 0;
                self.check_skew(pulled.server_date);
                let now = self.clock.now();
                self.ledger.stage_frame(frame, &pulled.records, &pulled.invalid, &pulled.counts, now)?;
                log::info!("frame {frame}: pulled {} records in {} pages", pulled.records.len(), pulled.pages);
                let figures = &mut self.outcome.figures;
                figures.frames_pulled += 1;
                figures.records_pulled += pulled.records.len() as i64;
                figures.dead_letters += pulled.invalid.len() as i64;
                for letter in &pulled.invalid {
                    log::warn!("frame {frame}: a record was dead-lettered: {}", letter.detail);
                }
                if pulled.records.is_empty() && self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
                    self.outcome.figures.frames_delivered += 1;
                }
                Ok(true)
            }
            Err(PullError::Busy { message, retry_after }) => {
                let next = self.next_attempt(frame, retry_after)?;
                self.ledger.pull_failed(frame, &self.config.secrets.scrub(&message), next, self.clock.now())?;
                self.fail(frame, format!("{message}; no more pulls this run"));
                self.source_stopped = true;
                Ok(false)
            }
            Err(PullError::Failed(message)) => {
                let next = self.next_attempt(frame, None)?;
                self.ledger.pull_failed(frame, &self.config.secrets.scrub(&message), next, self.clock.now())?;
                self.fail(frame, message);
                self.pull_failures_in_a_row += 1;
                if self.pull_failures_in_a_row >= 3 {
                    log::warn!("the SS failed 3 frames in a row; no more pulls this run");
                    self.source_stopped = true;
                }
                Ok(false)
            }
        }
    }

    fn check_skew(&self, server_date: Option<Epoch>) {
        if let Some(date) = server_date {
            let skew = date - self.clock.now();
            if skew.abs() > SKEW_WARNING {
                log::warn!("the SS clock is {skew}s off this machine's clock; frames are planned from this machine's clock");
            }
        }
    }

    fn first_recheck(&self, now: Epoch) -> Option<Epoch> {
        self.config.frames.recheck.first().map(|after| now + after)
    }

    // ---- push --------------------------------------------------------------------------------

    /// Pushes a staged frame's pending records; delivers the frame when none is left.
    fn push(&mut self, frame: Frame) -> Result<()> {
        let (pending, sent_through) = self.ledger.pending(frame.start)?;
        // Records that may have reached the RS before a crash or a lost answer.
        let unknown: HashSet<i64> = pending.iter().filter(|p| p.seq <= sent_through).map(|p| p.seq).collect();
        let pending = match self.resolve_unknown(frame, pending, &unknown)? {
            Some(pending) => pending,
            None => return Ok(()),
        };
        let unit = self.sink.batch_size().max(1);
        let window = SEND_WINDOW.div_ceil(unit) * unit;
        for chunk in pending.chunks(window) {
            if self.out_of_time() {
                return Ok(());
            }
            let last = chunk.last().map_or(sent_through, |p| p.seq);
            self.ledger.mark_sending(frame.start, last, self.clock.now())?;
            for records in chunk.chunks(unit) {
                if !self.send(frame, records)? {
                    return Ok(());
                }
            }
        }
        let now = self.clock.now();
        if self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
            log::info!("frame {frame}: delivered");
            self.outcome.figures.frames_delivered += 1;
        }
        Ok(())
    }

    /// Looks up records whose fate is unknown, where the RS has a lookup: the present ones are
    /// acknowledged without sending. Without a lookup they are re-sent with the same key.
    /// None when the lookup itself failed (the frame is retried later).
    fn resolve_unknown(&mut self, frame: Frame, pending: Vec<Pending>, unknown: &HashSet<i64>) -> Result<Option<Vec<Pending>>> {
        if unknown.is_empty() || !self.sink.has_lookup() {
            return Ok(Some(pending));
        }
        let mut left = Vec::with_capacity(pending.len());
        for record in pending {
            if !unknown.contains(&record.seq) {
                left.push(record);
                continue;
            }
            match self.sink.lookup(&record.uid) {
                Ok(true) => {
                    self.ledger.acknowledge(frame.start, &[&record.uid], self.clock.now())?;
                    self.outcome.figures.records_pushed += 1;
                }
                Ok(false) => left.push(record),
                Err(reason) => {
                    self.push_failed(frame, reason, None)?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(left))
    }

    /// Sends one unit (a record, or a batch); false when the RS failed and pushing stops.
    fn send(&mut self, frame: Frame, records: &[Pending]) -> Result<bool> {
        let outgoing = self.map(frame, records)?;
        if outgoing.is_empty() {
            return Ok(true);
        }
        match self.send_with_retries(&outgoing) {
            Verdict::Acknowledged => {
                let uids: Vec<&str> = outgoing.iter().map(|o| o.uid.as_str()).collect();
                self.ledger.acknowledge(frame.start, &uids, self.clock.now())?;
                self.outcome.figures.records_pushed += uids.len() as i64;
                Ok(true)
            }
            Verdict::Rejected { status, response } if outgoing.len() == 1 => {
                let record = &records.iter().find(|r| r.uid == outgoing[0].uid).expect("sent from these records");
                let letter = DeadLetter {
                    uid: record.uid.clone(),
                    reason: "rejected",
                    status: Some(status),
                    response: Some(response.clone()),
                    detail: format!("the RS answered HTTP {status}"),
                    body: record.body.clone(),
                };
                self.ledger.dead_letter(frame.start, &letter, self.clock.now())?;
                self.outcome.figures.dead_letters += 1;
                log::warn!("frame {frame}: record {:?} dead-lettered: HTTP {status}: {response}", record.uid);
                Ok(true)
            }
            Verdict::Rejected { status, .. } => {
                // One bad record must not sink its batch: send each alone to find it.
                log::info!("frame {frame}: a batch of {} was rejected (HTTP {status}); sending its records one by one", outgoing.len());
                for record in records {
                    if !self.send(frame, std::slice::from_ref(record))? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Verdict::RetryLater { reason, retry_after } => {
                self.push_failed(frame, reason, retry_after)?;
                Ok(false)
            }
        }
    }

    /// Applies the mapping; records it cannot satisfy are dead-lettered, never sent.
    fn map(&mut self, frame: Frame, records: &[Pending]) -> Result<Vec<Outgoing>> {
        let mut outgoing = Vec::with_capacity(records.len());
        for record in records {
            let Some(mapping) = &self.config.sink.map else {
                outgoing.push(Outgoing { uid: record.uid.clone(), body: record.body.clone() });
                continue;
            };
            let mapped = serde_json::from_str(&record.body)
                .map_err(|e| format!("the staged record is not JSON: {e}"))
                .and_then(|value| mapping.apply(&value));
            match mapped {
                Ok(value) => outgoing.push(Outgoing { uid: record.uid.clone(), body: value.to_string() }),
                Err(why) => {
                    let letter = DeadLetter {
                        uid: record.uid.clone(),
                        reason: "invalid",
                        status: None,
                        response: None,
                        detail: format!("sink.map: {why}"),
                        body: record.body.clone(),
                    };
                    self.ledger.dead_letter(frame.start, &letter, self.clock.now())?;
                    self.outcome.figures.dead_letters += 1;
                    log::warn!("frame {frame}: record {:?} dead-lettered: sink.map: {why}", record.uid);
                }
            }
        }
        Ok(outgoing)
    }

    /// Sends, retrying a retryable failure a few times within the run with a short pause. Not
    /// when the RS asked for a longer quiet than the pause: then the run leaves it alone.
    fn send_with_retries(&mut self, outgoing: &[Outgoing]) -> Verdict {
        let mut attempt = 0;
        loop {
            let verdict = self.sink.send(outgoing);
            let Verdict::RetryLater { retry_after, .. } = &verdict else { return verdict };
            let pause = Duration::from_millis(200 << attempt.min(6));
            if attempt >= self.config.sink.retries || retry_after.is_some_and(|d| d > pause) || self.out_of_time() {
                return verdict;
            }
            std::thread::sleep(pause);
            attempt += 1;
            // The failed request may have been processed: where the RS can say so, ask first.
            if self.sink.has_lookup() {
                let answers: Vec<_> = outgoing.iter().map(|o| self.sink.lookup(&o.uid)).collect();
                if answers.iter().all(|a| *a == Ok(true)) {
                    return Verdict::Acknowledged;
                }
                if answers.iter().any(|a| *a != Ok(false)) {
                    // Partly stored, or the lookup failed: the next run looks each record up.
                    return verdict;
                }
            }
        }
    }

    fn push_failed(&mut self, frame: Frame, reason: String, retry_after: Option<Duration>) -> Result<()> {
        let next = self.next_attempt(frame, retry_after)?;
        self.ledger.push_failed(frame.start, &self.config.secrets.scrub(&reason), next, self.clock.now())?;
        self.fail(frame, format!("{reason}; no more pushes this run"));
        self.sink_stopped = true;
        Ok(())
    }
}
