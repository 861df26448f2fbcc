//! The in-flight limit of the push: how many requests may be in flight to the RS at once. The
//! push asks `current()` before each request starts and tells the limit of every answer, in the
//! order the requests were formed, with its round trip; [`of`] picks the one the config asks
//! for. [`Fixed`] holds
//! `sink.concurrency` (one when `sink.ordered`), whatever the answers.

use std::time::Duration;

use super::adaptive::Adaptive;
use crate::config::SinkConfig;
use crate::sink::Verdict;

/// What an answer says about the RS's load, as far as a limit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// The RS took the request (wholly or per record) or refused a record: it is keeping up.
    Taken,
    /// The RS asks for less: 408, 429, 502, 503, 504, a timeout or a lost connection.
    Overloaded,
    /// Any other failure (another 5xx; the RS or the config is wrong): its round trip counts,
    /// the failure says nothing about load.
    Failed,
}

impl AnswerKind {
    pub fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Acknowledged | Verdict::Rejected { .. } | Verdict::TooLarge { .. } | Verdict::PerItem(_) => {
                AnswerKind::Taken
            }
            Verdict::RetryLater { status: None | Some(408 | 429 | 502 | 503 | 504), .. } => AnswerKind::Overloaded,
            Verdict::RetryLater { .. } | Verdict::Broken { .. } => AnswerKind::Failed,
        }
    }
}

impl super::Job<'_> {
    /// Tells the in-flight limit of an answer and its round trip.
    pub(super) fn tell_limit(&mut self, sent: &super::dispatch::Sent) {
        self.pushing.answered = true;
        self.limit.on_answer(sent.rtt, AnswerKind::of(&sent.verdict));
    }
}

/// How many requests may be in flight to the RS; told of every answer.
pub trait Limit {
    /// Requests in flight allowed now, at least 1.
    fn current(&self) -> usize;
    /// One answer of the RS and its round trip (from the request's start to its answer).
    fn on_answer(&mut self, rtt: Duration, kind: AnswerKind);
    /// Starts from where an earlier run's push left the limit: a limit that adapts goes on
    /// from near there (half of it) instead of climbing again from one; a fixed one stays.
    fn resume(&mut self, _from: usize) {}
}

/// A limit that never moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed(pub usize);

impl Fixed {
    /// `sink.concurrency`, or one when `sink.ordered`. `sink.adaptive` is not read: a limit
    /// that adapts is a different `Limit`.
    pub fn of(sink: &SinkConfig) -> Self {
        Fixed(sink.in_flight().max(1))
    }
}

impl Limit for Adaptive {
    fn current(&self) -> usize {
        Adaptive::current(self)
    }

    fn on_answer(&mut self, rtt: Duration, kind: AnswerKind) {
        Adaptive::on_answer(self, rtt, kind);
    }

    fn resume(&mut self, from: usize) {
        Adaptive::resume(self, from);
    }
}

/// The limit the config asks for: one in flight when `sink.ordered`, [`Adaptive`] up to
/// `sink.concurrency` when `sink.adaptive`, else [`Fixed`] at `sink.concurrency`.
pub fn of(sink: &SinkConfig) -> Box<dyn Limit> {
    if sink.adaptive && !sink.ordered { Box::new(Adaptive::new(sink.concurrency)) } else { Box::new(Fixed::of(sink)) }
}

impl Limit for Fixed {
    fn current(&self) -> usize {
        self.0
    }

    fn on_answer(&mut self, _rtt: Duration, _kind: AnswerKind) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_limit_holds_whatever_the_answers() {
        let mut limit = Fixed(16);
        for kind in [AnswerKind::Overloaded, AnswerKind::Failed, AnswerKind::Taken] {
            limit.on_answer(Duration::from_secs(9), kind);
        }
        assert_eq!(limit.current(), 16);
        let busy = Verdict::RetryLater { reason: "HTTP 503".into(), retry_after: None, status: Some(503) };
        assert_eq!(AnswerKind::of(&busy), AnswerKind::Overloaded);
        assert_eq!(AnswerKind::of(&Verdict::Acknowledged), AnswerKind::Taken);
        assert_eq!(AnswerKind::of(&Verdict::Broken { reason: "HTTP 404".into() }), AnswerKind::Failed);
        let boom = Verdict::RetryLater { reason: "HTTP 500".into(), retry_after: None, status: Some(500) };
        assert_eq!(AnswerKind::of(&boom), AnswerKind::Failed, "a 500 says nothing about load");
        let lost = Verdict::RetryLater { reason: "timed out".into(), retry_after: None, status: None };
        assert_eq!(AnswerKind::of(&lost), AnswerKind::Overloaded);
    }
}
