//! Requests in flight, sent without threads so a seed stays the whole story: up to the limit
//! are "in flight" at once, and the one that finishes next is drawn from the seed (requests
//! race in production, so the RS may take them in any order); it is sent then, and the
//! `mid-wave` kill point passes after each send — a kill there leaves requests stored by the
//! RS whose answers were never read, as a SIGKILL with requests in flight does.

use std::cell::RefCell;

use framesync::job::{Answered, Dispatch, Pipeline, Request};
use framesync::sink::Sink;

use super::rng::Rng;

pub struct SeededDispatch(RefCell<Rng>);

impl SeededDispatch {
    pub fn new(seed: u64) -> Self {
        Self(RefCell::new(Rng::stream(seed, 7)))
    }
}

impl Dispatch for SeededDispatch {
    fn send(
        &self,
        sink: &dyn Sink,
        requests: &[Request],
        limit: usize,
        answered: &mut Answered,
    ) -> anyhow::Result<usize> {
        let finish = |in_flight: &mut Vec<usize>| {
            let pick = self.0.borrow_mut().below(in_flight.len() as u64) as usize;
            in_flight.swap_remove(pick)
        };
        Pipeline::one_by_one(sink, requests, limit, answered, |_| {}, finish)
    }
}
