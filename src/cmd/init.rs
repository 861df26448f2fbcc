//! `init`: writes the commented example config and creates its ledger.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Usage;
use crate::config::EXAMPLE;
use crate::ledger::{Ledger, Sync};

pub fn init(path: PathBuf, out: &mut dyn Write) -> Result<u8> {
    if path.exists() {
        return Err(Usage(format!("{} already exists; framesync init does not overwrite it", path.display())).into());
    }
    write_new(&path, EXAMPLE)?;
    let ledger = path.parent().unwrap_or(Path::new(".")).join("framesync.db");
    Ledger::open(&ledger, Sync::Normal)?;
    writeln!(out, "wrote {} and created the ledger {}", path.display(), ledger.display())?;
    writeln!(
        out,
        "next: edit the [source] and [sink] URLs, export SS_TOKEN and RS_TOKEN, then `framesync --config {} check`",
        path.display()
    )?;
    Ok(0)
}

/// Writes a file that must not exist yet, atomically: a temp file in the same folder, renamed.
fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
