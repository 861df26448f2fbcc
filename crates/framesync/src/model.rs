//! The values framesync works with between the servers and the ledger: frame states, the
//! records a pull stages, the records a push sends, dead letters. No I/O here.

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

/// What a pull found beside the records to stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullCounts {
    pub out_of_frame: i64,
    pub duplicates: i64,
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
