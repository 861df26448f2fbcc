//! The pipeline row: the settings and the identity of the pipeline a ledger belongs to.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::Ledger;
use crate::frames::Epoch;
use crate::identity::{Difference, Identity, Recorded};

/// When [`Ledger::adopt_identity`] records the config's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// Only into a ledger that has none yet (new, or from a framesync before identities): what
    /// every command that writes does.
    IfNone,
    /// Over the ledger's own, unless the frame size differs: `accept-config`.
    Always,
}

/// What [`Ledger::adopt_identity`] found, and whether it recorded the config's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub before: Recorded,
    pub differences: Vec<Difference>,
    pub recorded: bool,
}

impl Ledger {
    /// Records the pipeline's settings: the whole row when the ledger has none yet (tests and
    /// benchmarks build ledgers this way), otherwise only the delay. The reference time and the
    /// frame size belong to the pipeline's identity, which only [`Ledger::adopt_identity`] writes.
    pub fn sync_pipeline(&mut self, frame_size: i64, reference: Epoch, delay: i64, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO pipeline (id, frame_size, reference, delay, updated_at) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET delay = ?3, updated_at = ?4",
            params![frame_size, reference, delay, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What the ledger records of the pipeline it belongs to.
    pub fn identity(&self) -> Result<Recorded> {
        read_identity(&self.conn)
    }

    /// Compares `identity` (the config's) with the ledger's and, as `adopt` allows, records it
    /// with the config's `delay` — in one transaction, so two commands cannot both record theirs.
    /// A frame size other than the ledger's is never recorded.
    pub fn adopt_identity(&mut self, identity: &Identity, delay: i64, now: Epoch, adopt: Adopt) -> Result<Adoption> {
        // An identity once recorded changes only under both run locks (`accept-config`), so a
        // command that would only fill in a missing one need not wait for the write lock.
        if adopt == Adopt::IfNone {
            let before = self.identity()?;
            if before.is_identity() {
                let differences = before.differences(identity);
                return Ok(Adoption { before, differences, recorded: false });
            }
        }
        let tx = self.write()?;
        let before = read_identity(&tx)?;
        let differences = before.differences(identity);
        let resized = differences.iter().any(Difference::is_frame_size);
        let unchanged = before.is_identity() && differences.is_empty();
        let recorded = match adopt {
            Adopt::IfNone => !before.is_identity() && differences.is_empty(),
            Adopt::Always => !(resized || unchanged),
        };
        if recorded {
            write_identity(&tx, identity, delay, now)?;
            tx.commit()?;
        }
        Ok(Adoption { before, differences, recorded })
    }
}

/// The pipeline's identity as the ledger records it (schema version `IDENTITY_SCHEMA` on).
pub(super) fn read_identity(conn: &Connection) -> Result<Recorded> {
    let row = conn
        .query_row(
            "SELECT frame_size, reference, identity_at IS NOT NULL, source_url, source_time_format,
                    source_records, source_uid, sink_url
             FROM pipeline WHERE id = 1",
            [],
            |r| {
                if !r.get::<_, bool>(2)? {
                    return Ok(Recorded::FrameSize(r.get(0)?));
                }
                Ok(Recorded::Identity(Identity {
                    frames_size: r.get(0)?,
                    frames_start: r.get(1)?,
                    source_url: r.get(3)?,
                    source_time_format: r.get(4)?,
                    source_records: r.get(5)?,
                    source_uid: r.get(6)?,
                    sink_url: r.get(7)?,
                }))
            },
        )
        .optional()?;
    Ok(row.unwrap_or(Recorded::Nothing))
}

/// Writes the pipeline row with `identity`; an existing row keeps its frame size, which
/// the caller has checked.
fn write_identity(tx: &Connection, identity: &Identity, delay: i64, now: Epoch) -> Result<()> {
    tx.execute(
        "INSERT INTO pipeline (id, frame_size, reference, delay, updated_at, source_url, source_time_format,
                               source_records, source_uid, sink_url, identity_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?4)
         ON CONFLICT (id) DO UPDATE SET reference = ?2, delay = ?3, updated_at = ?4, source_url = ?5,
             source_time_format = ?6, source_records = ?7, source_uid = ?8, sink_url = ?9, identity_at = ?4",
        params![
            identity.frames_size,
            identity.frames_start,
            delay,
            now,
            identity.source_url,
            identity.source_time_format,
            identity.source_records,
            identity.source_uid,
            identity.sink_url
        ],
    )?;
    Ok(())
}
