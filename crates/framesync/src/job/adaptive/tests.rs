//! The limit against a modelled RS: a discrete-event model of a server with a capacity, a
//! latency and a bounded queue, and a client that keeps `current()` requests in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::*;
use crate::job::limit::{Fixed, Limit};

/// Times in the model are whole microseconds.
type Micros = u64;

const MS: Micros = 1_000;
/// How long a refusal takes to come back: the network's share of a round trip.
const REFUSAL_RTT: Micros = 100;

/// A server that works on `capacity` requests at once, each for `latency(now)`, keeps up to
/// `queue` more waiting in order, and refuses (503) the rest at once.
struct Rs {
    capacity: usize,
    queue: usize,
    latency: Box<dyn Fn(Micros) -> Micros>,
}

impl Rs {
    fn unlimited(latency: Micros) -> Rs {
        Rs { capacity: usize::MAX, queue: usize::MAX, latency: Box::new(move |_| latency) }
    }

    /// A fixed latency with up to 1/16 more, the same for the same request number.
    fn knee(capacity: usize, queue: usize, latency: Micros) -> Rs {
        let jitter = move |n: Micros| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) * latency / 256;
        Rs { capacity, queue, latency: Box::new(move |now| latency + jitter(now)) }
    }

    /// A busy machine's round trips: a fixed latency, plus up to a fifth more for most
    /// requests and up to as much again for one in eight (a scheduler that ran something else
    /// first) — noise that only ever adds.
    fn noisy(capacity: usize, queue: usize, latency: Micros) -> Rs {
        let draw = move |n: Micros| n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let noise = move |n: Micros| {
            let (a, b) = (draw(n) >> 56, draw(n) & 0xFF);
            let spike = if a < 32 { b * latency / 256 } else { 0 };
            spike + (draw(n) >> 40 & 0xFF) * latency / (5 * 256)
        };
        Rs { capacity, queue, latency: Box::new(move |now| latency + noise(now)) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Done { sent: Micros },
    Refused { sent: Micros },
}

/// What a model run saw: the limit after every answer, and how the RS answered.
#[derive(Default)]
struct Trace {
    limits: Vec<usize>,
    /// The model time of the last answer.
    end: Micros,
    served: usize,
    refused: usize,
}

impl Trace {
    /// Requests served a second of model time.
    fn rate(&self) -> f64 {
        self.served as f64 / (self.end as f64 / 1e6)
    }

    fn refused_share(&self) -> f64 {
        self.refused as f64 / (self.served + self.refused) as f64
    }

    /// The least and the most limit over the last half of the run.
    fn late_range(&self) -> (usize, usize) {
        let late = &self.limits[self.limits.len() / 2..];
        (*late.iter().min().unwrap(), *late.iter().max().unwrap())
    }
}

/// The model: the RS's slots and queue, the events to come, and the client's requests in flight.
struct Model {
    rs: Rs,
    now: Micros,
    in_service: usize,
    waiting: VecDeque<Micros>,
    events: BinaryHeap<Reverse<(Micros, Event)>>,
    in_flight: usize,
}

impl Model {
    fn new(rs: Rs) -> Model {
        Model { rs, now: 0, in_service: 0, waiting: VecDeque::new(), events: BinaryHeap::new(), in_flight: 0 }
    }

    fn start_service(&mut self, sent: Micros) {
        self.in_service += 1;
        let done = self.now + (self.rs.latency)(self.now);
        self.events.push(Reverse((done, Event::Done { sent })));
    }

    fn send(&mut self) {
        self.in_flight += 1;
        if self.in_service < self.rs.capacity {
            self.start_service(self.now);
        } else if self.waiting.len() < self.rs.queue {
            self.waiting.push_back(self.now);
        } else {
            self.events.push(Reverse((self.now + REFUSAL_RTT, Event::Refused { sent: self.now })));
        }
    }

    /// Runs until `answers` more answers came back, filling up to the limit after each.
    fn run(&mut self, limit: &mut dyn Limit, answers: usize, trace: &mut Trace) {
        for _ in 0..answers {
            while self.in_flight < limit.current() {
                self.send();
            }
            let Reverse((at, event)) = self.events.pop().expect("requests in flight");
            self.now = at;
            self.in_flight -= 1;
            let (sent, kind) = match event {
                Event::Done { sent } => {
                    self.in_service -= 1;
                    if let Some(queued) = self.waiting.pop_front() {
                        self.start_service(queued);
                    }
                    trace.served += 1;
                    (sent, AnswerKind::Taken)
                }
                Event::Refused { sent } => {
                    trace.refused += 1;
                    (sent, AnswerKind::Overloaded)
                }
            };
            limit.on_answer(Duration::from_micros(at - sent), kind);
            trace.limits.push(limit.current());
            trace.end = at;
        }
    }
}

fn run(rs: Rs, max: usize, answers: usize) -> (Adaptive, Trace) {
    let (mut limit, mut trace) = (Adaptive::new(max), Trace::default());
    Model::new(rs).run(&mut limit, answers, &mut trace);
    (limit, trace)
}

/// The rate of a fixed limit: at the RS's capacity, the best there is.
fn fixed_rate(rs: Rs, limit: usize, answers: usize) -> f64 {
    let mut trace = Trace::default();
    Model::new(rs).run(&mut Fixed(limit), answers, &mut trace);
    trace.rate()
}

#[test]
fn it_starts_at_one_and_a_max_of_zero_is_one() {
    assert_eq!(Adaptive::new(64).current(), 1);
    let mut none = Adaptive::new(0);
    none.on_answer(Duration::from_millis(5), AnswerKind::Taken);
    assert_eq!(none.current(), 1);
}

#[test]
fn against_a_capacity_of_eight_it_settles_near_eight_with_few_503s() {
    for queue in [4, 8, 32] {
        let (_, trace) = run(Rs::knee(8, queue, 5 * MS), 64, 40_000);
        let (low, high) = trace.late_range();
        assert!(low >= 6 && high <= 12, "queue {queue}: the limit went from {low} to {high}");
        assert!(trace.refused_share() <= 0.01, "queue {queue}: {} refused of {}", trace.refused, trace.served);
        let best = fixed_rate(Rs::knee(8, queue, 5 * MS), 8, 40_000);
        assert!(trace.rate() >= 0.9 * best, "queue {queue}: {:.0}/s against {best:.0}/s at a fixed 8", trace.rate());
    }
}

#[test]
fn against_a_capacity_of_eight_on_a_noisy_machine_it_still_stops_short_of_the_queue() {
    for queue in [4, 8] {
        let (_, trace) = run(Rs::noisy(8, queue, 5 * MS), 64, 40_000);
        let (_, high) = trace.late_range();
        assert!(high <= 8 + queue, "queue {queue}: the limit climbed to {high}, past the RS's queue");
        assert!(trace.refused_share() <= 0.01, "queue {queue}: {} refused of {}", trace.refused, trace.served);
        let best = fixed_rate(Rs::noisy(8, queue, 5 * MS), 8, 40_000);
        assert!(trace.rate() >= 0.9 * best, "queue {queue}: {:.0}/s against {best:.0}/s at a fixed 8", trace.rate());
    }
}

#[test]
fn with_unlimited_capacity_and_flat_round_trips_it_climbs_to_max() {
    let (limit, trace) = run(Rs::unlimited(5 * MS), 64, 10_000);
    assert_eq!(limit.current(), 64);
    assert_eq!(trace.late_range(), (64, 64));
    assert_eq!(trace.refused, 0);
}

#[test]
fn a_burst_of_503s_drops_it_and_it_climbs_back() {
    let mut model = Model::new(Rs::unlimited(5 * MS));
    let (mut limit, mut trace) = (Adaptive::new(64), Trace::default());
    model.run(&mut limit, 10_000, &mut trace);
    assert_eq!(limit.current(), 64);
    model.rs = Rs { capacity: 0, queue: 0, latency: Box::new(|_| 5 * MS) };
    model.run(&mut limit, 500, &mut trace);
    assert!(limit.current() <= 32, "after 500 refusals the limit is {}", limit.current());
    model.rs = Rs::unlimited(5 * MS);
    model.run(&mut limit, 20_000, &mut trace);
    assert_eq!(limit.current(), 64);
}

#[test]
fn one_503_costs_one_decrease_not_one_per_answer_in_flight() {
    let mut limit = Adaptive::new(64);
    while limit.current() < 40 {
        limit.on_answer(Duration::from_millis(5), AnswerKind::Taken);
    }
    for _ in 0..40 {
        limit.on_answer(Duration::from_micros(100), AnswerKind::Overloaded);
    }
    assert_eq!(limit.current(), 36);
}

#[test]
fn other_failures_do_not_lower_it() {
    let mut limit = Adaptive::new(8);
    for _ in 0..100 {
        limit.on_answer(Duration::from_millis(5), AnswerKind::Failed);
    }
    assert_eq!(limit.current(), 8);
}

#[test]
fn slowly_rising_latency_without_queueing_does_not_collapse_it() {
    // From 5 ms to 20 ms over the run (about 4 s of model time): a slower route, not a queue.
    let rs = Rs { capacity: usize::MAX, queue: usize::MAX, latency: Box::new(|now| 5 * MS + now * 15 / 4_000) };
    let (limit, trace) = run(rs, 64, 30_000);
    let (low, _) = trace.late_range();
    assert!(low >= 32, "the limit fell to {low} while latency crept up");
    assert!(limit.current() >= 32, "{}", limit.current());
}

#[test]
fn a_step_up_in_latency_is_taken_as_the_new_normal() {
    let step = |now: Micros| if now < 1_000 * MS { 5 * MS } else { 25 * MS };
    let (limit, _) = run(Rs { capacity: usize::MAX, queue: usize::MAX, latency: Box::new(step) }, 64, 40_000);
    assert_eq!(limit.current(), 64);
}

#[test]
fn it_never_leaves_one_to_max_whatever_it_is_told() {
    let mut state: u64 = 7;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    for max in [1, 2, 7, 64, 256] {
        let mut limit = Adaptive::new(max);
        for _ in 0..50_000 {
            let kind = match next() % 20 {
                0 => AnswerKind::Overloaded,
                1 => AnswerKind::Failed,
                _ => AnswerKind::Taken,
            };
            limit.on_answer(Duration::from_micros(next() % 50_000), kind);
            assert!((1..=max).contains(&limit.current()), "max {max}: {}", limit.current());
        }
    }
}

#[test]
fn resuming_starts_at_half_the_earlier_limit_within_its_bounds() {
    let mut limit = Adaptive::new(16);
    limit.resume(10);
    assert_eq!(limit.current(), 5);
    limit.resume(80);
    assert_eq!(limit.current(), 16, "never past max");
    limit.resume(1);
    assert_eq!(limit.current(), 1, "never below one");
}
