//! How a window's requests reach the RS: the only part of a push that runs concurrently. Up to
//! the in-flight limit are in flight at once, and as each answer is acted on the next starts (a
//! sliding window, not waves that wait for their slowest request). Each request is one
//! `Sink::send`; nothing here touches the ledger or the job. The answers are handed to the job
//! on the calling thread in the order the requests were given, whatever order they arrive in,
//! so the job acts on them deterministically — and may record acknowledgements in the ledger
//! while later requests are still in flight, for no ledger transaction waits on the network.
//!
//! [`Threads`] sends from scoped threads, as many as the requests in flight, each taking one
//! request after another. The deterministic simulation passes a dispatch of its own that sends
//! them one after another, finishing the requests in flight in a seeded order, with kill points
//! between the sends.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::delivery::Key;
use crate::sink::{Outgoing, Sink, Verdict};

/// One request: its records and the key they go under.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    pub records: &'r [Outgoing],
    pub key: &'r Key,
}

/// A request's answer and its round trip.
#[derive(Debug, Clone)]
pub struct Sent {
    pub verdict: Verdict,
    pub rtt: Duration,
}

/// What the job says once it has acted on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on, with at most this many requests in flight from now on.
    Go(usize),
    /// Start no more requests (pushing stopped, or the run is out of time); the answers to the
    /// requests already in flight are still handed over.
    Stop,
}

/// What the job does with each answer: given its request's place and the answer, says how to
/// go on; an error (the ledger's) stops the sending, and no later answer is handed over.
pub type Answered<'a> = dyn FnMut(usize, Sent) -> Result<Flow> + 'a;

/// Sends `requests` in order, at most `limit` in flight at once, handing every answer to
/// `answered` in the order of `requests`. Returns how many were sent: all of them, or the first
/// ones until `answered` said to stop.
pub trait Dispatch {
    fn send(&self, sink: &dyn Sink, requests: &[Request], limit: usize, answered: &mut Answered) -> Result<usize>;
}

/// Sends one request, timed.
pub fn send_timed(sink: &dyn Sink, request: Request) -> Sent {
    let start = Instant::now();
    let verdict = sink.send(request.records, request.key);
    Sent { verdict, rtt: start.elapsed() }
}

/// Requests in flight from scoped threads, one request at a time each; with one in flight at a
/// time (a limit of one, `sink.ordered`) on the calling thread. A thread is started when the
/// requests in flight first need it and goes on to take the requests after, so a window starts
/// at most the limit's worth of threads, not one a request: against a fast RS, starting a
/// thread costs more than the request. The `mid-wave` kill point passes at each answer that
/// arrives, with the others still in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

impl Dispatch for Threads {
    fn send(&self, sink: &dyn Sink, requests: &[Request], limit: usize, answered: &mut Answered) -> Result<usize> {
        let (work, queue) = mpsc::channel::<usize>();
        let queue = Mutex::new(queue);
        std::thread::scope(|scope| {
            // Dropped when the sending ends: the threads waiting for work then end too.
            let work = work;
            let (done, arrivals) = mpsc::channel::<(usize, Sent)>();
            let mut pipeline = Pipeline::new(requests.len(), limit);
            let mut threads = 0;
            loop {
                // Each answer is acted on before the next request starts, so a stop is heeded.
                pipeline.hand_over(answered);
                if pipeline.finished() {
                    return pipeline.result();
                }
                while let Some(i) = pipeline.next_to_start() {
                    if pipeline.in_flight == 1 && pipeline.limit == 1 {
                        // One at a time: no thread to hand it to and wait for.
                        let sent = send_timed(sink, requests[i]);
                        crate::hooks::kill_point("mid-wave");
                        pipeline.arrived(i, sent);
                        break;
                    }
                    if threads < pipeline.in_flight {
                        threads += 1;
                        let (done, queue) = (done.clone(), &queue);
                        scope.spawn(move || {
                            while let Ok(i) = next_work(queue) {
                                // The receiver outlives every request: it is dropped after the scope.
                                let _ = done.send((i, send_timed(sink, requests[i])));
                            }
                        });
                    }
                    work.send(i).expect("the threads wait for work until the sending ends");
                }
                if pipeline.waiting() {
                    let (i, sent) = arrivals.recv().expect("a request in flight still holds a sender");
                    crate::hooks::kill_point("mid-wave");
                    pipeline.arrived(i, sent);
                }
            }
        })
    }
}

/// The next request for a thread of [`Threads`] to send; an error once the sending has ended.
fn next_work(queue: &Mutex<mpsc::Receiver<usize>>) -> Result<usize, mpsc::RecvError> {
    queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv()
}

/// The bookkeeping of a pipeline of requests, apart from how they are sent: which to start,
/// which answers may be handed over (in order), and when it is done.
pub struct Pipeline {
    /// The next request to start.
    next: usize,
    /// The next answer to hand over.
    delivered: usize,
    pub in_flight: usize,
    pub limit: usize,
    go: bool,
    arrived: Vec<Option<Sent>>,
    failure: Option<anyhow::Error>,
}

impl Pipeline {
    pub fn new(requests: usize, limit: usize) -> Self {
        let arrived = (0..requests).map(|_| None).collect();
        Pipeline { next: 0, delivered: 0, in_flight: 0, limit: limit.max(1), go: true, arrived, failure: None }
    }

    /// The request to start now, if the limit and the job allow one; it counts as in flight.
    /// The limit bounds the requests whose answers the job has not acted on yet — in flight, or
    /// in and waiting for an earlier one — so a crash never leaves more than the limit of
    /// requests of unknown fate, and a stop is heeded within the limit.
    pub fn next_to_start(&mut self) -> Option<usize> {
        if !self.go || self.next >= self.arrived.len() || self.next - self.delivered >= self.limit {
            return None;
        }
        self.next += 1;
        self.in_flight += 1;
        Some(self.next - 1)
    }

    /// The answer to request `i` is in.
    pub fn arrived(&mut self, i: usize, sent: Sent) {
        self.in_flight -= 1;
        self.arrived[i] = Some(sent);
    }

    /// Hands the answers that are next in order to the job, and takes in what it says.
    pub fn hand_over(&mut self, answered: &mut Answered) {
        while let Some(sent) = self.arrived.get_mut(self.delivered).and_then(Option::take) {
            self.delivered += 1;
            if self.failure.is_some() {
                continue; // the job failed: what is still in flight stays of unknown fate
            }
            match answered(self.delivered - 1, sent) {
                Ok(Flow::Go(limit)) => self.limit = limit.max(1),
                Ok(Flow::Stop) => self.go = false,
                Err(error) => {
                    self.go = false;
                    self.failure = Some(error);
                }
            }
        }
    }

    /// Requests are in flight, to wait for.
    pub fn waiting(&self) -> bool {
        self.in_flight > 0
    }

    /// Every request started has been answered, and no more will start.
    pub fn finished(&self) -> bool {
        self.in_flight == 0 && self.delivered == self.next && (!self.go || self.next == self.arrived.len())
    }

    /// Drives a pipeline of `requests` without threads, one request at a time: the requests
    /// "in flight" are started (`started` is told of each, with the pipeline as it is), and
    /// `finish` takes the one that is sent and answered next out of them — for tests, and for
    /// the simulation, where a seed picks it.
    pub fn one_by_one(
        sink: &dyn Sink,
        requests: &[Request],
        limit: usize,
        answered: &mut Answered,
        mut started: impl FnMut(&Pipeline),
        mut finish: impl FnMut(&mut Vec<usize>) -> usize,
    ) -> Result<usize> {
        let mut pipeline = Pipeline::new(requests.len(), limit);
        let mut in_flight = Vec::new();
        loop {
            pipeline.hand_over(answered);
            if pipeline.finished() {
                return pipeline.result();
            }
            while let Some(i) = pipeline.next_to_start() {
                started(&pipeline);
                in_flight.push(i);
            }
            if in_flight.is_empty() {
                continue;
            }
            let i = finish(&mut in_flight);
            let sent = send_timed(sink, requests[i]);
            crate::hooks::kill_point("mid-wave");
            pipeline.arrived(i, sent);
        }
    }

    /// How many were sent, or the job's error.
    pub fn result(&mut self) -> Result<usize> {
        match self.failure.take() {
            Some(error) => Err(error),
            None => Ok(self.next),
        }
    }
}
