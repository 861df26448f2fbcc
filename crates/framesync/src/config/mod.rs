//! The TOML config: read once, checked once, turned into typed values. Every error names the
//! key and says what a valid value looks like, so a bad config is fixed in one edit.
//!
//! Each section is deserialized by serde into its `Raw*` form (defaults, enums, durations,
//! pointers, the mapping), then checked into its `*Config` (what spans keys, `${VAR}`).

mod answers;
mod auth;
mod check;
mod duration;
mod frames;
mod lookup;
mod proxy;
mod run;
mod sink;
mod source;
mod tls;
mod toml_error;
mod tree;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use toml::de::DeTable;

pub use self::answers::{BodyKind, BodySpec, Compress, ItemsSpec, Means, Rule, StatusMatch};
pub use self::auth::{AuthConfig, AuthStyle, OAuth2Config, Secret};
pub use self::frames::FramesConfig;
pub use self::lookup::{LookupConfig, LookupMethod, Presence};
pub use self::proxy::ProxySetting;
pub use self::run::RunConfig;
pub use self::sink::{SinkConfig, SinkMode};
pub use self::source::SourceConfig;
pub use self::source::{BodyFormat, PageBy, Paging, Stop};
pub use self::tls::{MinVersion, Transport, Why};
pub use self::tree::{OVERRIDE_PREFIX, overrides_from_process};
pub use crate::record::{TimeFormat, UidRule};

use self::frames::RawFrames;
use self::run::RawRun;
use self::sink::RawSink;
use self::source::RawSource;
use crate::identity::Identity;
use crate::redact::Redactor;

#[derive(Debug, Clone)]
pub struct Config {
    pub ledger: PathBuf,
    pub frames: FramesConfig,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub run: RunConfig,
    /// Values that came from the environment: scrubbed from every message framesync writes.
    pub secrets: Redactor,
    /// The pipeline's identity, URLs as written (before `${VAR}` expansion): the ledger keeps it.
    pub identity: Identity,
    /// The file the config was read from (none when parsed from text).
    pub file: Option<PathBuf>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ledger: String,
    frames: RawFrames,
    source: RawSource,
    sink: RawSink,
    #[serde(default)]
    run: RawRun,
}

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    pub fn load(path: &Path, env: Env) -> Result<Self> {
        Self::load_with_overrides(path, env, &[])
    }

    /// `load`, with `FRAMESYNC__SECTION__KEY` overrides (name, value) set over the file's keys.
    pub fn load_with_overrides(path: &Path, env: Env, overrides: &[(String, String)]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = Self::parse_with_overrides(&text, base, env, overrides)
            .with_context(|| format!("bad config {}", path.display()))?;
        Ok(Self { file: Some(path.to_path_buf()), ..config })
    }

    /// Parses and validates a config; relative paths are taken from `base` (the config's folder).
    pub fn parse(text: &str, base: &Path, env: Env) -> Result<Self> {
        Self::parse_with_overrides(text, base, env, &[])
    }

    /// `parse`, with overrides set over the text's keys before anything is checked.
    pub fn parse_with_overrides(text: &str, base: &Path, env: Env, overrides: &[(String, String)]) -> Result<Self> {
        let mut raw = read(text, env, overrides)?;
        let written_urls = (written(&raw.source.url, &raw.source.query), written(&raw.sink.url, &raw.sink.query));
        let mut secrets = Redactor::default();
        let ledger = resolve(base, &raw.ledger);
        let frames = raw.frames.check()?;
        let (source_tls, sink_tls) = (std::mem::take(&mut raw.source.tls), std::mem::take(&mut raw.sink.tls));
        let mut source = raw.source.check(env, &mut secrets)?;
        let mut sink = raw.sink.check(env, &mut secrets)?;
        source.transport = source_tls.check("source.tls", base, &source.url, env, &mut secrets)?;
        sink.transport = sink_tls.check("sink.tls", base, &sink.url, env, &mut secrets)?;
        let run = raw.run.check(base, &frames, env, &mut secrets)?;
        let identity = Identity {
            source_url: written_urls.0,
            source_time_format: source.time_format.as_str().to_owned(),
            source_records: source.records.clone(),
            source_uid: source.uid.as_str().to_owned(),
            frames_start: frames.start,
            frames_size: frames.size.seconds(),
            sink_url: written_urls.1,
        };
        Ok(Self { ledger, frames, source, sink, run, secrets, identity, file: None })
    }

    /// The pipeline's name: its ledger's file stem (`orders` for `/var/lib/framesync/orders.db`),
    /// since the ledger is the pipeline's identity. Log lines, metric labels, the Pushgateway
    /// group and `status --all` all name the pipeline by it.
    pub fn pipeline_name(&self) -> String {
        pipeline_name(&self.ledger)
    }
}

/// A ledger's file stem, the name of its pipeline.
pub fn pipeline_name(ledger: &Path) -> String {
    ledger.file_stem().map_or_else(|| "framesync".into(), |s| s.to_string_lossy().into_owned())
}

/// The file read by serde, once the overrides are set in its tree and `${VAR}` is expanded.
fn read(text: &str, env: Env, overrides: &[(String, String)]) -> Result<RawConfig> {
    let one_line = |e: toml::de::Error| match e.span().and_then(|span| span.start.checked_sub(text.len() + 1)) {
        Some(i) if i < overrides.len() => anyhow!("{}: {}", overrides[i].0, toml_error::plain(e.message())),
        _ => anyhow!("{}", toml_error::one_line(text, &e)),
    };
    let mut document = DeTable::parse(text).map_err(one_line)?;
    tree::set_overrides(document.get_mut(), overrides, text.len() + 1)?;
    tree::expand(document.get_mut(), env)?;
    RawConfig::deserialize(toml::Deserializer::from(document)).map_err(one_line)
}

/// A URL and its query table as written (before `${VAR}` expansion and encoding): what the
/// ledger keeps of where the records come from and go.
fn written(url: &Option<String>, query: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = url.clone().unwrap_or_default();
    for (name, value) in query {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&format!("{name}={value}"));
    }
    out
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// The example written by `framesync init`; a test keeps it parsing.
pub const EXAMPLE: &str = include_str!("../../framesync.example.toml");

#[cfg(test)]
mod tests;
