//! Acknowledgements recorded in groups: one transaction per group of at most `sink.ack_group`
//! records or `sink.ack_group_time`, instead of one per request. A crash loses the group's
//! acknowledgements, not its records: they lie within the frame's `sent_through`, so the next
//! run looks them up (where the RS has a lookup) or re-sends them with the same keys.

use std::time::Duration;

use anyhow::Result;

use super::Job;
use crate::frames::{Epoch, Frame};

/// Acknowledged records not yet recorded in the ledger, all of one frame.
#[derive(Debug, Default)]
pub(super) struct Acks {
    frame: Epoch,
    uids: Vec<String>,
    /// When the first of them was acknowledged, on the clock's `elapsed`.
    since: Option<Duration>,
}

impl Acks {
    /// The group holds `size` records, or its first is `age` old at `now` (on `elapsed`).
    fn due(&self, size: usize, age: Duration, now: Duration) -> bool {
        self.uids.len() >= size || self.since.is_some_and(|since| now >= since + age)
    }

    /// Empties the group.
    fn take(&mut self) -> Vec<String> {
        self.since = None;
        std::mem::take(&mut self.uids)
    }
}

impl Job<'_> {
    /// Holds acknowledged records for the next group commit.
    pub(super) fn acknowledged(&mut self, frame: Frame, uids: impl Iterator<Item = String>) -> Result<()> {
        if self.pushing.acks.frame != frame.start {
            self.record_acks()?;
            self.pushing.acks.frame = frame.start;
        }
        let now = self.clock.elapsed();
        self.pushing.acks.since.get_or_insert(now);
        self.pushing.acks.uids.extend(uids);
        Ok(())
    }

    /// Records the group if it is full or old enough: before each request, so the frame's last
    /// group waits for the frame's delivery and is recorded with it.
    pub(super) fn record_acks_if_due(&mut self) -> Result<()> {
        let sink = &self.config.sink;
        if self.pushing.acks.due(sink.ack_group, sink.ack_group_time, self.clock.elapsed()) {
            self.record_acks()
        } else {
            Ok(())
        }
    }

    /// Records the group's UIDs as delivered, in one transaction.
    pub(super) fn record_acks(&mut self) -> Result<()> {
        if self.pushing.acks.uids.is_empty() {
            return Ok(());
        }
        let acks = &self.pushing.acks;
        let uids: Vec<&str> = acks.uids.iter().map(String::as_str).collect();
        self.ledger.acknowledge(acks.frame, &uids, self.clock.now())?;
        self.outcome.figures.records_pushed += uids.len() as i64;
        self.pushing.acks.take();
        Ok(())
    }

    /// The frame's last group and its delivery, in one transaction; true when it was delivered
    /// (nothing of it is left to send). A group of a later frame (a window runs on across
    /// frames) is left to fill: the frame's own acknowledgements were recorded when the later
    /// frame's began.
    pub(super) fn record_last_acks(&mut self, frame: Frame, now: Epoch) -> Result<bool> {
        let uids = if self.pushing.acks.frame == frame.start { self.pushing.acks.take() } else { Vec::new() };
        let last: Vec<&str> = uids.iter().map(String::as_str).collect();
        let delivered = self.ledger.acknowledge_and_complete(frame, &last, self.first_recheck(now), now)?;
        self.outcome.figures.records_pushed += last.len() as i64;
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_due_when_full_or_old_enough() {
        let group = |n: usize, since: Option<u64>| Acks {
            frame: 0,
            uids: (0..n).map(|i| i.to_string()).collect(),
            since: since.map(Duration::from_millis),
        };
        let (size, age, now) = (3, Duration::from_millis(100), Duration::from_millis(1000));
        for (acks, due, why) in [
            (group(0, None), false, "empty"),
            (group(2, Some(950)), false, "neither full nor old"),
            (group(3, Some(950)), true, "full"),
            (group(4, Some(999)), true, "more than full"),
            (group(1, Some(900)), true, "exactly old enough"),
            (group(1, Some(901)), false, "not yet old enough"),
        ] {
            assert_eq!(acks.due(size, age, now), due, "{why}");
        }
        let mut acks = group(2, Some(10));
        assert_eq!(acks.take(), ["0", "1"]);
        assert!(!acks.due(1, Duration::ZERO, now), "taken: nothing held, no age");
    }
}
