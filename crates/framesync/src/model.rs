//! The values framesync works with between the servers and the ledger: frame states, the
//! records a pull stages, the records a push sends, dead letters. No I/O here.

use serde::Serialize;

use crate::delivery::{DeadReason, Key};
use crate::frames::Epoch;

/// Where a frame is on its way: `missing` (never pulled, or a pull failed), `pulled` (staged,
/// nothing sent), `pushing` (records may have reached the RS), `delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameState {
    Missing,
    Pulled,
    Pushing,
    Delivered,
}

impl FrameState {
    /// The state a `frames.state` text names; None for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "missing" => Some(Self::Missing),
            "pulled" => Some(Self::Pulled),
            "pushing" => Some(Self::Pushing),
            "delivered" => Some(Self::Delivered),
            _ => None,
        }
    }
}

/// A frame row that is not delivered, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFrame {
    pub start: Epoch,
    pub state: FrameState,
    pub next_attempt: Option<Epoch>,
    /// Failed attempts since its last progress.
    pub attempts: i64,
    /// Its last failed pull was refused by the SS, not failed for a passing reason.
    pub refused: bool,
}

/// Why a pull failed, as far as the order of retries cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// Something that passes: an outage, a busy SS, a reset, a broken page, a pull too slow.
    Passing,
    /// The SS refused the frame (a 4xx): history it no longer keeps, a request it will not serve.
    Refused,
}

/// A record as it is staged by a pull.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRecord {
    pub uid: String,
    pub ts_ms: Option<i64>,
    pub body: String,
}

/// A staged record not yet acknowledged nor dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub uid: String,
    pub body: String,
    /// The key it was sent under; None if it was never sent.
    pub key: Option<Key>,
    /// Failed sends counted against it so far.
    pub attempts: i64,
    /// It may be at the RS already: it may have been sent (a crash, a lost answer), or it is
    /// staged again for a redelivery. Looked up before it is sent, where the RS has a lookup.
    pub unknown: bool,
    /// A send of it failed before (counted against it or not).
    pub failed_before: bool,
}

/// A record set aside for a person: refused by the RS, invalid, exhausted or set aside by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub uid: String,
    pub reason: DeadReason,
    pub status: Option<u16>,
    pub response: Option<String>,
    pub detail: String,
    pub body: String,
    /// The key it was sent under, kept so a retry sends it under the same one.
    pub key: Option<Key>,
    pub attempts: i64,
}

impl DeadLetter {
    /// A record that failed validation: never sent.
    pub fn invalid(uid: String, detail: String, body: String) -> Self {
        DeadLetter {
            uid,
            reason: DeadReason::Invalid,
            status: None,
            response: None,
            detail,
            body,
            key: None,
            attempts: 0,
        }
    }
}

/// `synchronous` for the ledger (`run.synchronous`): NORMAL survives any process crash; FULL also
/// survives power loss at the cost of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Normal,
    Full,
}

/// What a prune deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub uids: i64,
    pub frames: i64,
    pub runs: i64,
    /// `late_records` rows (found by a re-check longer ago than the retention).
    pub late_records: i64,
    /// Late records counted by the deleted frame rows.
    pub late: i64,
    /// Records pushed counted by the deleted runs.
    pub records_pushed: i64,
    pub transactions: i64,
    /// Nothing prunable is left (false when the deadline stopped it first).
    pub finished: bool,
}

impl Pruned {
    pub fn add(&mut self, batch: &Pruned) {
        self.uids += batch.uids;
        self.frames += batch.frames;
        self.runs += batch.runs;
        self.late_records += batch.late_records;
        self.late += batch.late;
        self.records_pushed += batch.records_pushed;
        self.transactions += batch.transactions;
        self.finished = batch.finished;
    }

    pub fn rows(&self) -> i64 {
        self.uids + self.frames + self.runs + self.late_records
    }
}

/// Old frames that stay although they are older than the retention, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub awaiting_recheck: i64,
    pub with_dead_letters: i64,
    pub not_delivered: i64,
}
