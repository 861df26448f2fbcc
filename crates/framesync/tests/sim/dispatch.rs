//! The requests of a wave, sent without threads so a seed stays the whole story: one after
//! another in an order drawn from the seed (a wave's requests race in production, so the RS
//! may take them in any order), with the `mid-wave` kill point after each send — a kill there
//! leaves requests of the wave stored by the RS and their answers never read, as a SIGKILL
//! with requests in flight does.

use std::cell::RefCell;

use framesync::job::{Dispatch, Request, Sent, send_timed};
use framesync::sink::Sink;

use super::rng::Rng;

pub struct SeededDispatch(RefCell<Rng>);

impl SeededDispatch {
    pub fn new(seed: u64) -> Self {
        Self(RefCell::new(Rng::stream(seed, 7)))
    }
}

impl Dispatch for SeededDispatch {
    fn send(&self, sink: &dyn Sink, requests: &[Request]) -> Vec<Sent> {
        let mut order: Vec<usize> = (0..requests.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.0.borrow_mut().below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut sent: Vec<Option<Sent>> = vec![None; requests.len()];
        for i in order {
            sent[i] = Some(send_timed(sink, requests[i]));
            framesync::hooks::kill_point("mid-wave");
        }
        sent.into_iter().map(|s| s.expect("every request sent")).collect()
    }
}
