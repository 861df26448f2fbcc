//! Opening a ledger: the migrations, the durability settings, and the checks that refuse a file
//! framesync must not write over.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{BUSY_TIMEOUT, Ledger, Synchronous, Unusable};

/// Migrations in order; the ledger's `user_version` is the number applied. Never edit one
/// that has shipped: append a new file.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../sql/0001_init.sql"),
    include_str!("../../sql/0002_pruned_totals.sql"),
    include_str!("../../sql/0003_late_data_and_servers.sql"),
    include_str!("../../sql/0004_pipeline_identity.sql"),
    include_str!("../../sql/0005_delivery_attempts.sql"),
    include_str!("../../sql/0006_sink_acks.sql"),
    include_str!("../../sql/0007_failed_at.sql"),
    include_str!("../../sql/0008_refused.sql"),
    include_str!("../../sql/0009_dead_letters_total.sql"),
    include_str!("../../sql/0010_in_flight_limit.sql"),
];

/// The schema version this framesync migrates a ledger to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
/// The schema version from which the ledger records its pipeline's identity.
pub const IDENTITY_SCHEMA: usize = 4;

impl Ledger {
    /// Opens (creating if absent, with mode 0600) and migrates the ledger at `path`.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Self::open_with(path, sync, BUSY_TIMEOUT)
    }

    /// Opens the ledger; a write waits up to `busy_timeout` for another process's transaction.
    pub fn open_with(path: &Path, sync: Synchronous, busy_timeout: Duration) -> Result<Self> {
        let unusable = |problem: String| Unusable { path: path.to_path_buf(), problem };
        if let Some(fs) = crate::netfs::network_filesystem(path) {
            return Err(unusable(format!(
                "it is on a {fs} network filesystem, where SQLite's locking and WAL are unsafe; keep the ledger on a local disk"
            ))
            .into());
        }
        super::access::writable(path)?;
        // Created here rather than by SQLite, so that it is its owner's alone from the start;
        // SQLite gives the -wal and -shm files the same mode.
        super::access::create_private(path).map_err(|e| unusable(format!("cannot create it: {e}")))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unusable(format!("cannot open it: {e}")))?;
        let mut ledger =
            Self { conn, path: path.to_path_buf(), staging_open: Default::default(), secrets: Default::default() };
        ledger.configure(sync, busy_timeout).map_err(|e| unusable(format!("{e:#}")))?;
        ledger.migrate()?;
        Ok(ledger)
    }

    /// Opens and migrates the ledger at `path`, which must exist ([`super::Absent`] if not):
    /// for the commands that change a ledger but have nothing to do without one.
    pub fn open_existing(path: &Path, sync: Synchronous, busy_timeout: Duration) -> Result<Self> {
        super::access::existing(path)?;
        Self::open_with(path, sync, busy_timeout)
    }

    /// Opens the ledger at `path` read-only, creating, migrating and configuring nothing and
    /// leaving no file behind (see [`super::snapshot`]): [`super::Absent`] when there is none,
    /// and a ledger of another schema version is refused, as the read models need this one's.
    pub fn open_read_only(path: &Path, busy_timeout: Duration) -> Result<Self> {
        super::access::existing(path)?;
        let unusable = |problem: String| Unusable { path: path.to_path_buf(), problem };
        let conn =
            super::snapshot::read_only(path, busy_timeout).map_err(|e| unusable(format!("cannot open it: {e}")))?;
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| unusable(format!("it cannot be read as a SQLite database: {e}")))?;
        if version > MIGRATIONS.len() {
            return Err(unusable(format!(
                "its schema version is {version}, newer than this framesync knows ({}); upgrade framesync",
                MIGRATIONS.len()
            ))
            .into());
        }
        if version < MIGRATIONS.len() {
            return Err(unusable(format!(
                "its schema version is {version}, older than this framesync's ({}); run `framesync run` once to migrate it",
                MIGRATIONS.len()
            ))
            .into());
        }
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn, path: path.to_path_buf(), staging_open: Default::default(), secrets: Default::default() })
    }

    fn configure(&self, sync: Synchronous, busy_timeout: Duration) -> Result<()> {
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
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
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
}
