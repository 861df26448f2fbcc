//! Who may touch the ledger: it is created readable and writable by its owner alone (it holds
//! staged records and RS answers), a command that only reads never creates it, and a folder or
//! file framesync cannot write is said as such — naming the path, the user and the reason.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, accessat};
use rustix::io::Errno;

use super::Unusable;

/// The mode of every file framesync creates beside the ledger (the ledger, the lock files);
/// SQLite gives its `-wal` and `-shm` files the ledger's own mode.
pub const PRIVATE: u32 = 0o600;

/// The ledger does not exist yet, and the command only reads: it creates nothing. framesync
/// exits with code 3.
#[derive(Debug, thiserror::Error)]
#[error("no ledger yet at {}: the first `framesync run` creates it", .0.display())]
pub struct Absent(pub PathBuf);

/// Fails when there is no ledger at `path` ([`Absent`]), or when this process could not write
/// it ([`Unusable`], see [`writable`]): a command that only reads says so too, for every run
/// would fail.
pub fn existing(path: &Path) -> anyhow::Result<()> {
    writable(path)?;
    if path.exists() { Ok(()) } else { Err(Absent(path.to_path_buf()).into()) }
}

/// The folder that holds the ledger and the files beside it.
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether this process may write the ledger at `path` and create files beside it (its
/// `-wal`, `-shm` and lock files), asked of the kernel with the process's effective user: so
/// root passes a folder with mode 0555, and nobody passes a read-only file system.
pub fn writable(path: &Path) -> Result<(), Unusable> {
    let unusable = |problem: String| Unusable { path: path.to_path_buf(), problem };
    let folder = folder(path);
    match std::fs::metadata(folder) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable(format!("its folder {} does not exist", folder.display())));
        }
        Err(e) => return Err(unusable(format!("its folder {} cannot be read: {e}", folder.display()))),
        Ok(meta) if !meta.is_dir() => {
            return Err(unusable(format!("{} is not a folder", folder.display())));
        }
        Ok(_) => {}
    }
    if let Err(errno) = accessat(CWD, folder, Access::WRITE_OK, AtFlags::EACCESS) {
        return Err(unusable(format!("its folder {} is not writable: {}", folder.display(), why(errno))));
    }
    if path.exists()
        && let Err(errno) = accessat(CWD, path, Access::WRITE_OK | Access::READ_OK, AtFlags::EACCESS)
    {
        return Err(unusable(format!("the file is not readable and writable: {}", why(errno))));
    }
    Ok(())
}

/// What an `access` refusal means, in an operator's words.
fn why(errno: Errno) -> String {
    match errno {
        Errno::ACCESS | Errno::PERM => format!("permission denied for user {}", user()),
        Errno::ROFS => "it is on a read-only file system".into(),
        other => std::io::Error::from(other).to_string(),
    }
}

/// The effective user, by name where /etc/passwd has it: "framesync (uid 998)".
fn user() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid.to_string()).then(|| name.to_owned())
        })
    });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Creates the file at `path` with mode [`PRIVATE`] if it does not exist; an existing file
/// keeps its content and its mode.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new().create(true).truncate(false).write(true).mode(PRIVATE).open(path)
}

/// The ledger file's mode when its group or others may read or write it.
pub fn shared_mode(path: &Path) -> std::io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}
