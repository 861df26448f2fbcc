//! A batch the RS answered item by item (`[sink.items]`, `Verdict::PerItem`): the records it
//! took are acknowledged, those it refused become dead letters with the item's reason, and
//! the others go again — only they, under a key of their own.
//!
//! **Keys.** The records sent back go under [`again_key`]: a key chained on the one they went
//! under. Not the batch's key: an RS that honors keys stored its answer for the whole batch
//! and would replay it, results for other records, for the smaller set (and framesync would
//! refuse an answer of the wrong length, forever). The RS said it did not take them, so a new
//! key cannot double them.
//!
//! **Crashes.** The acknowledgements, the dead letters and the new keys are written in one
//! transaction ([`crate::ledger::Ledger::settle_items`]) before anything goes again. A kill
//! before it leaves the batch whole under its key: the next run sends it again and an RS that
//! honors keys replays the same answer for the same records (one that does not, e.g.
//! Elasticsearch, is made idempotent by the UID as the document id). A kill after it leaves
//! the settled records settled and the others under their new key, which the RS never saw or
//! answers the same way again.

use anyhow::Result;

use super::Job;
use super::backoff;
use super::blame::FailedUnit;
use super::outgoing::{Item, Unit};
use crate::delivery::{DeadReason, Key};
use crate::frames::Frame;
use crate::model::DeadLetter;
use crate::sink::{Outgoing, Verdict, again_key};

/// A per-item answer's records, sorted by what becomes of them.
#[derive(Default)]
struct Sorted {
    acknowledged: Vec<Item>,
    rejected: Vec<(Item, u16, String)>,
    /// To send again: the RS failed them (retry) or blamed itself or the config (broken).
    again: Vec<Item>,
    /// The first retryable failure: its reason and status.
    retry: Option<(String, Option<u16>)>,
    /// The first item that says the RS or the config is wrong.
    broken: Option<String>,
}

fn sort(items: Vec<Item>, verdicts: Vec<Verdict>) -> Sorted {
    let mut sorted = Sorted::default();
    for (item, verdict) in items.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Acknowledged => sorted.acknowledged.push(item),
            Verdict::Rejected { status, response } => sorted.rejected.push((item, status, response)),
            Verdict::RetryLater { reason, status, .. } => {
                sorted.retry.get_or_insert((reason, status));
                sorted.again.push(item);
            }
            Verdict::Broken { reason } => {
                sorted.broken.get_or_insert(reason);
                sorted.again.push(item);
            }
            Verdict::TooLarge { response } => {
                sorted.broken.get_or_insert(format!("a per-item result said 413 for the batch: {response}"));
                sorted.again.push(item);
            }
            Verdict::PerItem(_) => {
                sorted.broken.get_or_insert("per-item results inside per-item results".into());
                sorted.again.push(item);
            }
        }
    }
    sorted
}

impl Job<'_> {
    /// Settles a per-item answer to `unit` (`tries`: how many times its records went again
    /// within this run), then sends what is to go again, a few times within the run.
    pub(super) fn per_item(&mut self, frame: Frame, unit: Unit, verdicts: Vec<Verdict>, tries: u32) -> Result<()> {
        let key = unit.key;
        let sorted = sort(unit.items, verdicts);
        let again: Vec<Outgoing> = sorted.again.iter().map(|i| i.outgoing.clone()).collect();
        let again_key = Key::Batch(again_key(&key, &again));
        self.settle_items(frame, &key, &sorted, &again_key)?;
        crate::hooks::kill_point("after-ack");
        if !sorted.rejected.is_empty() {
            crate::hooks::kill_point("after-dead-letter");
        }
        let Sorted { acknowledged, rejected, again, retry, broken } = sorted;
        if !acknowledged.is_empty() {
            self.pushing.evidence.acknowledged(acknowledged.iter().any(|i| i.pending.failed_before));
            self.pushing.failed_in_a_row = 0;
            self.pushing.refused.clear();
        }
        for (item, status, response) in &rejected {
            log::info!("frame {frame}: record {:?} dead-lettered: item status {status}: {response}", item.pending.uid);
            if !self.refused(frame, &format!("HTTP {status}"))? {
                return Ok(());
            }
        }
        if let Some(reason) = broken {
            self.doubt_lookup();
            return self.stop_pushing(frame, format!("{reason} (the RS or the config is wrong, not a record)"), None);
        }
        let Some((reason, status)) = retry else { return Ok(()) };
        if tries < self.config.sink.retries && !self.out_of_time() {
            self.clock.sleep(backoff::retry_pause(tries));
            log::info!("frame {frame}: the RS failed {} record(s) of a batch ({reason}); they go again", again.len());
            return self.send_unit_try(frame, Unit { items: again, key: again_key, fresh: false }, tries + 1);
        }
        if acknowledged.is_empty() && rejected.is_empty() {
            self.pushing.failed_in_a_row += 1;
        }
        let uids: Vec<&str> = again.iter().map(|i| i.pending.uid.as_str()).collect();
        log::info!("frame {frame}: the RS failed {uids:?}: {reason}");
        self.pushing.evidence.failed.push(FailedUnit { frame, items: again, key: again_key, reason, status });
        Ok(())
    }

    /// Writes what the answer settled in one transaction (the module doc says why).
    fn settle_items(&mut self, frame: Frame, key: &Key, sorted: &Sorted, again_key: &Key) -> Result<()> {
        self.record_acks()?;
        let acknowledged: Vec<&str> = sorted.acknowledged.iter().map(|i| i.pending.uid.as_str()).collect();
        let letters: Vec<DeadLetter> = sorted
            .rejected
            .iter()
            .map(|(item, status, response)| DeadLetter {
                uid: item.pending.uid.clone(),
                reason: DeadReason::Rejected,
                status: Some(*status),
                response: Some(response.clone()),
                detail: format!("the RS answered item status {status} in a per-item result"),
                body: item.pending.body.clone(),
                key: Some(key.clone()),
                attempts: item.pending.attempts,
            })
            .collect();
        let again: Vec<(i64, Key)> = sorted.again.iter().map(|i| (i.pending.seq, again_key.clone())).collect();
        let added = self.ledger.settle_items(frame.start, &acknowledged, &letters, &again, self.clock.now())?;
        self.outcome.figures.records_pushed += acknowledged.len() as i64;
        self.dead_lettered(DeadReason::Rejected, added);
        Ok(())
    }
}
