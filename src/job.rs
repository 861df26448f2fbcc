//! The work of one run: push what is staged, pull what is missing, push it, within the budget.
//! Given a plan, the ledger, the two clients and a clock, it is tested without sockets. Every
//! failure is recorded on its frame (error, attempts, next attempt) and in the outcome, so
//! the exit code says whether all attempted work succeeded.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::frames::{Epoch, Frame};
use crate::ledger::{DeadLetter, Ledger, Pending, RunFigures};
use crate::plan::{Plan, Step};
use crate::servers::Server;
use crate::sink::{Outgoing, Sink, Verdict};
use crate::source::{PullError, Pulled, Source};

pub use crate::clock::{Clock, SystemClock};

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
    /// `run.max_seconds` on the clock's `elapsed`; none for work started by hand.
    deadline: Option<Duration>,
    progress: Option<&'a dyn Fn(usize, usize)>,
    outcome: Outcome,
    source_stopped: bool,
    sink_stopped: bool,
    pull_failures_in_a_row: u32,
    skew_recorded: bool,
    acks: AckGroup,
}

/// Acknowledged records not yet recorded in the ledger: one transaction per group of at most
/// `sink.ack_group` records or `sink.ack_group_time`, instead of one per request. A crash loses
/// the group's acknowledgements, not its records: they lie within the frame's `sent_through`,
/// so the next run looks them up (where the RS has a lookup) or re-sends them with the same keys.
#[derive(Default)]
struct AckGroup {
    frame: Epoch,
    uids: Vec<String>,
    /// When the first of them was acknowledged, on the clock's `elapsed`.
    since: Option<Duration>,
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
            deadline: Some(clock.elapsed() + config.run.max_seconds),
            progress: None,
            outcome: Outcome::default(),
            source_stopped: false,
            sink_stopped: false,
            pull_failures_in_a_row: 0,
            skew_recorded: false,
            acks: AckGroup::default(),
        }
    }

    /// The budget ends at `deadline` on the clock's `elapsed` (by default `run.max_seconds` from now).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No `max_seconds`: for work started by hand, which runs until it is done.
    pub fn without_time_limit(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Calls `progress(done, total)` after each step of the plan.
    pub fn with_progress(mut self, progress: &'a dyn Fn(usize, usize)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Carries out the plan in order; `push_after_pull` is false for the `pull` command.
    pub fn execute(mut self, plan: &Plan, push_after_pull: bool) -> Result<Outcome> {
        self.respect_quiet()?;
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
                Step::Recheck(start) if !self.source_stopped => {
                    let frame = self.frame(start);
                    if self.recheck(frame)? && push_after_pull && !self.sink_stopped {
                        self.push(frame)?;
                    }
                }
                Step::Redeliver(start) if !self.source_stopped => {
                    let frame = self.frame(start);
                    if self.redeliver(frame)? && push_after_pull && !self.sink_stopped {
                        self.push(frame)?;
                    }
                }
                _ => {}
            }
            if let Some(progress) = self.progress {
                progress(done + 1, plan.steps.len());
            }
        }
        Ok(self.outcome)
    }

    /// A server that asked for quiet in an earlier run gets no request until then.
    fn respect_quiet(&mut self) -> Result<()> {
        let now = self.clock.now();
        if let Some((until, why)) = self.ledger.quiet_until(Server::Source, now)? {
            log::info!("the SS asked for quiet until {} ({why}); no pulls this run", crate::frames::rfc3339(until));
            self.source_stopped = true;
        }
        if let Some((until, why)) = self.ledger.quiet_until(Server::Sink, now)? {
            log::info!("the RS asked for quiet until {} ({why}); no pushes this run", crate::frames::rfc3339(until));
            self.sink_stopped = true;
        }
        Ok(())
    }

    fn frame(&self, start: Epoch) -> Frame {
        self.config.frames.size.frame_at(start)
    }

    fn out_of_time(&mut self) -> bool {
        let over = self.deadline.is_some_and(|deadline| self.clock.elapsed() >= deadline);
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

    /// Pulls and stages one missing frame; true when it is staged.
    fn pull(&mut self, frame: Frame) -> Result<bool> {
        let now = self.clock.now();
        let (result, staged, invalid) = self.pull_and_stage(frame, now)?;
        let Some(pulled) = self.judge(frame, result, false)? else { return Ok(false) };
        crate::hooks::kill_point("after-stage");
        log::info!("frame {frame}: pulled {staged} records in {} pages", pulled.pages);
        let figures = &mut self.outcome.figures;
        figures.frames_pulled += 1;
        figures.records_pulled += staged;
        figures.dead_letters += invalid;
        if staged == 0 && self.ledger.complete_frame(frame, self.first_recheck(now), now)? {
            self.outcome.figures.frames_delivered += 1;
        }
        Ok(true)
    }

    /// Stages a frame's pages as they arrive, in one transaction opened at the first page and
    /// committed only when the pull succeeded and the SS's clock agrees the frame is closed;
    /// otherwise rolled back. A frame of any size is pulled with one page in memory. Returns the
    /// pull's result and the records staged and dead-lettered; an error only when the ledger failed.
    fn pull_and_stage(&mut self, frame: Frame, now: Epoch) -> Result<(Result<Pulled, PullError>, i64, i64)> {
        let ledger = &mut *self.ledger;
        let mut staging = None;
        let mut failure = None;
        let result = self.source.pull_pages(frame, &mut |records, letters| {
            let staged = (|| -> Result<()> {
                let staging = match &mut staging {
                    Some(staging) => staging,
                    None => staging.insert(ledger.begin_staging(frame, now)?),
                };
                ledger.stage(staging, &records)?;
                for letter in &letters {
                    log::warn!("frame {frame}: a record was dead-lettered: {}", letter.detail);
                    ledger.stage_dead_letter(staging, letter)?;
                }
                Ok(())
            })();
            staged.map_err(|e| failure = Some(e)).is_ok()
        });
        let (staged, invalid) = staging.as_ref().map_or((0, 0), |s| (s.staged(), s.invalid()));
        let closed =
            |pulled: &Pulled| not_yet_eligible_at_the_ss(self.config, frame, pulled.server_date, now).is_none();
        let committed = match (&result, failure) {
            (_, Some(error)) => Err(error),
            (Ok(pulled), None) if closed(pulled) => match staging {
                Some(staging) => self.ledger.commit_staging(staging, &pulled.counts),
                None => self.ledger.stage_frame(frame, &[], &[], &pulled.counts, now),
            },
            _ => Ok(()),
        };
        self.ledger.abandon_staging();
        committed.map(|()| (result, staged, invalid))
    }

    /// Pulls a delivered frame again and stages the records the ledger has not seen; true when
    /// there are some to push.
    fn recheck(&mut self, frame: Frame) -> Result<bool> {
        let Some(pulled) = self.fetch(frame, true)? else { return Ok(false) };
        let now = self.clock.now();
        let late = self.ledger.stage_recheck(frame, &pulled.records, &self.config.frames.recheck, now)?;
        crate::hooks::kill_point("after-stage");
        self.outcome.figures.frames_pulled += 1;
        self.outcome.figures.records_pulled += late as i64;
        if late > 0 {
            log::info!("frame {frame}: a re-check found {late} late records");
        }
        Ok(late > 0)
    }

    /// Pulls a delivered frame again and stages every record for sending again, with the same
    /// keys; true when there are records to push.
    fn redeliver(&mut self, frame: Frame) -> Result<bool> {
        let Some(pulled) = self.fetch(frame, true)? else { return Ok(false) };
        let staged = self.ledger.stage_redelivery(frame, &pulled.records, self.clock.now())?;
        self.outcome.figures.frames_pulled += 1;
        self.outcome.figures.records_pulled += staged as i64;
        Ok(staged > 0)
    }

    /// One pull of a frame, with every way it can fail handled: the failure is recorded (on the
    /// frame when it is missing; a re-check simply stays due), and pulling stops for the run when
    /// the SS is busy, broken three frames in a row, or behind this machine's clock.
    fn fetch(&mut self, frame: Frame, recheck: bool) -> Result<Option<Pulled>> {
        let result = self.source.pull(frame);
        self.judge(frame, result, recheck)
    }

    /// What `fetch` does with a pull's result.
    fn judge(&mut self, frame: Frame, result: Result<Pulled, PullError>, recheck: bool) -> Result<Option<Pulled>> {
        let (message, retry_after, stop) = match result {
            Ok(pulled) => {
                self.pull_failures_in_a_row = 0;
                self.check_skew(pulled.server_date)?;
                match not_yet_eligible_at_the_ss(self.config, frame, pulled.server_date, self.clock.now()) {
                    Some(message) => (message, None, true),
                    None => {
                        self.check_slow(pulled.slowest);
                        return Ok(Some(pulled));
                    }
                }
            }
            Err(PullError::Busy { message, retry_after }) => {
                if let Some(wait) = retry_after {
                    let now = self.clock.now();
                    let reason = self.config.secrets.scrub(&message);
                    self.ledger.set_quiet(Server::Source, now + wait.as_secs() as i64, &reason, now)?;
                }
                (message, retry_after, true)
            }
            Err(PullError::Failed(message)) => {
                self.pull_failures_in_a_row += 1;
                (message, None, self.pull_failures_in_a_row >= 3)
            }
        };
        let message = self.config.secrets.scrub(&message);
        if !recheck {
            let next = self.next_attempt(frame, retry_after)?;
            self.ledger.pull_failed(frame, &message, next, self.clock.now())?;
        }
        let what = if recheck { "re-check: " } else { "" };
        if stop {
            self.source_stopped = true;
            self.fail(frame, format!("{what}{message}; no more pulls this run"));
        } else {
            self.fail(frame, format!("{what}{message}"));
        }
        Ok(None)
    }

    /// Warns about, and keeps for `status`, the SS clock's skew: once per run.
    fn check_skew(&mut self, server_date: Option<Epoch>) -> Result<()> {
        let Some(date) = server_date else { return Ok(()) };
        if std::mem::replace(&mut self.skew_recorded, true) {
            return Ok(());
        }
        let now = self.clock.now();
        let skew = date - now;
        if skew.abs() > SKEW_WARNING {
            log::warn!(
                "the SS clock is {skew}s off this machine's clock; frames are planned from this machine's clock"
            );
        }
        self.ledger.record_skew(Server::Source, skew, now)
    }

    /// A page slower than `source.slow_after` means the SS is under load: this frame is kept,
    /// and pulling stops for the run so the SS can recover.
    fn check_slow(&mut self, slowest: Duration) {
        if let Some(limit) = self.config.source.slow_after
            && slowest > limit
        {
            log::warn!(
                "an SS page took {:.1}s (source.slow_after is {:.1}s); no more pulls this run",
                slowest.as_secs_f64(),
                limit.as_secs_f64()
            );
            self.source_stopped = true;
        }
    }

    fn first_recheck(&self, now: Epoch) -> Option<Epoch> {
        self.config.frames.recheck.first().map(|after| now + after)
    }

    // ---- push --------------------------------------------------------------------------------

    /// Pushes a staged frame's pending records; delivers the frame when none is left.
    fn push(&mut self, frame: Frame) -> Result<()> {
        let sent = self.send_pending(frame);
        if !matches!(sent, Ok(true)) {
            // Whatever stopped the sending, what the RS acknowledged is recorded.
            let recorded = self.record_acks();
            sent?;
            return recorded;
        }
        // The last group and the frame's delivery: one transaction.
        let now = self.clock.now();
        let uids = std::mem::take(&mut self.acks.uids);
        self.acks.since = None;
        let last: Vec<&str> = uids.iter().map(String::as_str).collect();
        let delivered = self.ledger.acknowledge_and_complete(frame, &last, self.first_recheck(now), now)?;
        self.outcome.figures.records_pushed += last.len() as i64;
        if delivered {
            crate::hooks::kill_point("after-complete");
            log::info!("frame {frame}: delivered");
            self.outcome.figures.frames_delivered += 1;
        }
        Ok(())
    }

    /// Sends the frame's pending records a window at a time; false when pushing stopped (the
    /// RS failed, or the run is out of time).
    fn send_pending(&mut self, frame: Frame) -> Result<bool> {
        let unit = self.sink.batch_size().max(1);
        let window = SEND_WINDOW.div_ceil(unit) * unit;
        let mut after = -1;
        loop {
            if self.out_of_time() {
                return Ok(false);
            }
            let (pending, sent_through) = self.ledger.pending_after(frame.start, after, window as i64)?;
            let Some(last) = pending.last().map(|p| p.seq) else { return Ok(true) };
            after = last;
            // Records that may have reached the RS before a crash or a lost answer.
            let unknown: HashSet<i64> = pending.iter().filter(|p| p.seq <= sent_through).map(|p| p.seq).collect();
            let Some(pending) = self.resolve_unknown(frame, pending, &unknown)? else { return Ok(false) };
            if last > sent_through {
                self.ledger.mark_sending(frame.start, last, self.clock.now())?;
                crate::hooks::kill_point("after-mark-sending");
            }
            for records in pending.chunks(unit) {
                if !self.send(frame, records)? {
                    return Ok(false);
                }
            }
        }
    }

    /// Holds acknowledged records for the next group commit.
    fn acknowledged(&mut self, frame: Frame, uids: impl Iterator<Item = String>) -> Result<()> {
        if self.acks.frame != frame.start {
            self.record_acks()?;
            self.acks.frame = frame.start;
        }
        let now = self.clock.elapsed();
        self.acks.since.get_or_insert(now);
        self.acks.uids.extend(uids);
        Ok(())
    }

    /// Records the group if it is full or old enough: before each request, so the frame's last
    /// group waits for the frame's delivery and is recorded with it.
    fn record_acks_if_due(&mut self) -> Result<()> {
        let full = self.acks.uids.len() >= self.config.sink.ack_group;
        let old = self.acks.since.is_some_and(|since| self.clock.elapsed() >= since + self.config.sink.ack_group_time);
        if full || old { self.record_acks() } else { Ok(()) }
    }

    /// Records the group's UIDs as delivered, in one transaction.
    fn record_acks(&mut self) -> Result<()> {
        if self.acks.uids.is_empty() {
            return Ok(());
        }
        let uids: Vec<&str> = self.acks.uids.iter().map(String::as_str).collect();
        self.ledger.acknowledge(self.acks.frame, &uids, self.clock.now())?;
        self.outcome.figures.records_pushed += uids.len() as i64;
        self.acks.uids.clear();
        self.acks.since = None;
        Ok(())
    }

    /// Looks up records whose fate is unknown, where the RS has a lookup: the present ones are
    /// acknowledged without sending. Without a lookup they are re-sent with the same key.
    /// None when the lookup itself failed (the frame is retried later).
    fn resolve_unknown(
        &mut self,
        frame: Frame,
        pending: Vec<Pending>,
        unknown: &HashSet<i64>,
    ) -> Result<Option<Vec<Pending>>> {
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
        // A full or older group is recorded before a request (which may take long).
        self.record_acks_if_due()?;
        match self.send_with_retries(&outgoing) {
            Verdict::Acknowledged => {
                crate::hooks::kill_point("after-ack");
                self.acknowledged(frame, outgoing.into_iter().map(|o| o.uid))?;
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
                crate::hooks::kill_point("after-dead-letter");
                self.outcome.figures.dead_letters += 1;
                log::warn!("frame {frame}: record {:?} dead-lettered: HTTP {status}: {response}", record.uid);
                Ok(true)
            }
            Verdict::Rejected { status, .. } => {
                // One bad record must not sink its batch: send each alone to find it.
                log::info!(
                    "frame {frame}: a batch of {} was rejected (HTTP {status}); sending its records one by one",
                    outgoing.len()
                );
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
            self.clock.sleep(pause);
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
        self.record_acks()?;
        if let Some(wait) = retry_after {
            let now = self.clock.now();
            self.ledger.set_quiet(
                Server::Sink,
                now + wait.as_secs() as i64,
                &self.config.secrets.scrub(&reason),
                now,
            )?;
        }
        let next = self.next_attempt(frame, retry_after)?;
        self.ledger.push_failed(frame.start, &self.config.secrets.scrub(&reason), next, self.clock.now())?;
        self.fail(frame, format!("{reason}; no more pushes this run"));
        self.sink_stopped = true;
        Ok(())
    }
}

/// A frame the SS's own clock says is not yet eligible is never staged: this machine's clock
/// is ahead (a jump forward), and staging would deliver the frame before its records exist.
fn not_yet_eligible_at_the_ss(config: &Config, frame: Frame, server_date: Option<Epoch>, now: Epoch) -> Option<String> {
    let date = server_date?;
    (frame.end() + config.frames.delay > date).then(|| {
        format!(
            "the SS clock says {} — too early for this frame (delay {}s); this machine's clock is {}s ahead of the SS, so nothing was staged",
            crate::frames::rfc3339(date),
            config.frames.delay,
            now - date
        )
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;
    use crate::config::SinkMode;
    use crate::ledger::{FrameState, PullCounts, StagedRecord, Sync};
    use crate::plan::{Facts, Scope, Settings, plan};
    use crate::source::Pulled;

    const T0: Epoch = 1_793_534_400; // 2026-11-01T12:00:00Z

    struct FakeClock(Epoch);
    impl Clock for FakeClock {
        fn now(&self) -> Epoch {
            self.0
        }
    }

    /// An SS with fixed records per frame, or a fixed error.
    #[derive(Default)]
    struct FakeSource {
        frames: HashMap<Epoch, Vec<&'static str>>,
        busy: bool,
        broken: bool,
        server_date: Option<Epoch>,
        calls: RefCell<Vec<Epoch>>,
    }

    impl Source for FakeSource {
        fn pull(&self, frame: Frame) -> Result<Pulled, PullError> {
            self.calls.borrow_mut().push(frame.start);
            if self.busy {
                return Err(PullError::Busy {
                    message: "HTTP 429".into(),
                    retry_after: Some(Duration::from_secs(600)),
                });
            }
            if self.broken {
                return Err(PullError::Failed("HTTP 500".into()));
            }
            let uids = self.frames.get(&frame.start).cloned().unwrap_or_default();
            let records = uids
                .iter()
                .map(|u| StagedRecord { uid: u.to_string(), ts_ms: None, body: format!(r#"{{"id":"{u}","n":1}}"#) })
                .collect();
            Ok(Pulled {
                records,
                invalid: vec![],
                counts: PullCounts::default(),
                pages: 1,
                server_date: self.server_date,
                slowest: Duration::ZERO,
            })
        }
    }

    /// An RS answering from a script: a UID maps to the verdicts of its successive sends.
    struct FakeSink {
        mode: SinkMode,
        batch_size: usize,
        script: RefCell<HashMap<String, Vec<Verdict>>>,
        stored: RefCell<Vec<String>>,
        sent: RefCell<Vec<Vec<String>>>,
        lookup: Option<HashSet<String>>,
        looked_up: RefCell<Vec<String>>,
    }

    impl FakeSink {
        fn new() -> Self {
            Self {
                mode: SinkMode::Record,
                batch_size: 1,
                script: RefCell::default(),
                stored: RefCell::default(),
                sent: RefCell::default(),
                lookup: None,
                looked_up: RefCell::default(),
            }
        }

        fn answer(self, uid: &str, verdicts: Vec<Verdict>) -> Self {
            self.script.borrow_mut().insert(uid.into(), verdicts);
            self
        }

        fn sent_uids(&self) -> Vec<String> {
            self.sent.borrow().iter().flatten().cloned().collect()
        }
    }

    fn retry() -> Verdict {
        Verdict::RetryLater { reason: "HTTP 503".into(), retry_after: None }
    }

    fn rejected() -> Verdict {
        Verdict::Rejected { status: 400, response: "bad record".into() }
    }

    impl Sink for FakeSink {
        fn mode(&self) -> SinkMode {
            self.mode
        }
        fn batch_size(&self) -> usize {
            self.batch_size
        }
        fn send(&self, records: &[Outgoing]) -> Verdict {
            self.sent.borrow_mut().push(records.iter().map(|r| r.uid.clone()).collect());
            for r in records {
                let mut script = self.script.borrow_mut();
                if let Some(next) = script.get_mut(&r.uid).filter(|v| !v.is_empty()) {
                    let verdict = next.remove(0);
                    if verdict != Verdict::Acknowledged {
                        return verdict;
                    }
                }
            }
            self.stored.borrow_mut().extend(records.iter().map(|r| r.uid.clone()));
            Verdict::Acknowledged
        }
        fn has_lookup(&self) -> bool {
            self.lookup.is_some()
        }
        fn lookup(&self, uid: &str) -> Result<bool, String> {
            self.looked_up.borrow_mut().push(uid.into());
            Ok(self.lookup.as_ref().is_some_and(|l| l.contains(uid)))
        }
    }

    fn config(extra_sink: &str) -> Config {
        let text = format!(
            r#"
ledger = "unused.db"
[frames]
start = "2026-11-01T12:00:00Z"
delay = "1m"
[source]
url = "http://127.0.0.1:1/ss?from={{from}}&to={{to}}"
uid = "/id"
[sink]
url = "http://127.0.0.1:1/rs"
retries = 0
{extra_sink}
[run]
retry_base = "30s"
"#
        );
        Config::parse(&text, std::path::Path::new("."), &|_| None).unwrap()
    }

    struct World {
        _dir: tempfile::TempDir,
        ledger: Ledger,
        config: Config,
    }

    impl World {
        fn new(config: Config) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Ledger::open(&dir.path().join("l.db"), Sync::Normal).unwrap();
            Self { _dir: dir, ledger, config }
        }

        fn run(&mut self, source: &FakeSource, sink: &FakeSink, now: Epoch, scope: Scope) -> Outcome {
            let settings = Settings {
                reference: self.config.frames.start,
                size: self.config.frames.size,
                delay: self.config.frames.delay,
                fresh: self.config.run.fresh,
                backfill_window: None,
                max_frames: self.config.run.max_frames,
            };
            let facts = Facts {
                spans: self.ledger.delivered_spans(i64::MIN, i64::MAX).unwrap(),
                open: self.ledger.open_frames().unwrap(),
                due_rechecks: self.ledger.due_rechecks(now, 1000).unwrap(),
            };
            let plan = plan(&settings, &facts, now, scope);
            let clock = FakeClock(now);
            Job::new(&self.config, &mut self.ledger, source, sink, &clock).execute(&plan, scope == Scope::Run).unwrap()
        }

        fn state(&self, start: Epoch) -> Option<FrameState> {
            self.ledger.frame_state(start).unwrap()
        }

        fn count(&self, sql: &str) -> i64 {
            self.ledger.conn().query_row(sql, [], |r| r.get(0)).unwrap()
        }
    }

    fn source(frames: &[(Epoch, Vec<&'static str>)]) -> FakeSource {
        FakeSource { frames: frames.iter().cloned().collect(), ..FakeSource::default() }
    }

    #[test]
    fn every_record_is_delivered_once_and_a_second_run_does_nothing() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a", "b"]), (T0 + 60, vec!["c"]), (T0 + 120, vec![])]);
        let sink = FakeSink::new();
        let outcome = w.run(&src, &sink, T0 + 240, Scope::Run);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(*sink.stored.borrow(), ["a", "b", "c"]);
        assert_eq!(outcome.figures.frames_delivered, 3);
        assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3);
        assert_eq!(w.count("SELECT COUNT(*) FROM staged"), 0);
        let again = w.run(&src, &sink, T0 + 240, Scope::Run);
        assert_eq!(again.figures, RunFigures::default());
        assert_eq!(src.calls.borrow().len(), 3, "nothing pulled twice");
    }

    #[test]
    fn a_failing_rs_keeps_the_frames_progress_and_a_later_run_sends_only_the_rest() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a", "b", "c"])]);
        let sink = FakeSink::new().answer("b", vec![retry()]);
        let first = w.run(&src, &sink, T0 + 120, Scope::Run);
        assert_eq!(first.exit_code(), 1);
        assert_eq!(w.state(T0), Some(FrameState::Pushing));
        assert_eq!(w.count("SELECT attempts FROM frames"), 1);
        assert_eq!(w.count("SELECT next_attempt FROM frames"), T0 + 120 + 30, "backoff from retry_base");
        // Not due yet: nothing is sent.
        w.run(&src, &sink, T0 + 130, Scope::Run);
        assert_eq!(sink.sent_uids(), ["a", "b"]);
        let later = w.run(&src, &sink, T0 + 200, Scope::Run);
        assert_eq!(later.exit_code(), 0);
        assert_eq!(sink.sent_uids(), ["a", "b", "b", "c"], "a is not sent again");
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
        assert_eq!(src.calls.borrow().iter().filter(|s| **s == T0).count(), 1, "the frame is not pulled again");
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
    }

    #[test]
    fn a_rejected_record_is_dead_lettered_and_its_frame_completes() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a", "bad", "c"])]);
        let sink = FakeSink::new().answer("bad", vec![rejected()]);
        let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
        assert_eq!(*sink.stored.borrow(), ["a", "c"]);
        let (status, response): (i64, String) = w
            .ledger
            .conn()
            .query_row("SELECT status, response FROM dead_letters WHERE uid = 'bad'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((status, response.as_str()), (400, "bad record"));
        assert_eq!(w.count("SELECT dead FROM frames"), 1);
    }

    #[test]
    fn a_rejected_batch_is_split_so_only_the_bad_record_is_dead_lettered() {
        let mut w = World::new(config("mode = \"batch\"\nbatch_size = 10"));
        let src = source(&[(T0, vec!["a", "bad", "c"])]);
        let mut sink = FakeSink::new().answer("bad", vec![rejected(), rejected()]);
        sink.mode = SinkMode::Batch;
        sink.batch_size = 10;
        w.run(&src, &sink, T0 + 120, Scope::Run);
        assert_eq!(*sink.sent.borrow(), vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]);
        assert_eq!(*sink.stored.borrow(), ["a", "c"]);
        assert_eq!(w.count("SELECT COUNT(*) FROM dead_letters"), 1);
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
    }

    #[test]
    fn records_whose_fate_is_unknown_are_looked_up_before_being_sent_again() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a", "b", "c"])]);
        // The first run stages the frame and marks every record possibly sent, then the RS fails on a.
        let sink = FakeSink::new().answer("a", vec![retry()]);
        w.run(&src, &sink, T0 + 120, Scope::Run);
        // The RS in fact stored a and b (lost answers); the next run asks before sending.
        let mut sink2 = FakeSink::new();
        sink2.lookup = Some(["a".to_string(), "b".to_string()].into());
        let outcome = w.run(&src, &sink2, T0 + 600, Scope::Run);
        assert_eq!(outcome.exit_code(), 0);
        assert_eq!(*sink2.looked_up.borrow(), ["a", "b", "c"]);
        assert_eq!(sink2.sent_uids(), ["c"], "present records are not sent again");
        assert_eq!(w.count("SELECT COUNT(*) FROM delivered"), 3);
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
    }

    #[test]
    fn without_a_lookup_unknown_records_are_sent_again_with_the_same_key() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a", "b"])]);
        let sink = FakeSink::new().answer("a", vec![retry()]);
        w.run(&src, &sink, T0 + 120, Scope::Run);
        let sink2 = FakeSink::new();
        w.run(&src, &sink2, T0 + 600, Scope::Run);
        assert_eq!(sink2.sent_uids(), ["a", "b"]);
        assert!(sink2.looked_up.borrow().is_empty());
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
        assert!(outcome.failures[0].contains("ahead of the SS"), "{:?}", outcome.failures);
        assert_eq!(src.calls.borrow().len(), 1, "no more pulls this run");
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
        w.run(&src, &sink, T0 + 120, Scope::Run);
        assert!(sink.sent.borrow().is_empty());
        let detail: String = w.ledger.conn().query_row("SELECT detail FROM dead_letters", [], |r| r.get(0)).unwrap();
        assert!(detail.contains("/amount"), "{detail}");
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
    }

    #[test]
    fn pull_stages_without_pushing_and_push_delivers_what_pull_staged() {
        let mut w = World::new(config(""));
        let src = source(&[(T0, vec!["a"]), (T0 + 60, vec![])]);
        let sink = FakeSink::new();
        w.run(&src, &sink, T0 + 180, Scope::Pull);
        assert!(sink.sent.borrow().is_empty());
        assert_eq!(w.state(T0), Some(FrameState::Pulled));
        assert_eq!(w.state(T0 + 60), Some(FrameState::Delivered), "an empty frame needs no push");
        let outcome = w.run(&src, &sink, T0 + 180, Scope::Push);
        assert_eq!(outcome.figures.records_pushed, 1);
        assert_eq!(w.state(T0), Some(FrameState::Delivered));
        assert_eq!(src.calls.borrow().len(), 2, "push pulls nothing");
    }

    #[test]
    fn secrets_never_reach_the_ledger() {
        let mut config = config("");
        config.secrets.add("s3cret-token");
        let mut w = World::new(config);
        let src = source(&[(T0, vec!["a"])]);
        let sink = FakeSink::new().answer(
            "a",
            vec![Verdict::RetryLater { reason: "POST http://rs/?key=s3cret-token: refused".into(), retry_after: None }],
        );
        let outcome = w.run(&src, &sink, T0 + 120, Scope::Run);
        let error: String = w.ledger.conn().query_row("SELECT last_error FROM frames", [], |r| r.get(0)).unwrap();
        assert!(!error.contains("s3cret") && error.contains("***"), "{error}");
        assert!(!outcome.failures[0].contains("s3cret"));
    }
}
