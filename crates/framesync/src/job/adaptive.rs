//! The adaptive in-flight limit of the push: how many requests may be outstanding at the RS now.
//! It is pure — no I/O, no clock: the caller measures each round trip and says what kind of
//! answer came — so it is tested against a modelled RS, deterministically, without sockets.
//! The push asks [`Adaptive::current`] before each send and reports each answer with
//! [`Adaptive::on_answer`].
//!
//! The scheme is additive increase, multiplicative decrease on a round-trip baseline, as Vector's
//! Adaptive Request Concurrency and TCP congestion control do, with the baseline of TCP Vegas:
//!
//! - **Windows of answers.** Answers are judged a window at a time, a window being as many
//!   answers as the limit (at least [`MIN_WINDOW`], so that one slow answer does not make a
//!   window): in steady state that is about one round trip's worth, the time it takes a change
//!   of the limit to show in the round trips. Counting answers instead of time keeps the module
//!   clock-free, and makes a window as long at 5 ms as at 500 ms.
//! - **The baseline** is the least mean round trip of the last [`RECENT_WINDOWS`] windows: the
//!   round trip when the RS keeps no queue of ours. Past an RS's capacity, every extra request
//!   waits there and every round trip grows by the wait; measured against the least recent
//!   mean, that growth adds up however slowly the limit climbs into it — an average that
//!   followed the round trips would take each step's queue for the norm, and climb until the
//!   RS's queue is full and it answers 503. Noise only ever adds to a round trip, so the least
//!   window is also the one noise touched least.
//! - **Increase:** a window whose mean is within [`TOLERANCE`] of the baseline raises the limit
//!   by 1. An RS with spare capacity answers more requests in the same time, so its round trips
//!   stay flat.
//! - **Decrease:** a window whose mean rises above that brings the limit down to what the RS
//!   serves without a queue, `limit × baseline ÷ mean` (the requests beyond it waited), at
//!   least by [`DECREASE_RATIO`] and at most by [`DEEPEST_DECREASE`]; so the queue drains, and the windows after it measure the
//!   baseline afresh — a decrease by a fixed tenth would leave a queue that the baseline then
//!   takes in. Any answer of an overloaded RS ([`AnswerKind::Overloaded`]: 408, 429, 502, 503,
//!   504, a timeout, a lost connection) multiplies the limit by [`DECREASE_RATIO`].
//! - **A slower route** raises every window, not only those past the knee: the limit falls for
//!   a few windows, until the windows from before the change are no longer among the recent
//!   ones; then the new round trip is the baseline, and the limit climbs again.
//! - **Settling:** after a decrease, the answers to the requests still in flight under the old,
//!   higher limit say nothing about the new one; as many answers as the old limit are let pass
//!   unjudged, so one overload costs one decrease, not one per answer it caused.
//!
//! Unlike Vector, the limit also rises while the caller is not using all of it, since this
//! module is not told how many requests are in flight; `sink.concurrency` bounds it anyway.

use std::collections::VecDeque;
use std::time::Duration;

pub use super::limit::AnswerKind;

/// What the limit is multiplied by on a sign of overload.
pub const DECREASE_RATIO: f64 = 0.9;
/// How far above the baseline, as a fraction of it, a window's mean may be and still count as
/// flat: past it, the RS is keeping a queue of our requests.
pub const TOLERANCE: f64 = 0.2;
/// The least a rise of the round trips multiplies the limit by, in one window: a window that
/// a hiccup of the machine slowed must not undo many windows of climbing.
pub const DEEPEST_DECREASE: f64 = 0.8;
/// How many recent windows the baseline is the least of.
pub const RECENT_WINDOWS: usize = 16;
/// The fewest answers in a window.
pub const MIN_WINDOW: usize = 4;

/// The in-flight limit, from 1 to the `max` it was made with; it starts at 1.
#[derive(Clone, Debug)]
pub struct Adaptive {
    max: usize,
    limit: usize,
    /// The mean round trips (in seconds) of the last windows, newest last.
    recent: VecDeque<f64>,
    window: Window,
    /// Answers still to let pass unjudged after a decrease.
    settling: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    answers: usize,
    rtt_sum: f64,
}

impl Adaptive {
    /// A limit between 1 and `max` (a `max` of 0 is taken as 1), starting at 1.
    pub fn new(max: usize) -> Self {
        Adaptive { max: max.max(1), limit: 1, recent: VecDeque::new(), window: Window::default(), settling: 0 }
    }

    /// The most requests to have in flight now.
    pub fn current(&self) -> usize {
        self.limit
    }

    /// Goes on from where an earlier run left the limit (`from`): at half of it, as TCP does
    /// after an idle spell. The round-trip baseline is learnt again (the RS may have changed
    /// since), and it must be learnt where the RS keeps no queue: learnt at the old limit, it
    /// would take a queue there for the norm and climb past the knee, into the RS's 503s.
    pub fn resume(&mut self, from: usize) {
        *self = Adaptive { limit: (from / 2).clamp(1, self.max), ..Adaptive::new(self.max) };
    }

    /// Takes one answer into account: its round trip and its kind.
    pub fn on_answer(&mut self, rtt: Duration, kind: AnswerKind) {
        if self.settling > 0 {
            self.settling -= 1;
            return;
        }
        if kind == AnswerKind::Overloaded {
            self.decrease(DECREASE_RATIO);
            return;
        }
        self.window.answers += 1;
        self.window.rtt_sum += rtt.as_secs_f64();
        if self.window.answers >= self.limit.max(MIN_WINDOW) {
            self.judge();
        }
    }

    /// Ends a window: up if its round trips stayed near the baseline, down if they rose.
    fn judge(&mut self) {
        let mean = self.window.rtt_sum / self.window.answers as f64;
        self.window = Window::default();
        let baseline = self.recent.iter().copied().fold(mean, f64::min);
        if self.recent.len() == RECENT_WINDOWS {
            self.recent.pop_front();
        }
        self.recent.push_back(mean);
        if mean > baseline * (1.0 + TOLERANCE) {
            // The RS serves `limit × baseline ÷ mean` requests in a baseline's time: the rest
            // waited. Down to that, the queue drains.
            self.decrease((baseline / mean).max(DEEPEST_DECREASE));
        } else {
            self.increase();
        }
    }

    fn increase(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
    }

    /// Multiplies the limit by `ratio`, or by [`DECREASE_RATIO`] when that is less.
    fn decrease(&mut self, ratio: f64) {
        self.settling = self.limit;
        self.limit = ((self.limit as f64 * ratio.min(DECREASE_RATIO)) as usize).max(1);
        self.window = Window::default();
    }
}

#[cfg(test)]
mod tests;
