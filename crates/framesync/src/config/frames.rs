//! `[frames]`: the reference time, the frame size, and when a frame is pulled and re-checked.

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer};

use super::check::required;
use super::duration;
use super::toml_error::read_str;
use crate::frames::{Epoch, FrameSize, parse_time};

/// The times framesync handles, as `frames.start`: the Unix epoch to the end of year 9999.
const EARLIEST: Epoch = 0;
const LATEST: Epoch = 253_402_300_799;

#[derive(Debug, Clone)]
pub struct FramesConfig {
    /// The reference time, aligned down to a frame boundary.
    pub start: Epoch,
    pub size: FrameSize,
    /// Seconds a frame must be closed before it is pulled.
    pub delay: i64,
    /// Seconds after first delivery at which a frame is pulled again.
    pub recheck: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFrames {
    #[serde(deserialize_with = "start")]
    start: Option<Epoch>,
    #[serde(deserialize_with = "size")]
    size: FrameSize,
    #[serde(deserialize_with = "duration::secs")]
    delay: i64,
    #[serde(deserialize_with = "duration::secs_list")]
    recheck: Vec<i64>,
}

impl Default for RawFrames {
    fn default() -> Self {
        Self { start: None, size: FrameSize::new(60).expect("a minute divides a day"), delay: 120, recheck: Vec::new() }
    }
}

impl RawFrames {
    pub(super) fn check(self) -> Result<FramesConfig> {
        let start = required("frames.start", self.start, "start = \"2026-11-01T00:00:00Z\"")?;
        if self.recheck.windows(2).any(|w| w[0] >= w[1]) {
            bail!("frames.recheck: the re-check times must increase, e.g. [\"10m\", \"6h\"]");
        }
        let size = self.size;
        Ok(FramesConfig { start: size.align_down(start), size, delay: self.delay, recheck: self.recheck })
    }
}

/// A time within the times framesync handles.
fn start<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Epoch>, D::Error> {
    read_str(deserializer, |text| {
        let t = parse_time(text)?;
        if !(EARLIEST..=LATEST).contains(&t) {
            return Err(format!(
                "{:?} is outside the times framesync handles, 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z",
                text.trim()
            ));
        }
        Ok(Some(t))
    })
}

fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FrameSize, D::Error> {
    read_str(deserializer, |text| FrameSize::new(duration::parse_secs(text)?))
}
