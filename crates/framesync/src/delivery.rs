//! What a record's delivery is made of, shared by the ledger, the job and the RS client: the
//! Idempotency-Key it travels under, and why a record was set aside as a dead letter.

use std::fmt;

/// The Idempotency-Key a staged record was sent under. A record is re-sent only under the key
/// it was first sent under, so an RS that honors keys stores it once however its batch fared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Its own UID's key (record mode, a batch of one, or a batch split into single records).
    Own,
    /// The key of the batch it was sent in (`batch-<hash of the batch's UIDs>`).
    Batch(String),
}

impl Key {
    /// As the ledger stores it: '' for the record's own key.
    pub fn to_sql(&self) -> &str {
        match self {
            Key::Own => "",
            Key::Batch(key) => key,
        }
    }

    /// From the ledger's column; NULL is a record never sent.
    pub fn from_sql(value: Option<String>) -> Option<Key> {
        match value {
            None => None,
            Some(text) if text.is_empty() => Some(Key::Own),
            Some(text) => Some(Key::Batch(text)),
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Key::Batch(_))
    }
}

/// Why a record is a dead letter: it will not be delivered without a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeadReason {
    /// The RS refused it as a bad record (`sink.reject`, e.g. 400 or 422).
    Rejected,
    /// It failed validation (no usable UID, or `sink.map` cannot fill it) and was never sent.
    Invalid,
    /// The RS failed it `sink.max_attempts` times while acknowledging other records.
    Exhausted,
    /// An operator dead-lettered it by hand (`framesync dead-letters add`).
    Manual,
}

impl DeadReason {
    pub const ALL: [DeadReason; 4] =
        [DeadReason::Rejected, DeadReason::Invalid, DeadReason::Exhausted, DeadReason::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Invalid => "invalid",
            DeadReason::Exhausted => "exhausted",
            DeadReason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_reasons_round_trip_through_their_column_text() {
        for key in [Key::Own, Key::Batch("batch-00ff".into())] {
            assert_eq!(Key::from_sql(Some(key.to_sql().to_owned())), Some(key));
        }
        assert_eq!(Key::from_sql(None), None, "never sent");
        for reason in DeadReason::ALL {
            assert_eq!(DeadReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(DeadReason::parse("lost"), None);
    }
}
