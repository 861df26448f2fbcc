//! `[run]`: how much one run does, when old gaps are filled, how failures back off, how long
//! the ledger keeps what it knows, and how it writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer};

use super::check::{self, count};
use super::frames::FramesConfig;
use super::toml_error::read_str;
use super::{Env, duration, resolve};
use crate::frames::FrameSize;
use crate::model::Synchronous;
use crate::redact::Redactor;

/// A run's plan holds at most this many frames (a year of 1-minute frames is 525,600).
const MOST_FRAMES_PER_RUN: usize = 1_000_000;
/// Every fresh frame is looked at by every run's plan, so `run.fresh` spans at most this many.
const MOST_FRESH_FRAMES: i64 = 100_000;
/// SQLite takes its busy timeout in milliseconds as a 32-bit integer: at most 24.8 days.
const LONGEST_BUSY_TIMEOUT: Duration = Duration::from_secs(24 * 86_400);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub max_frames: usize,
    pub max_seconds: Duration,
    /// Frames whose start is within this many seconds of the eligible edge count as fresh.
    pub fresh: i64,
    /// Old gaps are only pulled inside this UTC window (minutes after midnight, start..end).
    pub backfill_window: Option<(u32, u32)>,
    pub retain: i64,
    pub metrics_file: Option<PathBuf>,
    /// A Prometheus Pushgateway's base URL: every run PUTs the metrics there too.
    pub pushgateway: Option<String>,
    /// First retry delay for a failed frame; doubles with each attempt up to `retry_max`.
    pub retry_base: i64,
    pub retry_max: i64,
    /// The longest `Retry-After` (or quiet) a server is granted, in seconds; asked for longer, it
    /// gets this. Stored waits beyond it were written by a clock that has jumped back since.
    pub max_retry_after: i64,
    /// SQLite `synchronous` for the ledger.
    pub sync: Synchronous,
    /// How long a ledger write waits for another process's transaction before the run gives up.
    pub busy_timeout: Duration,
    /// A re-check that fails this many times in a row is given up (and recorded).
    pub max_recheck_attempts: u32,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRun {
    max_frames: usize,
    #[serde(deserialize_with = "duration::number_or_text")]
    max_seconds: Duration,
    #[serde(deserialize_with = "duration::secs")]
    fresh: i64,
    #[serde(deserialize_with = "window")]
    backfill_window: Option<(u32, u32)>,
    #[serde(deserialize_with = "duration::secs")]
    retain: i64,
    metrics_file: Option<String>,
    pushgateway: Option<String>,
    #[serde(deserialize_with = "duration::secs")]
    retry_base: i64,
    #[serde(deserialize_with = "duration::secs")]
    retry_max: i64,
    #[serde(deserialize_with = "duration::secs")]
    max_retry_after: i64,
    synchronous: Synchronous,
    #[serde(deserialize_with = "busy_timeout")]
    busy_timeout: Duration,
    max_recheck_attempts: u32,
}

impl Default for RawRun {
    fn default() -> Self {
        Self {
            max_frames: 60,
            max_seconds: Duration::from_secs(50),
            fresh: 600,
            backfill_window: None,
            retain: 30 * 86_400,
            metrics_file: None,
            pushgateway: None,
            retry_base: 30,
            retry_max: 3600,
            max_retry_after: 3600,
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(10),
            max_recheck_attempts: 5,
        }
    }
}

impl RawRun {
    pub(super) fn check(
        self,
        base: &Path,
        frames: &FramesConfig,
        env: Env,
        secrets: &mut Redactor,
    ) -> Result<RunConfig> {
        count("run.max_frames", self.max_frames, 1..=MOST_FRAMES_PER_RUN)?;
        let longest_recheck = frames.recheck.last().copied().unwrap_or(0);
        if self.retain <= longest_recheck {
            bail!(
                "run.retain: {} must be longer than the last re-check ({}s), or re-checks would re-send pruned UIDs",
                duration::display(self.retain),
                longest_recheck
            );
        }
        if self.retry_max < self.retry_base {
            bail!("run.retry_max: must not be shorter than run.retry_base");
        }
        if self.max_recheck_attempts == 0 {
            bail!("run.max_recheck_attempts: must be at least 1");
        }
        Ok(RunConfig {
            max_frames: self.max_frames,
            max_seconds: self.max_seconds,
            fresh: fresh(self.fresh, frames.size)?,
            backfill_window: self.backfill_window,
            retain: self.retain,
            metrics_file: self.metrics_file.map(|p| resolve(base, &p)),
            pushgateway: self.pushgateway.map(|u| pushgateway(&u, env, secrets)).transpose()?,
            retry_base: self.retry_base,
            retry_max: self.retry_max,
            max_retry_after: self.max_retry_after,
            sync: self.synchronous,
            busy_timeout: self.busy_timeout,
            max_recheck_attempts: self.max_recheck_attempts,
        })
    }
}

/// `run.pushgateway`: an http(s) base URL, without a query or a fragment (framesync appends
/// the grouping key's path), kept without its trailing slashes.
fn pushgateway(text: &str, env: Env, secrets: &mut Redactor) -> Result<String> {
    let url = check::url("run.pushgateway", text, &[], env, secrets)?;
    if url.contains(['?', '#']) {
        bail!(
            "run.pushgateway: must be the Pushgateway's base URL, such as \"http://pushgateway:9091\", without a query or a fragment"
        );
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `run.fresh`, spanning at most `MOST_FRESH_FRAMES` frames.
fn fresh(fresh: i64, size: FrameSize) -> Result<i64> {
    let frames = fresh / size.seconds();
    if frames > MOST_FRESH_FRAMES {
        bail!(
            "run.fresh: {:?} spans {frames} frames of frames.size; every run plans each fresh frame, so at most {MOST_FRESH_FRAMES}: make it shorter",
            duration::display(fresh)
        );
    }
    Ok(fresh)
}

fn busy_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    read_str(deserializer, |text| {
        let d = duration::parse(text)?;
        if d > LONGEST_BUSY_TIMEOUT {
            return Err(format!("{text:?} is longer than 24 days, the longest SQLite waits"));
        }
        Ok(d)
    })
}

fn window<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<(u32, u32)>, D::Error> {
    read_str(deserializer, |text| {
        utc_window(text).map(Some).ok_or_else(|| format!("{text:?} is not a UTC window such as \"22:00-06:00\""))
    })
}

/// "22:00-06:00" → minutes after midnight (start, end); the window may wrap midnight.
pub(super) fn utc_window(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.split_once('-')?;
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = (minutes(a)?, minutes(b)?);
    (a != b).then_some((a, b))
}
