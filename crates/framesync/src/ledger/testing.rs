//! What the unit tests of every ledger module share.

use rusqlite::types::FromSql;

use super::{Ledger, Synchronous};
use crate::frames::{Epoch, Frame, FrameSize};

/// A new ledger in a temp dir, removed when the dir is dropped.
pub fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("l.db"), Synchronous::Normal).unwrap();
    (dir, ledger)
}

/// The 1-minute frame starting at `start`.
pub fn frame(start: Epoch) -> Frame {
    FrameSize::new(60).unwrap().frame_at(start)
}

/// Direct reads and writes for tests that check or set up a row the API does not show.
impl Ledger {
    /// The first column of the first row `sql` returns.
    pub(crate) fn value<T: FromSql>(&self, sql: &str) -> T {
        self.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The first two columns of the first row `sql` returns.
    pub(crate) fn pair<T: FromSql, U: FromSql>(&self, sql: &str) -> (T, U) {
        self.conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    }

    /// The first column of every row `sql` returns.
    pub(crate) fn column<T: FromSql>(&self, sql: &str) -> Vec<T> {
        let mut stmt = self.conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// Runs `sql` as it is.
    pub(crate) fn run_sql(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }
}
