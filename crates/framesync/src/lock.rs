//! The run locks: an OS lock on a file of its own beside the ledger (never the ledger itself,
//! whose SQLite locks any closed handle would drop). The OS releases it when the process dies,
//! so there are no stale locks; the file is never deleted. It is created with mode 0600, as the
//! ledger is.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Which half of the job a lock guards: `pull` and `push` may run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Pull,
    Push,
}

/// Another run holds the lock. framesync exits 75 (EX_TEMPFAIL), silently by default.
#[derive(Debug, thiserror::Error)]
#[error("another framesync run holds {}", .0.display())]
pub struct Held(pub PathBuf);

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

pub fn path(ledger: &Path, side: Side) -> PathBuf {
    let suffix = match side {
        Side::Pull => ".pull.lock",
        Side::Push => ".push.lock",
    };
    let mut name = ledger.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes the lock for `side` or fails at once with [`Held`].
pub fn acquire(ledger: &Path, side: Side) -> Result<Lock> {
    let path = path(ledger, side);
    let file = crate::ledger::access::create_private(&path).with_context(|| {
        format!("cannot open the lock file {} (does its folder exist and is it writable?)", path.display())
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: write_pid(file) }),
        Err(TryLockError::WouldBlock) => Err(Held(path).into()),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Leaves the holder's process id in the lock file, for [`held_message`]. Only a hint: a file
/// that cannot be written still holds the lock.
fn write_pid(mut file: File) -> File {
    if file.set_len(0).is_ok() {
        let _ = write!(file, "{}", std::process::id());
    }
    file
}

/// What `run` says on a terminal when another run holds the lock (exit 75).
pub fn held_message(held: &Held) -> String {
    let pid = std::fs::read_to_string(&held.0).ok().and_then(|text| text.trim().parse::<u32>().ok());
    let pid = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
    format!("another framesync run holds {}{pid}; exiting 75", held.0.display())
}

/// Takes the locks of all `sides`, in a fixed order so two runs never wait on each other.
/// A folder or ledger this process cannot write fails with [`crate::ledger::Unusable`].
pub fn acquire_all(ledger: &Path, sides: &[Side]) -> Result<Vec<Lock>> {
    crate::ledger::access::writable(ledger)?;
    let mut sorted = sides.to_vec();
    sorted.sort_by_key(|s| matches!(s, Side::Push));
    sorted.dedup();
    sorted.into_iter().map(|side| acquire(ledger, side)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let first = acquire(&ledger, Side::Pull).unwrap();
        let e = acquire(&ledger, Side::Pull).unwrap_err();
        assert!(e.downcast_ref::<Held>().is_some());
        assert!(acquire(&ledger, Side::Push).is_ok(), "pull and push lock separately");
        drop(first);
        assert!(acquire(&ledger, Side::Pull).is_ok());
        assert!(path(&ledger, Side::Pull).exists(), "the lock file stays");
    }

    #[test]
    fn the_held_message_names_the_lock_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let _first = acquire(&ledger, Side::Pull).unwrap();
        let e = acquire(&ledger, Side::Pull).unwrap_err();
        let message = held_message(e.downcast_ref::<Held>().unwrap());
        let want = format!(
            "another framesync run holds {}.pull.lock (pid {}); exiting 75",
            ledger.display(),
            std::process::id()
        );
        assert_eq!(message, want);
        std::fs::write(path(&ledger, Side::Pull), "").unwrap();
        assert!(held_message(e.downcast_ref::<Held>().unwrap()).ends_with("l.db.pull.lock; exiting 75"));
    }

    #[test]
    fn taking_both_fails_if_either_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let _push = acquire(&ledger, Side::Push).unwrap();
        assert!(acquire_all(&ledger, &[Side::Pull, Side::Push]).is_err());
    }
}
