//! `accept-config`: records a deliberate change of the pipeline — another source or sink URL,
//! reference time or record layout — in the ledger, so the changed config is no longer refused.
//! The frame size never changes: frames of another size would not line up with those delivered.

use std::io::Write;

use anyhow::Result;

use crate::Usage;
use crate::config::Config;
use crate::identity::{Difference, refusal};
use crate::job::{Clock, SystemClock};
use crate::ledger::{Adopt, Ledger};
use crate::lock::Side;

pub fn accept_config(config: &Config, out: &mut dyn Write) -> Result<u8> {
    let path = config.ledger.display();
    crate::ledger::access::writable(&config.ledger)?;
    if !config.ledger.exists() {
        writeln!(
            out,
            "nothing to accept: {path} does not exist yet; the first run records this config's pipeline in it"
        )?;
        return Ok(0);
    }
    // Both locks, as a run: no run works from the old identity while it changes.
    let _locks = super::lock_by_hand(config, &[Side::Pull, Side::Push])?;
    let mut ledger = Ledger::open_with(&config.ledger, config.run.sync, config.run.busy_timeout)?;
    let now = SystemClock.now();
    let adoption = ledger.adopt_identity(&config.identity, config.frames.delay, now, Adopt::Always)?;
    if adoption.differences.iter().any(Difference::is_frame_size) {
        let refused = refusal(ledger.path(), &adoption.differences, config.file.as_deref());
        return Err(Usage(format!("nothing accepted: {refused}")).into());
    }
    if !adoption.recorded {
        writeln!(out, "nothing to accept: ledger {path} already belongs to this config's pipeline")?;
    } else if !adoption.before.is_identity() {
        writeln!(out, "recorded this config's pipeline in ledger {path}, which had none yet")?;
    } else {
        print_accepted(out, &path.to_string(), &adoption.differences)?;
    }
    Ok(0)
}

fn print_accepted(out: &mut dyn Write, path: &str, differences: &[Difference]) -> std::io::Result<()> {
    writeln!(out, "accepted for ledger {path}:")?;
    for d in differences {
        writeln!(out, "  {}: {} in the ledger, now {}", d.key, d.ledger, d.config)?;
    }
    writeln!(
        out,
        "frames already delivered stay delivered and are not pulled again; `framesync verify --from --to` compares a range with the SS"
    )
}
