//! The ledger: the SQLite file that is framesync's only state. Opening it applies the
//! migrations in `sql/` and checks the durability settings; every write is a short
//! `BEGIN IMMEDIATE` transaction, so a kill at any instant leaves a consistent ledger.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior, params};

use crate::delivery::{DeadReason, Key};
use crate::frames::{Epoch, Frame};
use crate::identity::{Difference, Identity, Recorded};

/// Migrations in order; the ledger's `user_version` is the number applied. Never edit one
/// that has shipped: append a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("../../sql/0001_init.sql"),
    include_str!("../../sql/0002_pruned_totals.sql"),
    include_str!("../../sql/0003_late_data_and_servers.sql"),
    include_str!("../../sql/0004_pipeline_identity.sql"),
    include_str!("../../sql/0005_delivery_attempts.sql"),
    include_str!("../../sql/0006_sink_acks.sql"),
    include_str!("../../sql/0007_failed_at.sql"),
    include_str!("../../sql/0008_refused.sql"),
];

/// The schema version this framesync migrates a ledger to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// The schema version from which the ledger records its pipeline's identity.
pub const IDENTITY_SCHEMA: usize = 4;

/// Rows per INSERT statement where many are written at once (a power of two): for rows this
/// small, running a statement costs more than writing a row.
const ROWS_PER_INSERT: usize = 32;
const INSERT_DELIVERED: &str = "INSERT OR IGNORE INTO delivered (uid, frame, at) VALUES ";
const INSERT_STAGED: &str = "INSERT INTO staged (frame, seq, uid, ts, body) VALUES ";

/// Runs `insert` over `values`, `columns` to a row, in statements of `ROWS_PER_INSERT` rows and
/// then of halving powers of two (so the statement cache holds six per table). Returns the rows
/// inserted.
fn insert_rows(conn: &Connection, insert: &str, columns: usize, values: &[&dyn ToSql]) -> Result<usize> {
    let row = format!("({})", vec!["?"; columns].join(", "));
    let mut added = 0;
    let mut rest = values;
    let mut rows = ROWS_PER_INSERT;
    while !rest.is_empty() {
        while rows * columns > rest.len() {
            rows /= 2;
        }
        let (now, later) = rest.split_at(rows * columns);
        added += conn.prepare_cached(&format!("{insert}{}", vec![row.as_str(); rows].join(", ")))?.execute(now)?;
        rest = later;
    }
    Ok(added)
}

/// How long a write waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The ledger cannot be used: not SQLite, from a newer framesync, or on a network filesystem.
/// framesync exits with code 3 and never writes over such a file.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {problem}")]
pub struct Unusable {
    pub path: PathBuf,
    pub problem: String,
}

/// `synchronous` for the ledger: NORMAL survives any process crash; FULL also survives
/// power loss at the cost of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Normal,
    Full,
}

pub struct Ledger {
    pub(crate) conn: Connection,
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameState {
    Missing,
    Pulled,
    Pushing,
    Delivered,
}

impl FrameState {
    /// A state column's text; anything else is a ledger this framesync cannot read.
    fn parse(text: &str) -> rusqlite::Result<Self> {
        match text {
            "missing" => Ok(Self::Missing),
            "pulled" => Ok(Self::Pulled),
            "pushing" => Ok(Self::Pushing),
            "delivered" => Ok(Self::Delivered),
            other => Err(rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown frame state {other:?}").into(),
            )),
        }
    }
}

/// A frame row that is not delivered, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFrame {
    pub start: Epoch,
    pub state: FrameState,
    pub next_attempt: Option<Epoch>,
    /// Failed attempts since its last progress.
    pub attempts: i64,
    /// Its last failed pull was refused by the SS, not failed for a passing reason.
    pub refused: bool,
}

/// Why a pull failed, as far as the order of retries cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// Something that passes: an outage, a busy SS, a reset, a broken page, a pull too slow.
    Passing,
    /// The SS refused the frame (a 4xx): history it no longer keeps, a request it will not serve.
    Refused,
}

/// A record as it is staged by a pull.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRecord {
    pub uid: String,
    pub ts_ms: Option<i64>,
    pub body: String,
}

/// A staged record not yet acknowledged nor dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub uid: String,
    pub body: String,
    /// The key it was sent under; None if it was never sent.
    pub key: Option<Key>,
    /// Failed sends counted against it so far.
    pub attempts: i64,
    /// It may be at the RS already: it may have been sent (a crash, a lost answer), or it is
    /// staged again for a redelivery. Looked up before it is sent, where the RS has a lookup.
    pub unknown: bool,
    /// A send of it failed before (counted against it or not).
    pub failed_before: bool,
}

/// What a pull found beside the records to stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullCounts {
    pub out_of_frame: i64,
    pub duplicates: i64,
}

/// A record set aside for a person: refused by the RS, invalid, exhausted or set aside by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub uid: String,
    pub reason: DeadReason,
    pub status: Option<u16>,
    pub response: Option<String>,
    pub detail: String,
    pub body: String,
    /// The key it was sent under, kept so a retry sends it under the same one.
    pub key: Option<Key>,
    pub attempts: i64,
}

impl DeadLetter {
    /// A record that failed validation: never sent.
    pub fn invalid(uid: String, detail: String, body: String) -> Self {
        DeadLetter {
            uid,
            reason: DeadReason::Invalid,
            status: None,
            response: None,
            detail,
            body,
            key: None,
            attempts: 0,
        }
    }
}

/// When [`Ledger::adopt_identity`] records the config's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// Only into a ledger that has none yet (new, or from a framesync before identities): what
    /// every command that writes does.
    IfNone,
    /// Over the ledger's own, unless the frame size differs: `accept-config`.
    Always,
}

/// What [`Ledger::adopt_identity`] found, and whether it recorded the config's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub before: Recorded,
    pub differences: Vec<Difference>,
    pub recorded: bool,
}

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
    /// Opens (creating if absent) and migrates the ledger at `path`.
    pub fn open(path: &Path, sync: Sync) -> Result<Self> {
        Self::open_with(path, sync, BUSY_TIMEOUT)
    }

    /// Opens the ledger; a write waits up to `busy_timeout` for another process's transaction.
    pub fn open_with(path: &Path, sync: Sync, busy_timeout: Duration) -> Result<Self> {
        let unusable = |problem: String| Unusable { path: path.to_path_buf(), problem };
        if let Some(fs) = crate::netfs::network_filesystem(path) {
            return Err(unusable(format!(
                "it is on a {fs} network filesystem, where SQLite's locking and WAL are unsafe; keep the ledger on a local disk"
            ))
            .into());
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unusable(format!("cannot open it: {e}")))?;
        let mut ledger = Self { conn, path: path.to_path_buf() };
        ledger.configure(sync, busy_timeout).map_err(|e| unusable(format!("{e:#}")))?;
        ledger.migrate()?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read access for status, views and tests.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    fn configure(&self, sync: Sync, busy_timeout: Duration) -> Result<()> {
        self.conn.busy_timeout(busy_timeout)?;
        // The push path alone uses more than rusqlite's default of 16 statements.
        self.conn.set_prepared_statement_cache_capacity(64);
        // A stable query plan: otherwise every new value bound to `seq > ?` re-prepares the
        // statement (the bundled SQLite has STAT4), which costs more than running it.
        self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // The first statement to touch the file: "file is not a database" surfaces here.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .context("it is not a SQLite database (or it is corrupt); framesync will not write over it")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("journal_mode is {mode}, not wal (is the file or its folder read-only?)");
        }
        let want = match sync {
            Sync::Normal => 1,
            Sync::Full => 2,
        };
        self.conn.pragma_update(None, "synchronous", want)?;
        self.conn.pragma_update(None, "foreign_keys", true)?;
        let got: i64 = self.conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        let fk: i64 = self.conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if got != want || fk != 1 {
            bail!("the ledger settings did not take effect (synchronous={got}, foreign_keys={fk})");
        }
        if let Some(pages) = crate::hooks::max_page_count() {
            self.conn.pragma_update(None, "max_page_count", pages)?;
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let unusable = |problem: String| Unusable { path: self.path.clone(), problem };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(|e| unusable(format!("cannot start the migration: {e}")))?;
        let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(unusable(format!(
                "its schema version is {version}, newer than this framesync knows ({}); upgrade framesync",
                MIGRATIONS.len()
            ))
            .into());
        }
        if version == 0 {
            let tables: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables > 0 {
                return Err(unusable("it holds tables but is not a framesync ledger; pick another path".into()).into());
            }
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql).with_context(|| format!("migration {} failed", i + 1))?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A write transaction (`BEGIN IMMEDIATE`): it takes SQLite's write lock up front, so it
    /// waits for another writer at the start instead of failing halfway.
    pub(crate) fn write(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    // ---- the pipeline ------------------------------------------------------------------------

    /// Records the pipeline's settings: the whole row when the ledger has none yet (tests and
    /// benchmarks build ledgers this way), otherwise only the delay. The reference time and the
    /// frame size belong to the pipeline's identity, which only [`Ledger::adopt_identity`] writes.
    pub fn sync_pipeline(&mut self, frame_size: i64, reference: Epoch, delay: i64, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO pipeline (id, frame_size, reference, delay, updated_at) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET delay = ?3, updated_at = ?4",
            params![frame_size, reference, delay, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What the ledger records of the pipeline it belongs to.
    pub fn identity(&self) -> Result<Recorded> {
        read_identity(&self.conn)
    }

    /// Compares `identity` (the config's) with the ledger's and, as `adopt` allows, records it
    /// with the config's `delay` — in one transaction, so two commands cannot both record theirs.
    /// A frame size other than the ledger's is never recorded.
    pub fn adopt_identity(&mut self, identity: &Identity, delay: i64, now: Epoch, adopt: Adopt) -> Result<Adoption> {
        // An identity once recorded changes only under both run locks (`accept-config`), so a
        // command that would only fill in a missing one need not wait for the write lock.
        if adopt == Adopt::IfNone {
            let before = self.identity()?;
            if before.is_identity() {
                let differences = before.differences(identity);
                return Ok(Adoption { before, differences, recorded: false });
            }
        }
        let tx = self.write()?;
        let before = read_identity(&tx)?;
        let differences = before.differences(identity);
        let resized = differences.iter().any(Difference::is_frame_size);
        let unchanged = before.is_identity() && differences.is_empty();
        let recorded = match adopt {
            Adopt::IfNone => !before.is_identity() && differences.is_empty(),
            Adopt::Always => !(resized || unchanged),
        };
        if recorded {
            write_identity(&tx, identity, delay, now)?;
            tx.commit()?;
        }
        Ok(Adoption { before, differences, recorded })
    }

    // ---- runs ------------------------------------------------------------------------------

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

    // ---- facts for the planner ---------------------------------------------------------------

    /// Delivered spans overlapping `[from, to)`, in order.
    pub fn delivered_spans(&self, from: Epoch, to: Epoch) -> Result<Vec<(Epoch, Epoch)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT start, end FROM delivered_spans WHERE end > ?1 AND start < ?2 ORDER BY start")?;
        let rows = stmt.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every frame row that is not delivered.
    pub fn open_frames(&self) -> Result<Vec<OpenFrame>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT start, state, next_attempt, attempts, refused FROM frames WHERE state <> 'delivered' ORDER BY start",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OpenFrame {
                start: r.get(0)?,
                state: FrameState::parse(&r.get::<_, String>(1)?)?,
                next_attempt: r.get(2)?,
                attempts: r.get(3)?,
                refused: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn frame_state(&self, start: Epoch) -> Result<Option<FrameState>> {
        Ok(self
            .conn
            .query_row("SELECT state FROM frames WHERE start = ?1", [start], |r| {
                FrameState::parse(&r.get::<_, String>(0)?)
            })
            .optional()?)
    }

    // ---- pull ------------------------------------------------------------------------------

    /// Stages all records of a frame in one transaction: the frame becomes `pulled` with every
    /// record, or stays as it was. Invalid records are dead-lettered in the same transaction.
    pub fn stage_frame(
        &mut self,
        frame: Frame,
        records: &[StagedRecord],
        invalid: &[DeadLetter],
        counts: &PullCounts,
        now: Epoch,
    ) -> Result<()> {
        let mut staging = self.begin_staging(frame, now)?;
        let staged = self
            .stage(&mut staging, records)
            .and_then(|()| invalid.iter().try_for_each(|letter| self.stage_dead_letter(&mut staging, letter)))
            .and_then(|()| self.commit_staging(staging, counts));
        if staged.is_err() {
            self.abandon_staging();
        }
        staged
    }

    /// Opens the one transaction that stages a frame, page by page (see [`Staging`]).
    pub fn begin_staging(&mut self, frame: Frame, now: Epoch) -> Result<Staging> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let opened = self.open_for_staging(frame, now);
        if opened.is_err() {
            self.abandon_staging();
        }
        opened?;
        Ok(Staging {
            frame,
            now,
            staged: 0,
            invalid: 0,
            duplicates: 0,
            first_by_hash: HashMap::new(),
            collided: HashMap::new(),
            hasher: RandomState::new(),
            hash_mask: u64::MAX,
        })
    }

    fn open_for_staging(&mut self, frame: Frame, now: Epoch) -> Result<()> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM frames WHERE start = ?1")?
            .query_row([frame.start], |r| r.get(0))
            .optional()?;
        if matches!(state.as_deref(), Some("pulled" | "pushing" | "delivered")) {
            bail!("frame {frame} is already {}; it is not pulled twice", state.unwrap_or_default());
        }
        self.conn
            .prepare_cached(
                "INSERT INTO frames (start, end, state, pulled_at, updated_at) VALUES (?1, ?2, 'pulled', ?3, ?3)
             ON CONFLICT (start) DO UPDATE SET state = 'pulled', attempts = 0, last_error = NULL,
                 next_attempt = NULL, sent_through = -1, pulled_at = ?3, updated_at = ?3",
            )?
            .execute(params![frame.start, frame.end(), now])?;
        Ok(())
    }

    /// Stages records in order, after those already staged; a UID staged earlier in the frame is
    /// kept once and counted as a duplicate.
    pub fn stage(&mut self, staging: &mut Staging, records: &[StagedRecord]) -> Result<()> {
        let mut at = self.conn.prepare_cached("SELECT uid, body FROM staged WHERE frame = ?1 AND seq = ?2")?;
        let start = staging.frame.start;
        // Records to insert, ROWS_PER_INSERT at a time: (seq, record).
        let mut rows: Vec<(i64, &StagedRecord)> = Vec::with_capacity(ROWS_PER_INSERT);
        let insert = |rows: &mut Vec<(i64, &StagedRecord)>| -> Result<()> {
            if !rows.is_empty() {
                let values: Vec<&dyn ToSql> =
                    rows.iter().flat_map(|(seq, r)| [&start as &dyn ToSql, seq, &r.uid, &r.ts_ms, &r.body]).collect();
                insert_rows(&self.conn, INSERT_STAGED, 5, &values)?;
                rows.clear();
            }
            Ok(())
        };
        for record in records {
            let hash = staging.hasher.hash_one(&record.uid) & staging.hash_mask;
            let earlier = match staging.first_by_hash.get(&hash) {
                None => {
                    staging.first_by_hash.insert(hash, staging.staged);
                    None
                }
                Some(&seq) => {
                    insert(&mut rows)?; // the earlier record may be among them
                    let (uid, body): (String, String) =
                        at.query_row(params![start, seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    match (uid == record.uid, staging.collided.get(&record.uid)) {
                        (true, _) => Some(body),
                        (false, Some(&seq)) => Some(at.query_row(params![start, seq], |r| r.get(1))?),
                        (false, None) => {
                            staging.collided.insert(record.uid.clone(), staging.staged);
                            None
                        }
                    }
                }
            };
            if let Some(body) = earlier {
                staging.duplicates += 1;
                if body != record.body {
                    log::warn!(
                        "frame {}: UID {:?} appears twice with different contents; the first is kept",
                        staging.frame,
                        record.uid
                    );
                }
                continue;
            }
            rows.push((staging.staged, record));
            staging.staged += 1;
            if rows.len() == ROWS_PER_INSERT {
                insert(&mut rows)?;
            }
        }
        insert(&mut rows)
    }

    /// Dead-letters a record that cannot be staged, with its frame (once: the same record in
    /// another pull of the frame is the same dead letter).
    pub fn stage_dead_letter(&mut self, staging: &mut Staging, letter: &DeadLetter) -> Result<()> {
        if insert_dead_letter(&self.conn, staging.frame.start, letter, staging.now)? {
            staging.invalid += 1;
        }
        Ok(())
    }

    /// Marks the records staged so far that are stamped before `before` (UTC seconds) as of
    /// unknown fate: a frame of theirs older than `run.retain` may have delivered them and been
    /// pruned, its UIDs forgotten, so they are looked up before they are sent where the RS has a
    /// lookup (and otherwise go under their own keys, which an RS that honors keys knows).
    pub fn stage_forgotten(&mut self, staging: &Staging, before: Epoch) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE staged SET unknown = 1 WHERE frame = ?1 AND ts < ?2")?
            .execute(params![staging.frame.start, before.saturating_mul(1000)])?;
        Ok(())
    }

    /// Makes the frame `pulled` with everything staged; `counts` are what the SS client found
    /// (repeats across pages found while staging are added).
    pub fn commit_staging(&mut self, staging: Staging, counts: &PullCounts) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE frames SET records = ?2, out_of_frame = ?3, duplicates = ?4 WHERE start = ?1")?
            .execute(params![
                staging.frame.start,
                staging.staged + staging.invalid,
                counts.out_of_frame,
                counts.duplicates + staging.duplicates
            ])?;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Rolls back a staging that will not be committed (no-op when none is open): the frame is
    /// as it was before it.
    pub fn abandon_staging(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Records a failed pull: the frame stays missing, with its error, why, and next attempt.
    pub fn pull_failed(
        &mut self,
        frame: Frame,
        error: &str,
        why: PullFailure,
        next_attempt: Epoch,
        now: Epoch,
    ) -> Result<()> {
        let refused = why == PullFailure::Refused;
        let tx = self.write()?;
        tx.prepare_cached("INSERT INTO frames (start, end, state, attempts, last_error, refused, next_attempt, updated_at)
             VALUES (?1, ?2, 'missing', 1, ?3, ?4, ?5, ?6)
             ON CONFLICT (start) DO UPDATE SET attempts = attempts + 1, last_error = ?3, refused = ?4, next_attempt = ?5,
                 updated_at = ?6
             WHERE state = 'missing'")?.execute(params![frame.start, frame.end(), error, refused, next_attempt, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a frame that waits, not failed: the SS's clock says it is still open. It stays
    /// missing with the reason and a next attempt; its attempts do not grow.
    pub fn pull_waiting(&mut self, frame: Frame, reason: &str, next_attempt: Epoch, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.prepare_cached(
            "INSERT INTO frames (start, end, state, last_error, next_attempt, updated_at) VALUES (?1, ?2, 'missing', ?3, ?4, ?5)
             ON CONFLICT (start) DO UPDATE SET last_error = ?3, next_attempt = ?4, updated_at = ?5 WHERE state = 'missing'",
        )?
        .execute(params![frame.start, frame.end(), reason, next_attempt, now])?;
        tx.commit()?;
        Ok(())
    }

    /// Attempts so far for a frame (0 when it has no row).
    pub fn attempts(&self, start: Epoch) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT attempts FROM frames WHERE start = ?1", [start], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    // ---- push ------------------------------------------------------------------------------

    /// Staged records of a frame that are neither acknowledged nor dead-lettered, in order,
    /// and the highest seq that may already have reached the RS.
    pub fn pending(&self, start: Epoch) -> Result<(Vec<Pending>, i64)> {
        self.pending_after(start, -1, -1)
    }

    /// Like `pending`, from the record after `seq` on and at most `limit` records (-1: all), so
    /// a frame of any size is pushed with a window of it in memory. A record that may have been
    /// sent (its seq is at most `sent_through`) but has no key recorded was sent under its own.
    pub fn pending_after(&self, start: Epoch, seq: i64, limit: i64) -> Result<(Vec<Pending>, i64)> {
        let sent_through: i64 = self
            .conn
            .prepare_cached("SELECT sent_through FROM frames WHERE start = ?1")?
            .query_row([start], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.seq, s.uid, s.body, s.key, s.attempts, s.unknown, s.failed_at IS NOT NULL FROM staged s
             WHERE s.frame = ?1 AND s.seq > ?2
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)
             ORDER BY s.seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![start, seq, limit], |r| pending_row(r, sent_through))?;
        Ok((rows.collect::<Result<_, _>>()?, sent_through))
    }

    /// The pending records after `seq` that were sent in the batch `key`: the rest of a batch
    /// whose first records a window holds, so the batch is re-sent whole under its key.
    pub fn pending_in_batch(&self, start: Epoch, seq: i64, key: &Key) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.seq, s.uid, s.body, s.key, s.attempts, s.unknown, s.failed_at IS NOT NULL FROM staged s
             WHERE s.frame = ?1 AND s.seq > ?2 AND s.key = ?3
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)
             ORDER BY s.seq",
        )?;
        let rows = stmt.query_map(params![start, seq, key.to_sql()], |r| pending_row(r, i64::MAX))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notes, before sending, that records up to `seq` may reach the RS (after a crash their
    /// fate is unknown: they are looked up, where the RS offers a lookup, before being re-sent),
    /// and the keys of the batches about to be sent for the first time: `(first seq, last seq,
    /// key)`, each given to the pending records of that range that have none yet.
    pub fn mark_sending(&mut self, start: Epoch, seq: i64, batches: &[(i64, i64, Key)], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.prepare_cached(
            "UPDATE frames SET state = 'pushing', sent_through = MAX(sent_through, ?2), updated_at = ?3
             WHERE start = ?1 AND state IN ('pulled', 'pushing')",
        )?
        .execute(params![start, seq, now])?;
        let mut keyed = tx.prepare_cached(
            "UPDATE staged SET key = ?4 WHERE frame = ?1 AND seq BETWEEN ?2 AND ?3 AND key IS NULL
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = staged.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = staged.uid)",
        )?;
        for (first, last, key) in batches {
            keyed.execute(params![start, first, last, key.to_sql()])?;
        }
        drop(keyed);
        tx.commit()?;
        Ok(())
    }

    /// Sets the keys of staged records, before they are sent under new ones: a batch the RS
    /// refused as a whole (4xx, 413) is sent again record by record or in halves; records a
    /// lookup found absent leave a batch whose other records are present. None: never sent.
    pub fn set_keys(&mut self, start: Epoch, keys: &[(i64, Option<Key>)]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut update =
                tx.prepare_cached("UPDATE staged SET key = ?3, attempts = 0 WHERE frame = ?1 AND seq = ?2")?;
            for (seq, key) in keys {
                update.execute(params![start, seq, key.as_ref().map(Key::to_sql)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts a failed send against each of the records (the RS was seen taking others, so the
    /// records, not the RS, are the likely cause) and notes when it failed; returns their
    /// attempts now.
    pub fn count_failed_send(&mut self, start: Epoch, seqs: &[i64], error: &str, now: Epoch) -> Result<Vec<i64>> {
        let tx = self.write()?;
        let mut attempts = Vec::with_capacity(seqs.len());
        {
            let mut update = tx.prepare_cached(
                "UPDATE staged SET attempts = attempts + 1, last_error = ?3, failed_at = ?4
                 WHERE frame = ?1 AND seq = ?2 RETURNING attempts",
            )?;
            for seq in seqs {
                attempts.push(update.query_row(params![start, seq, error, now], |r| r.get(0)).optional()?.unwrap_or(0));
            }
        }
        tx.commit()?;
        Ok(attempts)
    }

    /// Notes that a send of the records failed, without counting it against them (the RS may
    /// be down): the next failure counts only if the RS takes another request in between.
    pub fn note_failed_send(&mut self, start: Epoch, seqs: &[i64], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        {
            let mut update = tx.prepare_cached("UPDATE staged SET failed_at = ?3 WHERE frame = ?1 AND seq = ?2")?;
            for seq in seqs {
                update.execute(params![start, seq, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// When a send of any of the records last failed; None if none has failed yet.
    pub fn last_failed_send(&self, start: Epoch, seqs: &[i64]) -> Result<Option<Epoch>> {
        let mut select = self.conn.prepare_cached("SELECT failed_at FROM staged WHERE frame = ?1 AND seq = ?2")?;
        let mut last = None;
        for seq in seqs {
            let at: Option<Epoch> = select.query_row(params![start, seq], |r| r.get(0)).optional()?.flatten();
            last = last.max(at);
        }
        Ok(last)
    }

    /// Records UIDs the RS acknowledged. Called only after the acknowledgement arrived.
    pub fn acknowledge(&mut self, start: Epoch, uids: &[&str], now: Epoch) -> Result<()> {
        let tx = self.write()?;
        record_acknowledged(&tx, start, uids, now)?;
        crate::hooks::kill_point("mid-ack-commit");
        tx.commit()?;
        Ok(())
    }

    /// `acknowledge` and `complete_frame` in one transaction: the last acknowledgements of a
    /// frame are recorded, and the frame delivered if nothing is left. True when delivered.
    pub fn acknowledge_and_complete(
        &mut self,
        frame: Frame,
        uids: &[&str],
        next_recheck: Option<Epoch>,
        now: Epoch,
    ) -> Result<bool> {
        let tx = self.write()?;
        if !uids.is_empty() {
            record_acknowledged(&tx, frame.start, uids, now)?;
            crate::hooks::kill_point("mid-ack-commit");
        }
        let delivered = deliver_if_complete(&tx, frame, next_recheck, now)?;
        if delivered.is_some() {
            crate::hooks::kill_point("mid-complete");
        }
        tx.commit()?;
        Ok(delivered == Some(true))
    }

    /// Dead-letters a record; returns how many dead letters were added (0: it was one already).
    pub fn dead_letter(&mut self, start: Epoch, letter: &DeadLetter, now: Epoch) -> Result<i64> {
        self.dead_letter_all(start, std::slice::from_ref(letter), now)
    }

    /// Dead-letters records together, in one transaction (a batch exhausted as a whole);
    /// returns how many were added.
    pub fn dead_letter_all(&mut self, start: Epoch, letters: &[DeadLetter], now: Epoch) -> Result<i64> {
        let tx = self.write()?;
        let mut added = 0;
        for letter in letters {
            added += i64::from(insert_dead_letter(&tx, start, letter, now)?);
        }
        tx.commit()?;
        Ok(added)
    }

    /// Records a failed push: the frame keeps its progress and waits until `next_attempt`.
    pub fn push_failed(&mut self, start: Epoch, error: &str, next_attempt: Epoch, now: Epoch) -> Result<()> {
        let tx = self.write()?;
        tx.prepare_cached(
            "UPDATE frames SET attempts = attempts + 1, last_error = ?2, next_attempt = ?3, updated_at = ?4
             WHERE start = ?1 AND state <> 'delivered'",
        )?
        .execute(params![start, error, next_attempt, now])?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the frame delivered if every staged record is acknowledged or dead-lettered:
    /// deletes its staged records and merges it into the delivered spans, in one transaction.
    /// Returns false (and changes nothing) while records are pending.
    pub fn complete_frame(&mut self, frame: Frame, next_recheck: Option<Epoch>, now: Epoch) -> Result<bool> {
        let tx = self.write()?;
        let Some(delivered) = deliver_if_complete(&tx, frame, next_recheck, now)? else { return Ok(false) };
        crate::hooks::kill_point("mid-complete");
        tx.commit()?;
        Ok(delivered)
    }
}

fn pending_row(r: &rusqlite::Row, sent_through: i64) -> rusqlite::Result<Pending> {
    let seq: i64 = r.get(0)?;
    Ok(Pending {
        seq,
        uid: r.get(1)?,
        body: r.get(2)?,
        key: Key::from_sql(r.get(3)?).or((seq <= sent_through).then_some(Key::Own)),
        attempts: r.get(4)?,
        unknown: seq <= sent_through || r.get::<_, bool>(5)?,
        failed_before: r.get(6)?,
    })
}

/// Records UIDs the RS acknowledged, within a write transaction.
fn record_acknowledged(tx: &Connection, start: Epoch, uids: &[&str], now: Epoch) -> Result<()> {
    let values: Vec<&dyn ToSql> = uids.iter().flat_map(|uid| [uid as &dyn ToSql, &start, &now]).collect();
    let added = insert_rows(tx, INSERT_DELIVERED, 3, &values)?;
    tx.prepare_cached("UPDATE frames SET pushed = pushed + ?2, attempts = 0, updated_at = ?3 WHERE start = ?1")?
        .execute(params![start, added as i64, now])?;
    Ok(())
}

/// Marks the frame delivered if every staged record is acknowledged or dead-lettered, within a
/// write transaction: deletes its staged records and merges it into the delivered spans. None
/// (and nothing changed) while records are pending; else whether the frame became delivered.
fn deliver_if_complete(tx: &Connection, frame: Frame, next_recheck: Option<Epoch>, now: Epoch) -> Result<Option<bool>> {
    let pending: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM staged s WHERE s.frame = ?1
               AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.uid = s.uid)
               AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.uid = s.uid)",
        )?
        .query_row([frame.start], |r| r.get(0))?;
    if pending > 0 {
        return Ok(None);
    }
    tx.prepare_cached("DELETE FROM staged WHERE frame = ?1")?.execute([frame.start])?;
    let updated = tx
        .prepare_cached(
            "UPDATE frames SET state = 'delivered', attempts = 0, last_error = NULL, next_attempt = NULL,
                 delivered_at = COALESCE(delivered_at, ?2),
                 next_recheck = CASE WHEN delivered_at IS NULL THEN ?3 ELSE next_recheck END, updated_at = ?2
             WHERE start = ?1 AND state IN ('pulled', 'pushing')",
        )?
        .execute(params![frame.start, now, next_recheck])?;
    if updated == 1 {
        merge_span(tx, frame.start, frame.end())?;
    }
    Ok(Some(updated == 1))
}

/// A frame being staged, page by page, in one open transaction (`Ledger::begin_staging`,
/// `stage`, `commit_staging`): the frame becomes `pulled` with every record at once; not
/// committed (a page failed, the process died), the ledger stays as it was. So a frame of any
/// size is pulled atomically with one page in memory. Finding repeated UIDs holds 16 bytes per
/// record (the seq of each UID's hash), not the UIDs.
pub struct Staging {
    frame: Frame,
    now: Epoch,
    staged: i64,
    invalid: i64,
    duplicates: i64,
    /// The seq of the first record staged with each UID hash.
    first_by_hash: HashMap<u64, i64>,
    /// UIDs whose hash an earlier, different UID had, with their seq.
    collided: HashMap<String, i64>,
    hasher: RandomState,
    /// All ones; tests clear it to make every UID's hash collide.
    hash_mask: u64,
}

impl Staging {
    /// Records staged so far.
    pub fn staged(&self) -> i64 {
        self.staged
    }

    /// Records dead-lettered so far.
    pub fn invalid(&self) -> i64 {
        self.invalid
    }
}

/// Adds a dead letter unless the record is one already; true when added.
fn insert_dead_letter(tx: &Connection, frame: Epoch, letter: &DeadLetter, now: Epoch) -> Result<bool> {
    let added = tx
        .prepare_cached(
            "INSERT INTO dead_letters (frame, uid, reason, status, response, detail, body, at, key, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (uid) DO NOTHING",
        )?
        .execute(params![
            frame,
            letter.uid,
            letter.reason.as_str(),
            letter.status,
            letter.response,
            letter.detail,
            letter.body,
            now,
            letter.key.as_ref().map(Key::to_sql),
            letter.attempts,
        ])?;
    // A record seen again (a re-pull, or the same record in two frames) is dead-lettered once.
    if added > 0 {
        tx.prepare_cached("UPDATE frames SET dead = dead + 1 WHERE start = ?1")?.execute([frame])?;
    }
    Ok(added > 0)
}

/// The pipeline's identity as the ledger records it (schema version `IDENTITY_SCHEMA` on).
pub fn read_identity(conn: &Connection) -> Result<Recorded> {
    let row = conn
        .query_row(
            "SELECT frame_size, reference, identity_at IS NOT NULL, source_url, source_time_format,
                    source_records, source_uid, sink_url
             FROM pipeline WHERE id = 1",
            [],
            |r| {
                if !r.get::<_, bool>(2)? {
                    return Ok(Recorded::FrameSize(r.get(0)?));
                }
                Ok(Recorded::Identity(Identity {
                    frames_size: r.get(0)?,
                    frames_start: r.get(1)?,
                    source_url: r.get(3)?,
                    source_time_format: r.get(4)?,
                    source_records: r.get(5)?,
                    source_uid: r.get(6)?,
                    sink_url: r.get(7)?,
                }))
            },
        )
        .optional()?;
    Ok(row.unwrap_or(Recorded::Nothing))
}

/// Writes the pipeline row with `identity`; an existing row keeps its frame size, which
/// the caller has checked.
fn write_identity(tx: &Connection, identity: &Identity, delay: i64, now: Epoch) -> Result<()> {
    tx.execute(
        "INSERT INTO pipeline (id, frame_size, reference, delay, updated_at, source_url, source_time_format,
                               source_records, source_uid, sink_url, identity_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?4)
         ON CONFLICT (id) DO UPDATE SET reference = ?2, delay = ?3, updated_at = ?4, source_url = ?5,
             source_time_format = ?6, source_records = ?7, source_uid = ?8, sink_url = ?9, identity_at = ?4",
        params![
            identity.frames_size,
            identity.frames_start,
            delay,
            now,
            identity.source_url,
            identity.source_time_format,
            identity.source_records,
            identity.source_uid,
            identity.sink_url
        ],
    )?;
    Ok(())
}

/// Adds `[start, end)` to the delivered spans, merging with the neighbours it touches.
fn merge_span(tx: &Connection, start: Epoch, end: Epoch) -> Result<()> {
    let covering: Option<i64> = tx
        .query_row(
            "SELECT start FROM delivered_spans WHERE start <= ?1 AND end >= ?2 LIMIT 1",
            params![start, end],
            |r| r.get(0),
        )
        .optional()?;
    if covering.is_some() {
        return Ok(());
    }
    let left: Option<i64> = tx
        .prepare_cached("SELECT start FROM delivered_spans WHERE end = ?1")?
        .query_row([start], |r| r.get(0))
        .optional()?;
    let right: Option<i64> = tx
        .prepare_cached("SELECT end FROM delivered_spans WHERE start = ?1")?
        .query_row([end], |r| r.get(0))
        .optional()?;
    let new_start = left.unwrap_or(start);
    let new_end = right.unwrap_or(end);
    if left.is_some() {
        tx.prepare_cached("DELETE FROM delivered_spans WHERE start = ?1")?.execute([new_start])?;
    }
    if right.is_some() {
        tx.prepare_cached("DELETE FROM delivered_spans WHERE start = ?1")?.execute([end])?;
    }
    tx.prepare_cached("INSERT INTO delivered_spans (start, end) VALUES (?1, ?2)")?
        .execute(params![new_start, new_end])?;
    Ok(())
}

/// What the unit tests of every ledger module share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::frames::FrameSize;

    /// A new ledger in a temp dir, removed when the dir is dropped.
    pub fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.db"), Sync::Normal).unwrap();
        (dir, ledger)
    }

    /// The 1-minute frame starting at `start`.
    pub fn frame(start: Epoch) -> Frame {
        FrameSize::new(60).unwrap().frame_at(start)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{frame, ledger};
    use super::*;

    fn rec(uid: &str) -> StagedRecord {
        StagedRecord { uid: uid.into(), ts_ms: None, body: format!("{{\"id\":\"{uid}\"}}") }
    }

    fn stage(l: &mut Ledger, start: i64, uids: &[&str]) {
        let records: Vec<_> = uids.iter().map(|u| rec(u)).collect();
        l.stage_frame(frame(start), &records, &[], &PullCounts::default(), 0).unwrap();
    }

    fn spans(l: &Ledger) -> Vec<(i64, i64)> {
        l.delivered_spans(i64::MIN, i64::MAX).unwrap()
    }

    fn staged_count(l: &Ledger, start: i64) -> i64 {
        l.conn.query_row("SELECT COUNT(*) FROM staged WHERE frame = ?1", [start], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_new_ledger_is_migrated_and_in_wal_mode() {
        let (_dir, l) = ledger();
        let v: i64 = l.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let mode: String = l.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn reopening_keeps_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut l = Ledger::open(&path, Sync::Normal).unwrap();
        stage(&mut l, 0, &["a"]);
        drop(l);
        let l = Ledger::open(&path, Sync::Full).unwrap();
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
    }

    #[test]
    fn a_frame_is_delivered_only_when_every_record_is_acknowledged_or_dead() {
        let (_dir, mut l) = ledger();
        stage(&mut l, 60, &["a", "b", "c"]);
        l.mark_sending(60, 2, &[], 0).unwrap();
        l.acknowledge(60, &["a"], 0).unwrap();
        assert!(!l.complete_frame(frame(60), None, 0).unwrap());
        let dead = DeadLetter {
            uid: "b".into(),
            reason: crate::delivery::DeadReason::Rejected,
            status: Some(400),
            response: Some("bad".into()),
            detail: "HTTP 400".into(),
            body: "{}".into(),
            key: None,
            attempts: 0,
        };
        l.dead_letter(60, &dead, 0).unwrap();
        let (pending, sent_through) = l.pending(60).unwrap();
        assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(sent_through, 2);
        assert!(!l.complete_frame(frame(60), None, 0).unwrap());
        l.acknowledge(60, &["c"], 0).unwrap();
        assert!(l.complete_frame(frame(60), None, 0).unwrap());
        assert_eq!(l.frame_state(60).unwrap(), Some(FrameState::Delivered));
        assert_eq!(staged_count(&l, 60), 0, "a delivered frame has no staged records");
        assert_eq!(spans(&l), vec![(60, 120)]);
    }

    #[test]
    fn a_frame_staged_page_by_page_is_pulled_only_when_committed() {
        let (_dir, mut l) = ledger();
        let mut staging = l.begin_staging(frame(0), 0).unwrap();
        l.stage(&mut staging, &[rec("a"), rec("b")]).unwrap();
        l.abandon_staging();
        assert_eq!(l.frame_state(0).unwrap(), None, "an abandoned staging leaves no trace");
        assert_eq!(staged_count(&l, 0), 0);

        let mut staging = l.begin_staging(frame(0), 0).unwrap();
        l.stage(&mut staging, &[rec("a"), rec("b")]).unwrap();
        assert_eq!(
            Connection::open(l.path())
                .unwrap()
                .query_row("SELECT COUNT(*) FROM staged", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            0,
            "invisible before the commit"
        );
        l.stage(&mut staging, &[rec("b"), rec("c")]).unwrap();
        assert_eq!(staging.staged(), 3);
        l.commit_staging(staging, &PullCounts { out_of_frame: 0, duplicates: 2 }).unwrap();
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
        let (pending, _) = l.pending(0).unwrap();
        assert_eq!(pending.iter().map(|p| (p.seq, p.uid.as_str())).collect::<Vec<_>>(), [(0, "a"), (1, "b"), (2, "c")]);
        let (records, duplicates): (i64, i64) =
            l.conn.query_row("SELECT records, duplicates FROM frames", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((records, duplicates), (3, 3), "a repeat across pages is kept once and counted");
    }

    #[test]
    fn repeats_are_found_even_when_every_uid_hash_collides() {
        let (_dir, mut l) = ledger();
        let mut staging = l.begin_staging(frame(0), 0).unwrap();
        staging.hash_mask = 0;
        l.stage(&mut staging, &[rec("a"), rec("b"), rec("a")]).unwrap();
        l.stage(&mut staging, &[rec("c"), rec("b"), rec("c")]).unwrap();
        l.commit_staging(staging, &PullCounts::default()).unwrap();
        let (pending, _) = l.pending(0).unwrap();
        assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(l.conn.query_row("SELECT duplicates FROM frames", [], |r| r.get::<_, i64>(0)).unwrap(), 3);
    }

    #[test]
    fn many_records_are_staged_and_acknowledged_in_multi_row_statements() {
        let (_dir, mut l) = ledger();
        let uids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
        stage(&mut l, 0, &refs);
        assert_eq!(staged_count(&l, 0), 101);
        l.acknowledge(0, &refs[..70], 0).unwrap();
        l.acknowledge(0, &refs[60..], 0).unwrap();
        assert_eq!(l.conn.query_row("SELECT pushed FROM frames", [], |r| r.get::<_, i64>(0)).unwrap(), 101);
        assert!(l.complete_frame(frame(0), None, 0).unwrap());
    }

    #[test]
    fn pending_records_are_read_a_window_at_a_time() {
        let (_dir, mut l) = ledger();
        stage(&mut l, 0, &["a", "b", "c", "d"]);
        l.acknowledge(0, &["b"], 0).unwrap();
        let window = |after| l.pending_after(0, after, 2).unwrap().0.into_iter().map(|p| p.uid).collect::<Vec<_>>();
        assert_eq!(window(-1), ["a", "c"]);
        assert_eq!(window(2), ["d"]);
        assert!(window(3).is_empty());
    }

    #[test]
    fn the_last_acknowledgements_and_the_delivery_commit_together() {
        let (_dir, mut l) = ledger();
        stage(&mut l, 0, &["a", "b"]);
        assert!(!l.acknowledge_and_complete(frame(0), &["a"], None, 0).unwrap(), "b is pending");
        assert_eq!(l.pending(0).unwrap().0.len(), 1, "a is recorded all the same");
        assert!(l.acknowledge_and_complete(frame(0), &["b"], None, 0).unwrap());
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Delivered));
        assert_eq!(staged_count(&l, 0), 0);
    }

    #[test]
    fn delivered_spans_merge_with_both_neighbours() {
        let (_dir, mut l) = ledger();
        for start in [0, 120, 60, 240] {
            stage(&mut l, start, &[]);
            assert!(l.complete_frame(frame(start), None, 0).unwrap());
        }
        assert_eq!(spans(&l), vec![(0, 180), (240, 300)]);
        stage(&mut l, 180, &[]);
        l.complete_frame(frame(180), None, 0).unwrap();
        assert_eq!(spans(&l), vec![(0, 300)]);
    }

    #[test]
    fn a_delivered_frame_is_never_staged_again() {
        let (_dir, mut l) = ledger();
        stage(&mut l, 0, &["a"]);
        l.acknowledge(0, &["a"], 0).unwrap();
        l.complete_frame(frame(0), None, 0).unwrap();
        let e = l.stage_frame(frame(0), &[rec("a")], &[], &PullCounts::default(), 0).unwrap_err();
        assert!(e.to_string().contains("already delivered"), "{e}");
    }

    #[test]
    fn an_acknowledged_uid_is_not_pending_even_when_pulled_again_in_another_frame() {
        let (_dir, mut l) = ledger();
        stage(&mut l, 0, &["a"]);
        l.acknowledge(0, &["a"], 0).unwrap();
        stage(&mut l, 60, &["a", "b"]);
        let (pending, _) = l.pending(60).unwrap();
        assert_eq!(pending.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_failed_pull_counts_attempts_and_a_later_pull_clears_them() {
        let (_dir, mut l) = ledger();
        l.pull_failed(frame(0), "HTTP 400", PullFailure::Refused, 100, 0).unwrap();
        let refused =
            OpenFrame { start: 0, state: FrameState::Missing, next_attempt: Some(100), attempts: 1, refused: true };
        assert_eq!(l.open_frames().unwrap(), vec![refused]);
        l.pull_failed(frame(0), "HTTP 500", PullFailure::Passing, 200, 0).unwrap();
        assert_eq!(l.attempts(0).unwrap(), 2);
        assert_eq!(
            l.open_frames().unwrap(),
            vec![OpenFrame {
                start: 0,
                state: FrameState::Missing,
                next_attempt: Some(200),
                attempts: 2,
                refused: false
            }],
            "the last failure says why"
        );
        stage(&mut l, 0, &["a"]);
        assert_eq!(l.attempts(0).unwrap(), 0);
        assert_eq!(l.frame_state(0).unwrap(), Some(FrameState::Pulled));
    }

    fn identity() -> Identity {
        Identity {
            source_url: "http://a/events?from={from}&to={to}&key=${SS_KEY}".into(),
            source_time_format: "rfc3339".into(),
            source_records: "/items".into(),
            source_uid: "/id".into(),
            frames_start: 3600,
            frames_size: 60,
            sink_url: "http://rs/ingest".into(),
        }
    }

    fn pipeline_row(l: &Ledger) -> (i64, i64, i64) {
        l.conn
            .query_row("SELECT frame_size, reference, delay FROM pipeline", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
    }

    fn keys(adoption: &Adoption) -> Vec<&str> {
        adoption.differences.iter().map(|d| d.key).collect()
    }

    #[test]
    fn the_first_command_that_writes_records_its_identity_and_another_is_refused() {
        let (_dir, mut l) = ledger();
        assert_eq!(l.identity().unwrap(), Recorded::Nothing);
        let first = l.adopt_identity(&identity(), 120, 10, Adopt::IfNone).unwrap();
        assert!(first.recorded && first.differences.is_empty(), "{first:?}");
        assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
        assert_eq!(pipeline_row(&l), (60, 3600, 120));

        let other = Identity { source_url: "http://b/events?from={from}&to={to}".into(), ..identity() };
        let refused = l.adopt_identity(&other, 120, 20, Adopt::IfNone).unwrap();
        assert!(!refused.recorded);
        assert_eq!(keys(&refused), ["source.url"]);
        assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()), "the ledger keeps its own");
    }

    #[test]
    fn a_ledger_from_before_identities_records_the_first_writers_without_refusing() {
        let (_dir, mut l) = ledger();
        l.sync_pipeline(60, 0, 120, 0).unwrap();
        assert_eq!(l.identity().unwrap(), Recorded::FrameSize(60));
        let adoption = l.adopt_identity(&identity(), 60, 10, Adopt::IfNone).unwrap();
        assert!(adoption.recorded && adoption.differences.is_empty(), "{adoption:?}");
        assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
        assert_eq!(pipeline_row(&l), (60, 3600, 60), "the reference time is the config's");
    }

    #[test]
    fn a_ledger_migrated_from_0003_keeps_its_pipeline_row_without_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let old = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..3] {
            old.execute_batch(sql).unwrap();
        }
        old.pragma_update(None, "user_version", 3).unwrap();
        old.execute(
            "INSERT INTO pipeline (id, frame_size, reference, delay, updated_at) VALUES (1, 300, 0, 60, 0)",
            [],
        )
        .unwrap();
        drop(old);
        let l = Ledger::open(&path, Sync::Normal).unwrap();
        assert_eq!(l.identity().unwrap(), Recorded::FrameSize(300));
    }

    #[test]
    fn a_frame_size_change_is_refused_even_where_no_identity_is_recorded() {
        // Pins the frame-size check that 0004 folded into the identity: an older ledger knows
        // only its frame size, and frames of another size must still be refused.
        let (_dir, mut l) = ledger();
        l.sync_pipeline(300, 0, 120, 0).unwrap();
        for adopt in [Adopt::IfNone, Adopt::Always] {
            let adoption = l.adopt_identity(&identity(), 120, 10, adopt).unwrap();
            assert!(!adoption.recorded);
            assert_eq!(keys(&adoption), ["frames.size"]);
        }
        assert_eq!(l.identity().unwrap(), Recorded::FrameSize(300));
    }

    #[test]
    fn accepting_records_the_configs_identity_but_never_another_frame_size() {
        let (_dir, mut l) = ledger();
        l.adopt_identity(&identity(), 120, 0, Adopt::IfNone).unwrap();
        let same = l.adopt_identity(&identity(), 120, 5, Adopt::Always).unwrap();
        assert!(!same.recorded && same.differences.is_empty(), "nothing to accept: {same:?}");

        let moved = Identity { sink_url: "http://rs2/ingest".into(), frames_start: 7200, ..identity() };
        let accepted = l.adopt_identity(&moved, 120, 10, Adopt::Always).unwrap();
        assert!(accepted.recorded);
        assert_eq!(keys(&accepted), ["frames.start", "sink.url"]);
        assert_eq!(l.identity().unwrap(), Recorded::Identity(moved.clone()));
        assert_eq!(pipeline_row(&l).1, 7200, "the views plan from the accepted reference time");
        let at: i64 = l.conn.query_row("SELECT identity_at FROM pipeline", [], |r| r.get(0)).unwrap();
        assert_eq!(at, 10);

        let resized = Identity { frames_size: 300, source_uid: "hash".into(), ..moved.clone() };
        let refused = l.adopt_identity(&resized, 120, 20, Adopt::Always).unwrap();
        assert!(!refused.recorded);
        assert_eq!(keys(&refused), ["source.uid", "frames.size"]);
        assert_eq!(l.identity().unwrap(), Recorded::Identity(moved));
    }

    #[test]
    fn syncing_the_settings_changes_only_the_delay_of_a_ledger_with_an_identity() {
        let (_dir, mut l) = ledger();
        l.adopt_identity(&identity(), 120, 0, Adopt::IfNone).unwrap();
        l.sync_pipeline(300, 0, 30, 5).unwrap();
        assert_eq!(pipeline_row(&l), (60, 3600, 30));
        assert_eq!(l.identity().unwrap(), Recorded::Identity(identity()));
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        std::fs::write(&path, "this is not a database, it is a text file with enough bytes to look like one").unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = Ledger::open(&path, Sync::Normal).err().unwrap();
        assert!(e.downcast_ref::<Unusable>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("not a SQLite database"), "{e:#}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_ledger_from_a_newer_framesync_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        drop(Ledger::open(&path, Sync::Normal).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let e = Ledger::open(&path, Sync::Normal).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn another_applications_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE orders (id INTEGER)").unwrap();
        let e = Ledger::open(&path, Sync::Normal).err().unwrap();
        assert!(e.to_string().contains("not a framesync ledger"), "{e}");
    }

    #[test]
    fn the_operator_views_answer_on_a_fresh_ledger() {
        let (_dir, mut l) = ledger();
        let now = chrono::Utc::now().timestamp();
        l.sync_pipeline(60, now - 3600, 120, now).unwrap();
        let frames: i64 = l.conn.query_row("SELECT SUM(frames) FROM missing_ranges", [], |r| r.get(0)).unwrap();
        assert!((55..=60).contains(&frames), "{frames}");
        let lag: i64 = l.conn.query_row("SELECT lag_seconds FROM lag", [], |r| r.get(0)).unwrap();
        assert!(lag >= 3600, "{lag}");
        for view in ["frame_summary", "failing_frames", "recent_runs"] {
            l.conn.prepare(&format!("SELECT * FROM {view}")).unwrap();
        }
    }
}
