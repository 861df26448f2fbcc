//! `prune`: deletes now what the ledger no longer needs — delivered UIDs and frame rows of
//! frames older than `run.retain`, and old runs — instead of waiting for the end of the next
//! `run`, and says what it deleted and what it kept. The rules are in [`crate::prune`].

use std::io::Write;

use anyhow::Result;

use crate::config::Config;
use crate::frames::rfc3339;
use crate::job::{Clock, SystemClock};
use crate::lock::Side;
use crate::model::{Kept, Pruned};
use crate::plural::plural;

pub fn prune(config: &Config, out: &mut dyn Write) -> Result<u8> {
    // Both locks, as a run: nothing else writes to the ledger while the prune goes on.
    super::existing_ledger(config)?;
    let _locks = super::lock_by_hand(config, &[Side::Pull, Side::Push])?;
    let mut ledger = super::open_ledger(config, super::Access::Write)?;
    let now = SystemClock.now();
    let cutoff = now - config.run.retain;
    let pruned = crate::prune::prune(&mut ledger, config.run.retain, now, &|| false)?;
    print_pruned(out, &pruned, cutoff)?;
    print_kept(out, &ledger.kept(cutoff)?)?;
    Ok(0)
}

fn print_pruned(out: &mut dyn Write, p: &Pruned, cutoff: i64) -> std::io::Result<()> {
    writeln!(
        out,
        "pruned {} and {} of frames delivered before {}, {} and {}, in {}",
        plural(p.uids, "delivered UID"),
        plural(p.frames, "frame row"),
        rfc3339(cutoff),
        plural(p.runs, "run"),
        plural(p.late_records, "late-record row"),
        plural(p.transactions, "transaction")
    )?;
    writeln!(out, "delivered_spans keep every pruned frame delivered: nothing pruned is ever pulled again")
}

fn print_kept(out: &mut dyn Write, k: &Kept) -> std::io::Result<()> {
    if k.awaiting_recheck > 0 {
        writeln!(out, "kept {} older frames that still await a re-check (frames.recheck)", k.awaiting_recheck)?;
    }
    if k.with_dead_letters > 0 {
        writeln!(
            out,
            "kept {} older frames with dead letters; `framesync dead-letters list` shows them, retry or drop lets them go",
            k.with_dead_letters
        )?;
    }
    if k.not_delivered > 0 {
        writeln!(
            out,
            "kept {} not yet delivered (`framesync status` shows why)",
            plural(k.not_delivered, "older frame")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_each_is_said_in_the_singular() {
        let mut out = Vec::new();
        let one = Pruned { uids: 1, frames: 1, runs: 1, late_records: 1, transactions: 1, ..Pruned::default() };
        print_pruned(&mut out, &one, 0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("pruned 1 delivered UID and 1 frame row of frames"), "{text}");
        assert!(text.contains("1 run and 1 late-record row, in 1 transaction\n"), "{text}");
        let mut out = Vec::new();
        print_pruned(&mut out, &Pruned { uids: 2, ..one }, 0).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("pruned 2 delivered UIDs and"));
    }
}
