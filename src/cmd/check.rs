//! `check`: the config is valid (it was loaded), the ledger opens, and both servers answer —
//! without writing anything to either server.

use std::io::Write;

use anyhow::Result;

use crate::config::Config;
use crate::frames::eligible_until;
use crate::http;
use crate::job::{Clock, SystemClock};
use crate::source::{HttpSource, Source};

pub fn check(config: &Config, out: &mut dyn Write) -> Result<u8> {
    writeln!(out, "config: ok")?;
    let mut failed = false;
    match ledger_state(config) {
        Ok(state) => writeln!(out, "ledger: {state}")?,
        Err(e) => {
            failed = true;
            writeln!(out, "ledger: FAILED: {e:#}")?;
        }
    }
    let now = SystemClock.now();
    let frame = config.frames.size.frame_at(eligible_until(config.frames.size, now, config.frames.delay) - 1);
    match HttpSource::new(&config.source, &config.secrets).pull(frame) {
        Ok(pulled) => {
            writeln!(out, "source: ok, frame {frame} has {} records in {} pages", pulled.records.len(), pulled.pages)?
        }
        Err(e) => {
            failed = true;
            writeln!(out, "source: FAILED: {e}")?;
        }
    }
    match sink_reachable(config) {
        Ok(what) => writeln!(out, "sink: ok, {what}")?,
        Err(e) => {
            failed = true;
            writeln!(out, "sink: FAILED: {}", config.secrets.scrub(&e))?;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn ledger_state(config: &Config) -> Result<String> {
    if !config.ledger.exists() {
        return Ok(format!("{} does not exist yet; the first run creates it", config.ledger.display()));
    }
    // Opening migrates an older ledger: that is what the next run would do anyway.
    let ledger = crate::ledger::Ledger::open(&config.ledger, config.run.sync)?;
    let frames: i64 = ledger.conn().query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0))?;
    Ok(format!("{} opens, {frames} frames recorded", config.ledger.display()))
}

/// Asks the RS without storing anything: a lookup of a UID that does not exist where the RS
/// has a lookup URL, otherwise a HEAD on the ingest URL (any HTTP answer shows it is there).
fn sink_reachable(config: &Config) -> Result<String, String> {
    let agent = http::agent(config.sink.timeout);
    let (method, url) = match &config.sink.lookup_url {
        Some(template) => ("GET", template.replace("{uid}", "framesync-check-no-such-record")),
        None => ("HEAD", config.sink.url.clone()),
    };
    let mut request = match method {
        "GET" => agent.get(&url),
        _ => agent.head(&url),
    };
    for (name, value) in &config.sink.headers {
        request = request.header(name, value);
    }
    let response = request.call().map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    match (method, status) {
        ("GET", 404) => Ok("the lookup URL answers 404 for an unknown record".into()),
        ("GET", s) => Err(format!("the lookup URL answered HTTP {s} for an unknown record; it must answer 404")),
        (_, 401 | 403) => Err(format!("{method} {url}: HTTP {status}: check sink.headers")),
        (_, s) if s >= 500 => Err(format!("{method} {url}: HTTP {s}")),
        (_, s) => Ok(format!("{method} answered HTTP {s}")),
    }
}
