//! How the requests of one wave reach the RS: the only part of a push that runs concurrently.
//! Each request is one `Sink::send`; nothing here touches the ledger or the job, and the
//! answers come back in the order the requests were given, whatever order they arrived in, so
//! the job acts on them deterministically on its own thread.
//!
//! [`Threads`] sends a wave from scoped threads, one per request. The deterministic simulation
//! passes a dispatch of its own that sends them one after another in a seeded order, with kill
//! points between the sends.

use std::time::{Duration, Instant};

use crate::delivery::Key;
use crate::sink::{Outgoing, Sink, Verdict};

/// One request of a wave: its records and the key they go under.
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

/// Sends a wave of requests; the answers in the order of `requests`.
pub trait Dispatch {
    fn send(&self, sink: &dyn Sink, requests: &[Request]) -> Vec<Sent>;
}

/// Sends one request, timed.
pub fn send_timed(sink: &dyn Sink, request: Request) -> Sent {
    let start = Instant::now();
    let verdict = sink.send(request.records, request.key);
    Sent { verdict, rtt: start.elapsed() }
}

/// All the requests of a wave at once, from scoped threads (a wave of one on this thread).
/// The `mid-wave` kill point passes once every answer is in and none is acted on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

impl Dispatch for Threads {
    fn send(&self, sink: &dyn Sink, requests: &[Request]) -> Vec<Sent> {
        let sent = match requests {
            [one] => vec![send_timed(sink, *one)],
            _ => std::thread::scope(|scope| {
                let handles: Vec<_> =
                    requests.iter().map(|&request| scope.spawn(move || send_timed(sink, request))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
            }),
        };
        crate::hooks::kill_point("mid-wave");
        sent
    }
}
