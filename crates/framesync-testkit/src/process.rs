//! Processes a test starts die with the test: killed and reaped when their handle drops, also
//! when the test panics.

use std::process::Child;

/// A child process, killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
