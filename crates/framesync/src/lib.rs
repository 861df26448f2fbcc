//! framesync moves records from a sending server's HTTP API to a receiving server's HTTP API by
//! time frames, keeping a SQLite ledger so that no record is lost and none is doubled.
//!
//! A run: take the lock ([`lock`]), open the ledger ([`ledger`]), plan the frames ([`plan`]),
//! pull them from the SS ([`source`]) page by page into a staging ([`fetch`]), push them to the
//! RS ([`sink`]) — the work itself is in [`job`] — and record the run. The commands are in
//! [`cmd`]; the values that pass between them are in [`model`]; secrets are scrubbed where
//! messages leave ([`redact`]).

pub mod auth;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod dead_letters;
pub mod delivery;
pub mod fetch;
pub mod frames;
pub mod hooks;
pub mod http;
pub mod identity;
pub mod job;
pub mod ledger;
pub mod lock;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod netfs;
pub mod plan;
pub mod plural;
pub mod prune;
pub mod pushgateway;
pub mod recheck;
pub mod record;
pub mod redact;
pub mod servers;
pub mod sink;
pub mod source;
pub mod template;
pub mod timeline;

/// A usage or config error: framesync exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);
