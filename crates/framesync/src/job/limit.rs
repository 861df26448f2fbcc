//! The in-flight limit of the push: how many requests may be in flight to the RS at once. The
//! push asks `current()` before each wave and tells the limit of every answer, in the order the
//! requests were formed, with its round trip: a limit that adapts (AIMD on a round-trip
//! baseline) plugs in here through [`super::Job::with_limit`]. [`Fixed`] holds
//! `sink.concurrency` (one when `sink.ordered`), whatever the answers.

use std::time::Duration;

use crate::config::SinkConfig;
use crate::sink::Verdict;

/// What an answer says about the RS's load, as far as a limit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// The RS took the request (wholly or per record) or refused a record: it is keeping up.
    Taken,
    /// 408, 429, 5xx, a timeout or a lost connection: the RS may be overloaded.
    Overloaded,
    /// The RS or the config is wrong: says nothing about load.
    Broken,
}

impl AnswerKind {
    pub fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Acknowledged | Verdict::Rejected { .. } | Verdict::TooLarge { .. } | Verdict::PerItem(_) => {
                AnswerKind::Taken
            }
            Verdict::RetryLater { .. } => AnswerKind::Overloaded,
            Verdict::Broken { .. } => AnswerKind::Broken,
        }
    }
}

/// How many requests may be in flight to the RS; told of every answer.
pub trait Limit {
    /// Requests in flight allowed now, at least 1.
    fn current(&self) -> usize;
    /// One answer of the RS and its round trip (from the request's start to its answer).
    fn on_answer(&mut self, rtt: Duration, kind: AnswerKind);
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
        for kind in [AnswerKind::Overloaded, AnswerKind::Broken, AnswerKind::Taken] {
            limit.on_answer(Duration::from_secs(9), kind);
        }
        assert_eq!(limit.current(), 16);
        let busy = Verdict::RetryLater { reason: "HTTP 503".into(), retry_after: None, status: Some(503) };
        assert_eq!(AnswerKind::of(&busy), AnswerKind::Overloaded);
        assert_eq!(AnswerKind::of(&Verdict::Acknowledged), AnswerKind::Taken);
        assert_eq!(AnswerKind::of(&Verdict::Broken { reason: "HTTP 404".into() }), AnswerKind::Broken);
    }
}
