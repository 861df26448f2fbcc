//! `framesync-sim`: a sending server (SS) with deterministic data and a receiving server (RS)
//! with its own SQLite database, on one port, with fault injection on both sides (`faults` says
//! what a client sees for each fault; `serve --help` lists the flags and `/control/faults` keys).
//! The demo, the integration and crash tests and the benchmarks run it as a real process; the
//! tests also read its table of fault settings, [`faults::SPECS`].

mod app;
mod auth;
mod capacity;
pub mod cli;
mod control;
mod data;
pub mod faults;
mod http;
mod query;
mod rs;
mod ss;
