//! A ledger opened read-only, as `check` reads it: never created, migrated or configured, and
//! nothing left behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use rusqlite::{Connection, OpenFlags};

use super::identity::read_identity;
use crate::identity::Recorded;

/// A read-only view of a ledger file, whatever its schema version.
pub struct Snapshot {
    conn: Connection,
}

/// A read that failed: the file is not a ledger a run could open either.
fn unreadable(e: rusqlite::Error) -> anyhow::Error {
    anyhow::anyhow!("it cannot be read as a SQLite database ({e}); a run would refuse it too")
}

/// Opens the ledger read-only without leaving anything behind. With no `-wal` file beside it,
/// every committed transaction is in the file itself, which is read as immutable: SQLite then
/// creates no `-wal` or `-shm` file (a plain read-only open of a WAL database would, and leave
/// them). With a `-wal` file a run may be writing, and the ledger is read through it as any
/// reader would, waiting up to `busy_timeout` for the writer.
pub(super) fn read_only(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    /// What a path may hold as it is in a `file:` URI.
    const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let immutable = if PathBuf::from(wal).exists() { "" } else { "&immutable=1" };
    let encoded = percent_encode(path.as_os_str().as_encoded_bytes(), PATH);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(format!("file:{encoded}?mode=ro{immutable}"), flags)?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

impl Snapshot {
    /// Opens the ledger read-only without leaving anything behind (see [`read_only`]).
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self> {
        Ok(Self { conn: read_only(path, busy_timeout)? })
    }

    /// The schema version (`PRAGMA user_version`): 0 for a file no framesync has set up.
    pub fn schema_version(&self) -> Result<usize> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(unreadable)
    }

    /// How many tables, views and indexes the file holds.
    pub fn schema_objects(&self) -> Result<i64> {
        self.conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0)).map_err(unreadable)
    }

    /// The pipeline's identity (schema version [`super::IDENTITY_SCHEMA`] on).
    pub fn identity(&self) -> Result<Recorded> {
        read_identity(&self.conn)
    }

    /// The frame size recorded in the pipeline row, if any.
    pub fn frame_size(&self) -> Result<Option<i64>> {
        self.conn.query_row("SELECT MAX(frame_size) FROM pipeline", [], |r| r.get(0)).map_err(unreadable)
    }

    /// How many frame rows the ledger holds.
    pub fn frames(&self) -> Result<i64> {
        self.conn.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0)).map_err(unreadable)
    }
}
