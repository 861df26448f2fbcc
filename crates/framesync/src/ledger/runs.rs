//! One `runs` row per command run: when it started, and its figures when it ends.

use anyhow::Result;
use rusqlite::params;

use super::Ledger;
use crate::frames::Epoch;

/// One run's figures, written to the `runs` row when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFigures {
    pub frames_pulled: i64,
    pub frames_delivered: i64,
    pub records_pulled: i64,
    pub records_pushed: i64,
    pub dead_letters: i64,
    pub errors: i64,
}

impl Ledger {
    pub fn begin_run(&mut self, command: &str, now: Epoch) -> Result<i64> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO runs (command, pid, started_at) VALUES (?1, ?2, ?3)",
            params![command, std::process::id(), now],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    pub fn end_run(
        &mut self,
        id: i64,
        figures: &RunFigures,
        exit_code: i32,
        message: Option<&str>,
        now: Epoch,
    ) -> Result<()> {
        let message = message.map(|m| self.scrubbed(m));
        let tx = self.write()?;
        tx.execute(
            "UPDATE runs SET ended_at = ?2, frames_pulled = ?3, frames_delivered = ?4, records_pulled = ?5,
                 records_pushed = ?6, dead_letters = ?7, errors = ?8, exit_code = ?9, message = ?10
             WHERE id = ?1",
            params![
                id,
                now,
                figures.frames_pulled,
                figures.frames_delivered,
                figures.records_pulled,
                figures.records_pushed,
                figures.dead_letters,
                figures.errors,
                exit_code,
                message
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}
