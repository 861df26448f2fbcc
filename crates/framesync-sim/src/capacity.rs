//! The RS's capacity: how many requests it works on at once (`rs_capacity`) and how many may
//! wait beyond that (`rs_queue`), as a real server's worker pool and accept queue. A request in
//! service holds its slot for the whole of its latency and processing, so at capacity `c` and
//! latency `L` the RS answers at most `c / L` requests a second; one that finds every slot taken
//! waits its turn, first come first served, and its latency grows by the wait; one that finds the
//! queue full too is answered 503 at once. Both limits are read at each admission, so a change
//! through `/control/faults` applies to the next request (and wakes the waiting ones).
//!
//! The counters (`/control/stats` under `rs_capacity`) are kept whether or not a limit is set:
//! the most requests in service at once says how much concurrency a client really reached.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The limits in force: `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub capacity: Option<u64>,
    pub queue: Option<u64>,
}

/// What `/control/stats` reports under `rs_capacity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CapacityStats {
    /// Requests answered 503 because every slot and the whole queue were taken.
    pub overloaded_503s: u64,
    pub max_in_service: u64,
    pub max_queued: u64,
    /// The time requests spent waiting in the queue, summed, in milliseconds.
    pub queue_wait_ms: u64,
}

#[derive(Default)]
struct State {
    in_service: u64,
    /// Tickets handed to waiting requests, and the next ticket to be let in: a FIFO queue.
    issued: u64,
    next_in: u64,
    queue_wait: Duration,
    stats: CapacityStats,
}

impl State {
    fn queued(&self) -> u64 {
        self.issued - self.next_in
    }

    fn enter(&mut self) {
        self.in_service += 1;
        self.stats.max_in_service = self.stats.max_in_service.max(self.in_service);
    }
}

#[derive(Default)]
pub struct Capacity {
    state: Mutex<State>,
    changed: Condvar,
}

/// A slot in service, given back when dropped.
pub struct Slot<'a> {
    capacity: &'a Capacity,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.capacity.lock().in_service -= 1;
        self.capacity.changed.notify_all();
    }
}

/// Why a request was turned away, for the 503's message.
#[derive(Debug, PartialEq)]
pub struct Overloaded {
    pub in_service: u64,
    pub queued: u64,
}

fn free(in_service: u64, limits: Limits) -> bool {
    limits.capacity.is_none_or(|capacity| in_service < capacity)
}

impl Capacity {
    /// The counters hold plain numbers, so a panic while holding the lock cannot tear them.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot at once when one is free and nobody waits; else a place in the queue, waiting
    /// until the slot comes (the limits read by `limits` at each wake); else `Overloaded`.
    pub fn admit(&self, limits: impl Fn() -> Limits) -> Result<Slot<'_>, Overloaded> {
        let mut state = self.lock();
        let now = limits();
        if state.queued() == 0 && free(state.in_service, now) {
            state.enter();
            return Ok(Slot { capacity: self });
        }
        if now.queue.is_some_and(|queue| state.queued() >= queue) {
            state.stats.overloaded_503s += 1;
            return Err(Overloaded { in_service: state.in_service, queued: state.queued() });
        }
        let ticket = state.issued;
        state.issued += 1;
        state.stats.max_queued = state.stats.max_queued.max(state.queued());
        let since = Instant::now();
        while !(ticket == state.next_in && free(state.in_service, limits())) {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.next_in += 1;
        state.enter();
        state.queue_wait += since.elapsed();
        drop(state);
        // The next in line may fit as well (a raised capacity frees several slots at once).
        self.changed.notify_all();
        Ok(Slot { capacity: self })
    }

    /// Wakes the waiting requests to look at the limits again.
    pub fn limits_changed(&self) {
        self.changed.notify_all();
    }

    pub fn stats(&self) -> CapacityStats {
        let state = self.lock();
        let queue_wait_ms = u64::try_from(state.queue_wait.as_millis()).unwrap_or(u64::MAX);
        CapacityStats { queue_wait_ms, ..state.stats }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::thread;

    use super::*;

    const TWO_AND_ONE: Limits = Limits { capacity: Some(2), queue: Some(1) };

    #[test]
    fn unlimited_admits_everyone_and_counts_the_most_in_service() {
        let capacity = Capacity::default();
        let slots: Vec<_> = (0..5).map(|_| capacity.admit(Limits::default).unwrap()).collect();
        drop(slots);
        let _again = capacity.admit(Limits::default).unwrap();
        assert_eq!(capacity.stats(), CapacityStats { max_in_service: 5, ..CapacityStats::default() });
    }

    #[test]
    fn past_the_capacity_and_the_queue_a_request_is_overloaded_at_once() {
        let capacity = Arc::new(Capacity::default());
        let (a, b) = (capacity.admit(|| TWO_AND_ONE).unwrap(), capacity.admit(|| TWO_AND_ONE).unwrap());
        let waiter = {
            let capacity = Arc::clone(&capacity);
            thread::spawn(move || drop(capacity.admit(|| TWO_AND_ONE).unwrap()))
        };
        while capacity.stats().max_queued == 0 {
            thread::yield_now();
        }
        assert_eq!(capacity.admit(|| TWO_AND_ONE).err(), Some(Overloaded { in_service: 2, queued: 1 }));
        thread::sleep(Duration::from_millis(20));
        drop(a);
        waiter.join().unwrap();
        drop(b);
        let stats = capacity.stats();
        assert_eq!((stats.overloaded_503s, stats.max_in_service, stats.max_queued), (1, 2, 1));
        assert!(stats.queue_wait_ms >= 20, "{stats:?}");
    }

    #[test]
    fn a_queue_of_zero_refuses_whatever_finds_the_slots_taken() {
        let capacity = Capacity::default();
        let limits = || Limits { capacity: Some(1), queue: Some(0) };
        let _slot = capacity.admit(limits).unwrap();
        assert!(capacity.admit(limits).is_err());
    }

    #[test]
    fn many_threads_never_exceed_the_capacity() {
        let capacity = Arc::new(Capacity::default());
        let limits = || Limits { capacity: Some(3), queue: None };
        let (inside, order) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
        let threads: Vec<_> = (0..16)
            .map(|n| {
                let (capacity, inside, order) = (Arc::clone(&capacity), Arc::clone(&inside), Arc::clone(&order));
                thread::spawn(move || {
                    let _slot = capacity.admit(limits).unwrap();
                    assert!(inside.fetch_add(1, Ordering::SeqCst) < 3);
                    order.lock().unwrap().push(n);
                    thread::sleep(Duration::from_millis(2));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let stats = capacity.stats();
        assert_eq!((stats.max_in_service, stats.overloaded_503s), (3, 0));
        assert_eq!(order.lock().unwrap().len(), 16);
    }

    #[test]
    fn raising_the_capacity_lets_the_waiting_requests_in() {
        let capacity = Arc::new(Capacity::default());
        let limit = Arc::new(AtomicU64::new(1));
        let limits = {
            let limit = Arc::clone(&limit);
            move || Limits { capacity: Some(limit.load(Ordering::SeqCst)), queue: None }
        };
        let _held = capacity.admit(&limits).unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (capacity, limits) = (Arc::clone(&capacity), limits.clone());
                thread::spawn(move || drop(capacity.admit(limits).unwrap()))
            })
            .collect();
        while capacity.stats().max_queued < 3 {
            thread::yield_now();
        }
        limit.store(8, Ordering::SeqCst);
        capacity.limits_changed();
        waiters.into_iter().for_each(|t| t.join().unwrap());
    }
}
