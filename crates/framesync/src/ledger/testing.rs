//! What the unit tests of every ledger module share.

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
