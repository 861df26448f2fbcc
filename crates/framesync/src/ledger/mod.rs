//! The ledger: the SQLite file that is framesync's only state, and the only module that speaks
//! SQL. Every statement framesync runs is behind a [`Ledger`] method that takes and returns typed
//! values; the connection is private.
//!
//! Opening it ([`open`]) applies the migrations in `sql/` and checks the durability settings;
//! every write is a short `BEGIN IMMEDIATE` transaction, so a kill at any instant leaves a
//! consistent ledger. By concern:
//! - [`identity`]: the pipeline row and its identity;
//! - [`runs`]: one row per command run;
//! - [`frames`]: what the planner reads, and failed pulls;
//! - [`staging`]: a frame's records on their way in, held outside the ledger's tables while the
//!   pages arrive and committed in one short transaction (a pull, a re-check, a redelivery);
//! - [`rows`]: writing many rows at once, and dead letters;
//! - [`push`]: pending records, their keys and failed sends;
//! - [`deliver`]: acknowledgements, dead letters and delivered frames;
//! - [`recheck`]: re-checks due and failed, late-record figures;
//! - [`dead_letters`]: dead letters listed, retried, set aside and dropped by hand;
//! - [`servers`]: what framesync remembers about the SS and the RS between runs;
//! - [`prune`]: deleting what is older than `run.retain`;
//! - [`views`]: the read models of `status`, the metrics file, the timeline and `verify`;
//! - [`snapshot`]: the read-only view `check` takes, which never creates nor migrates a ledger;
//! - [`access`]: the ledger's mode, and whether this process may create or write it.

pub mod access;
mod dead_letters;
mod deliver;
mod frames;
mod identity;
mod open;
mod prune;
mod push;
mod recheck;
mod rows;
mod runs;
mod servers;
pub mod snapshot;
mod staging;
pub mod views;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use rusqlite::{Connection, TransactionBehavior};

use crate::model::DeadLetter;
use crate::redact::Redactor;

pub use access::Absent;
pub use identity::{Adopt, Adoption};
pub use open::{IDENTITY_SCHEMA, SCHEMA_VERSION};
pub use runs::RunFigures;
pub use staging::{Committed, Staging};

/// How the ledger is opened is the ledger's to say; the value lives with the domain values.
pub use crate::model::Synchronous;

/// How long a write waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The ledger cannot be used: not SQLite, from a newer framesync, or on a network filesystem.
/// framesync exits with code 3 and never writes over such a file.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {problem}")]
pub struct Unusable {
    pub path: PathBuf,
    pub problem: String,
}

/// An open ledger: one SQLite connection, configured and migrated.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// A [`Staging`] is open on this connection.
    staging_open: std::cell::Cell<bool>,
    /// Scrubbed from every text the ledger writes (errors, answers, reasons).
    secrets: Redactor,
}

impl Ledger {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scrubs `secrets` from every text written from now on: an error, an RS answer or a reason
    /// reaches the ledger as it was said, and the ledger keeps it without the secrets.
    pub fn scrub_with(&mut self, secrets: &Redactor) {
        self.secrets = secrets.clone();
    }

    /// A text as the ledger keeps it: the config's secrets and those learnt while running (an
    /// OAuth2 token an RS echoed back) scrubbed.
    fn scrubbed(&self, text: &str) -> String {
        crate::redact::scrub(&self.secrets.scrub(text))
    }

    /// A dead letter as the ledger keeps it: what was said about it scrubbed (its body is the
    /// record's own).
    fn scrubbed_letter(&self, letter: &DeadLetter) -> DeadLetter {
        DeadLetter {
            response: letter.response.as_deref().map(|response| self.scrubbed(response)),
            detail: self.scrubbed(&letter.detail),
            ..letter.clone()
        }
    }

    /// Prepares `sql` against this ledger's schema without running it: whether a query a person
    /// would run (`sql/queries/`) still fits the schema.
    pub fn prepare_check(&self, sql: &str) -> Result<()> {
        self.conn.prepare(sql)?;
        Ok(())
    }

    /// A write transaction (`BEGIN IMMEDIATE`): it takes SQLite's write lock up front, so it
    /// waits for another writer at the start instead of failing halfway.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}
