//! How a window's requests reach the RS: the only part of a push that runs concurrently. Up to
//! the in-flight limit are in flight at once, and as each answer is acted on the next starts (a
//! sliding window, not waves that wait for their slowest request). Each request is one
//! `Sink::send`; nothing here touches the ledger or the job. The answers are handed to the job
//! on the calling thread in the order the requests were given, whatever order they arrive in,
//! so the job acts on them deterministically — and may record acknowledgements in the ledger
//! while later requests are still in flight, for no ledger transaction waits on the network.
//!
//! [`Threads`] sends from scoped threads, as many as the requests in flight, each taking one
//! request after another — or on the calling thread, one at a time, for an RS that answers
//! quicker than a thread is started. The deterministic simulation passes a dispatch of its own
//! that sends them one after another, finishing the requests in flight in a seeded order, with
//! kill points between the sends.

use std::cell::Cell;
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

/// Requests in flight from scoped threads, one request at a time each; on the calling thread
/// when one is in flight at a time (a limit of one, `sink.ordered`) or the RS answers quicker
/// than a request is handed to a thread ([`QUICKER_THAN_A_THREAD`]: an RS in the same process,
/// where more in flight gains nothing). A thread is started when the requests in flight first
/// need it and goes on to take the requests after, so a window starts at most the limit's
/// worth of threads, not one a request. The `mid-wave` kill point passes at each answer that
/// arrives, with the others still in flight.
///
/// One is kept for a job's pushes: it remembers whether the last answer came that quickly. Its
/// first request goes on the calling thread, to learn that before any thread is started: a
/// process that has started a thread pays a lock for every allocation from then on.
#[derive(Debug, Default)]
pub struct Threads {
    /// Whether the last answer came quicker than a thread; None before the first.
    quick: Cell<Option<bool>>,
}

/// A round trip under which a request goes on the calling thread. Starting a scoped thread and
/// taking its answer costs 20 to 50 µs on a 2-core machine; no request over a socket, even on
/// loopback, comes back in less (nginx on loopback: about 100 µs).
pub const QUICKER_THAN_A_THREAD: Duration = Duration::from_micros(20);

impl Threads {
    /// Takes in an answer's round trip.
    fn note(&self, sent: &Sent) {
        self.quick.set(Some(sent.rtt < QUICKER_THAN_A_THREAD));
    }
}

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
                    if pipeline.in_flight == 1 && pipeline.limit == 1 || self.quick.get() != Some(false) {
                        // One at a time, or an RS quicker than a thread (or not yet known to
                        // be slower): no thread to hand it to.
                        let sent = send_timed(sink, requests[i]);
                        self.note(&sent);
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
                    self.note(&sent);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::ThreadId;

    use super::*;

    /// An RS that takes `delay` to answer, and notes how many requests it had at once and on
    /// which threads they came.
    struct Timed {
        delay: Duration,
        now: AtomicUsize,
        most: AtomicUsize,
        threads: Mutex<Vec<ThreadId>>,
    }

    impl Timed {
        fn new(delay: Duration) -> Self {
            Timed { delay, now: AtomicUsize::new(0), most: AtomicUsize::new(0), threads: Mutex::new(Vec::new()) }
        }
    }

    impl Sink for Timed {
        fn batch_size(&self) -> usize {
            1
        }
        fn send(&self, _records: &[Outgoing], _key: &Key) -> Verdict {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.threads.lock().unwrap().push(std::thread::current().id());
            std::thread::sleep(self.delay);
            self.now.fetch_sub(1, Ordering::SeqCst);
            Verdict::Acknowledged
        }
        fn has_lookup(&self) -> bool {
            false
        }
        fn lookup(&self, _uid: &str) -> Result<bool, String> {
            Ok(false)
        }
    }

    /// Sends `n` requests through `threads` at a limit of 4; the places of the answers, in the
    /// order they were handed over.
    fn send(threads: &Threads, sink: &Timed, n: usize) -> Vec<usize> {
        let records = [Outgoing { uid: "u".into(), body: "{}".into() }];
        let requests: Vec<Request> = (0..n).map(|_| Request { records: &records, key: &Key::Own }).collect();
        let mut order = Vec::new();
        let sent = threads.send(sink, &requests, 4, &mut |i, _| {
            order.push(i);
            Ok(Flow::Go(4))
        });
        assert_eq!(sent.unwrap(), n);
        order
    }

    #[test]
    fn an_rs_slower_than_a_thread_gets_the_limit_in_flight_from_threads() {
        let (threads, sink) = (Threads::default(), Timed::new(Duration::from_millis(2)));
        assert_eq!(send(&threads, &sink, 40), (0..40).collect::<Vec<_>>(), "answers in the order of the requests");
        assert_eq!(sink.most.load(Ordering::SeqCst), 4);
        let caller = std::thread::current().id();
        let on_threads = sink.threads.lock().unwrap().iter().filter(|id| **id != caller).count();
        assert_eq!(on_threads, 39, "the first one on the calling thread, which learns it is slow");
        let distinct: std::collections::HashSet<_> =
            sink.threads.lock().unwrap().iter().copied().filter(|id| *id != caller).collect();
        assert!(distinct.len() <= 4, "a thread takes one request after another: {} threads", distinct.len());
    }

    #[test]
    fn an_rs_quicker_than_a_thread_gets_its_requests_on_the_calling_thread() {
        let (threads, sink) = (Threads::default(), Timed::new(Duration::ZERO));
        assert_eq!(send(&threads, &sink, 40), (0..40).collect::<Vec<_>>());
        let caller = std::thread::current().id();
        let on_caller = sink.threads.lock().unwrap().iter().filter(|id| **id == caller).count();
        // (A request the machine preempts may send a few to threads.)
        assert!(on_caller >= 30, "{on_caller} of 40 on the calling thread");
        // And the next window starts where this one left off.
        sink.threads.lock().unwrap().clear();
        send(&threads, &sink, 10);
        let on_caller = sink.threads.lock().unwrap().iter().filter(|id| **id == caller).count();
        assert!(on_caller >= 8, "{on_caller} of 10 on the calling thread");
    }

    #[test]
    fn an_rs_that_turns_slow_gets_threads_again() {
        let threads = Threads::default();
        send(&threads, &Timed::new(Duration::ZERO), 10);
        let slow = Timed::new(Duration::from_millis(2));
        send(&threads, &slow, 40);
        // One request on the calling thread finds it slow; the rest go four at a time.
        assert_eq!(slow.most.load(Ordering::SeqCst), 4);
    }
}
