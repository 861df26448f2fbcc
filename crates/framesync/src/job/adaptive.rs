//! The adaptive in-flight limit of the push: how many requests may be outstanding at the RS now.
//! It is pure — no I/O, no clock: the caller measures each round trip and says what kind of
//! answer came — so it is tested against a modelled RS, deterministically, without sockets.
//! The push asks [`Adaptive::current`] before each send and reports each answer with
//! [`Adaptive::on_answer`].
//!
//! The scheme is additive increase, multiplicative decrease on a round-trip baseline, as Vector's
//! Adaptive Request Concurrency and TCP congestion control do:
//!
//! - **Windows of answers.** Answers are judged a window at a time, a window being as many
//!   answers as the limit: in steady state that is about one round trip's worth, the time it
//!   takes a change of the limit to show in the round trips. Counting answers instead of time
//!   keeps the module clock-free, and makes a window as long at 5 ms as at 500 ms.
//! - **The baseline** is an exponentially weighted moving average of the windows' mean round
//!   trips (weight [`EWMA_ALPHA`] for the newest), with one of their deviation from it. The
//!   windows judged flat update it, so a latency that creeps up (a slower route, a busier RS)
//!   is followed. A window judged risen does not: its rise is the queue our own extra requests
//!   made, and letting it in would raise the baseline with the queue until the RS's queue is
//!   full and it answers 503. At a limit of 1 every window updates it, since one request makes
//!   no queue: a latency that steps up for good brings the limit down to 1, then is taken as
//!   the new normal, and the limit climbs again.
//! - **Increase:** a window whose mean stays within [`DEVIATION_SCALE`] deviations of the
//!   baseline (and at least [`MIN_TOLERANCE`] of it, so that perfectly flat round trips do not
//!   make any noise an alarm) raises the limit by 1. An RS with spare capacity answers more
//!   requests in the same time, so its round trips stay flat.
//! - **Decrease:** a window whose mean rises above that, or any answer of an overloaded RS
//!   ([`AnswerKind::Overloaded`]: 408, 429, 502, 503, 504, a timeout, a lost connection), multiplies the limit by [`DECREASE_RATIO`]. Past an RS's capacity, the extra
//!   requests queue there and every round trip grows by the wait: that is the knee this finds,
//!   before the RS's queue fills and it starts answering 503.
//! - **Settling:** after a decrease, the answers to the requests still in flight under the old,
//!   higher limit say nothing about the new one; as many answers as the old limit are let pass
//!   unjudged, so one overload costs one decrease, not one per answer it caused.
//!
//! Unlike Vector, the limit also rises while the caller is not using all of it, since this
//! module is not told how many requests are in flight; `sink.concurrency` bounds it anyway.
//! The 0.9, 0.4 and 2.5 are Vector's defaults, chosen there by simulation.

use std::time::Duration;

pub use super::limit::AnswerKind;

/// What the limit is multiplied by on a sign of overload.
pub const DECREASE_RATIO: f64 = 0.9;
/// The weight of the newest window in the baseline and its deviation.
pub const EWMA_ALPHA: f64 = 0.4;
/// How many deviations above the baseline a window's mean may be and still count as flat.
pub const DEVIATION_SCALE: f64 = 2.5;
/// The least rise, as a fraction of the baseline, that counts as a rise.
pub const MIN_TOLERANCE: f64 = 0.05;

/// The in-flight limit, from 1 to the `max` it was made with; it starts at 1.
#[derive(Clone, Debug)]
pub struct Adaptive {
    max: usize,
    limit: usize,
    baseline: Option<Baseline>,
    window: Window,
    /// Answers still to let pass unjudged after a decrease.
    settling: usize,
}

/// The moving average of the windows' mean round trips, in seconds, and its deviation.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    mean: f64,
    deviation: f64,
}

impl Baseline {
    fn threshold(&self) -> f64 {
        (DEVIATION_SCALE * self.deviation).max(MIN_TOLERANCE * self.mean)
    }

    fn update(&mut self, mean: f64) {
        self.deviation += EWMA_ALPHA * ((mean - self.mean).abs() - self.deviation);
        self.mean += EWMA_ALPHA * (mean - self.mean);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    answers: usize,
    rtt_sum: f64,
}

impl Adaptive {
    /// A limit between 1 and `max` (a `max` of 0 is taken as 1), starting at 1.
    pub fn new(max: usize) -> Self {
        Adaptive { max: max.max(1), limit: 1, baseline: None, window: Window::default(), settling: 0 }
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
            self.decrease();
            return;
        }
        self.window.answers += 1;
        self.window.rtt_sum += rtt.as_secs_f64();
        if self.window.answers >= self.limit {
            self.judge();
        }
    }

    /// Ends a window: up if its round trips stayed near the baseline, down if they rose.
    fn judge(&mut self) {
        let mean = self.window.rtt_sum / self.window.answers as f64;
        self.window = Window::default();
        let Some(baseline) = &mut self.baseline else {
            self.baseline = Some(Baseline { mean, deviation: 0.0 });
            self.increase();
            return;
        };
        let risen = mean > baseline.mean + baseline.threshold();
        if !risen || self.limit == 1 {
            baseline.update(mean);
        }
        if risen { self.decrease() } else { self.increase() }
    }

    fn increase(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
    }

    fn decrease(&mut self) {
        self.settling = self.limit;
        self.limit = ((self.limit as f64 * DECREASE_RATIO) as usize).max(1);
        self.window = Window::default();
    }
}

#[cfg(test)]
mod tests;
