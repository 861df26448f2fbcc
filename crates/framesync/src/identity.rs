//! The pipeline's identity: what makes a ledger one pipeline's and no other's — where records
//! come from (the source URL, its time format, where the records and their UIDs are), which
//! frames they are pulled in (the reference time and the frame size) and where they go (the sink
//! URL). The ledger records it on first use; every command compares its config with it, so two
//! configs never share a ledger by mistake: the second would plan only from what the first had
//! delivered and silently never pull the rest.
//!
//! The URLs are kept as written in the config, before `${VAR}` expansion: an expanded value may
//! hold a secret, and secrets never reach the ledger or a message.

use std::fmt;
use std::path::Path;

use crate::frames::{Epoch, rfc3339};

/// The config key of the frame size: the one difference that can never be accepted.
pub const FRAME_SIZE: &str = "frames.size";

/// A pipeline's identity, as its config writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `source.url`, before `${VAR}` expansion.
    pub source_url: String,
    pub source_time_format: String,
    pub source_records: String,
    pub source_uid: String,
    /// `frames.start`, aligned down to a frame boundary.
    pub frames_start: Epoch,
    /// `frames.size` in seconds.
    pub frames_size: i64,
    /// `sink.url`, before `${VAR}` expansion.
    pub sink_url: String,
}

impl Identity {
    /// Each config key with its value as messages show it (quoted).
    pub fn fields(&self) -> [(&'static str, String); 7] {
        [
            ("source.url", quoted(&self.source_url)),
            ("source.time_format", quoted(&self.source_time_format)),
            ("source.records", quoted(&self.source_records)),
            ("source.uid", quoted(&self.source_uid)),
            ("frames.start", quoted(&rfc3339(self.frames_start))),
            (FRAME_SIZE, quoted(&size_text(self.frames_size))),
            ("sink.url", quoted(&self.sink_url)),
        ]
    }
}

/// What a ledger records of the pipeline it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new ledger: no command has written to it yet.
    Nothing,
    /// A ledger from a framesync that recorded only the frame size.
    FrameSize(i64),
    Identity(Identity),
}

impl Recorded {
    /// Each key whose value in `config` differs from the ledger's, in the order of
    /// [`Identity::fields`]. A ledger without an identity differs at most in its frame size.
    pub fn differences(&self, config: &Identity) -> Vec<Difference> {
        let ours = config.fields();
        match self {
            Self::Nothing => Vec::new(),
            Self::FrameSize(size) if *size == config.frames_size => Vec::new(),
            Self::FrameSize(size) => vec![Difference {
                key: FRAME_SIZE,
                ledger: quoted(&size_text(*size)),
                config: quoted(&size_text(config.frames_size)),
            }],
            Self::Identity(recorded) => recorded
                .fields()
                .into_iter()
                .zip(ours)
                .filter(|((_, ledger), (_, config))| ledger != config)
                .map(|((key, ledger), (_, config))| Difference { key, ledger, config })
                .collect(),
        }
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, Self::Identity(_))
    }
}

/// One key on which a config and a ledger disagree, with both values as shown to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: &'static str,
    pub ledger: String,
    pub config: String,
}

impl Difference {
    pub fn is_frame_size(&self) -> bool {
        self.key == FRAME_SIZE
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {} in the config but {} in the ledger", self.key, self.config, self.ledger)
    }
}

/// The refusal of a ledger that belongs to another pipeline: every difference, then what to do.
pub fn refusal(ledger: &Path, differences: &[Difference], config_file: Option<&Path>) -> String {
    let listed: Vec<String> = differences.iter().map(ToString::to_string).collect();
    format!(
        "ledger {} belongs to another pipeline: {}; {}",
        ledger.display(),
        listed.join("; "),
        advice(differences, config_file)
    )
}

/// What to do about `differences`: accept them, unless the frame size differs.
pub fn advice(differences: &[Difference], config_file: Option<&Path>) -> String {
    match differences.iter().find(|d| d.is_frame_size()) {
        Some(size) => format!(
            "frames of another size would not line up with the ones delivered; keep {FRAME_SIZE} = {} or start a new ledger",
            size.ledger
        ),
        None => format!(
            "if the change is deliberate, run `framesync --config {} accept-config`",
            config_file.map_or_else(|| "FILE".into(), |f| f.display().to_string())
        ),
    }
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// A frame size as a config would write it: "1m" rather than "60s".
fn size_text(seconds: i64) -> String {
    match seconds {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            source_url: "http://a/events?from={from}&to={to}&key=${SS_KEY}".into(),
            source_time_format: "rfc3339".into(),
            source_records: "/items".into(),
            source_uid: "/id".into(),
            frames_start: 1_793_491_200,
            frames_size: 60,
            sink_url: "http://rs/ingest".into(),
        }
    }

    fn keys(differences: &[Difference]) -> Vec<&str> {
        differences.iter().map(|d| d.key).collect()
    }

    #[test]
    fn the_same_identity_has_no_differences() {
        assert!(Recorded::Identity(identity()).differences(&identity()).is_empty());
    }

    #[test]
    fn each_field_that_differs_is_named_with_both_values() {
        type Change = fn(&mut Identity);
        let cases: [(Change, &str, &str, &str); 7] = [
            (
                |i| i.source_url = "http://b/events?from={from}&to={to}".into(),
                "source.url",
                "\"http://a/events?from={from}&to={to}&key=${SS_KEY}\"",
                "\"http://b/events?from={from}&to={to}\"",
            ),
            (|i| i.source_time_format = "epoch_s".into(), "source.time_format", "\"rfc3339\"", "\"epoch_s\""),
            (|i| i.source_records = String::new(), "source.records", "\"/items\"", "\"\""),
            (|i| i.source_uid = "hash".into(), "source.uid", "\"/id\"", "\"hash\""),
            (|i| i.frames_start += 3600, "frames.start", "\"2026-11-01T00:00:00Z\"", "\"2026-11-01T01:00:00Z\""),
            (|i| i.frames_size = 300, "frames.size", "\"1m\"", "\"5m\""),
            (|i| i.sink_url = "http://rs2/ingest".into(), "sink.url", "\"http://rs/ingest\"", "\"http://rs2/ingest\""),
        ];
        for (change, key, ledger, config) in cases {
            let mut ours = identity();
            change(&mut ours);
            let differences = Recorded::Identity(identity()).differences(&ours);
            assert_eq!(differences, vec![Difference { key, ledger: ledger.into(), config: config.into() }]);
        }
    }

    #[test]
    fn every_difference_is_listed_in_the_order_of_the_config() {
        let mut ours = identity();
        ours.sink_url = "http://rs2/ingest".into();
        ours.source_uid = "hash".into();
        assert_eq!(keys(&Recorded::Identity(identity()).differences(&ours)), ["source.uid", "sink.url"]);
    }

    #[test]
    fn a_ledger_without_an_identity_differs_only_in_its_frame_size() {
        assert!(Recorded::Nothing.differences(&identity()).is_empty());
        assert!(Recorded::FrameSize(60).differences(&identity()).is_empty());
        assert_eq!(keys(&Recorded::FrameSize(3600).differences(&identity())), ["frames.size"]);
    }

    #[test]
    fn the_refusal_names_the_key_both_values_and_accept_config() {
        let mut ours = identity();
        ours.source_url = "http://b/events?from={from}&to={to}".into();
        let differences = Recorded::Identity(identity()).differences(&ours);
        let text = refusal(Path::new("/x/orders.db"), &differences, Some(Path::new("/etc/framesync/orders.toml")));
        assert_eq!(
            text,
            "ledger /x/orders.db belongs to another pipeline: source.url is \"http://b/events?from={from}&to={to}\" in the config but \"http://a/events?from={from}&to={to}&key=${SS_KEY}\" in the ledger; if the change is deliberate, run `framesync --config /etc/framesync/orders.toml accept-config`"
        );
    }

    #[test]
    fn a_frame_size_difference_is_never_offered_for_acceptance() {
        let mut ours = identity();
        ours.frames_size = 300;
        ours.sink_url = "http://rs2/ingest".into();
        let text = refusal(Path::new("l.db"), &Recorded::Identity(identity()).differences(&ours), None);
        assert!(text.contains("frames.size is \"5m\" in the config but \"1m\" in the ledger"), "{text}");
        assert!(text.contains("sink.url is"), "{text}");
        assert!(text.ends_with("keep frames.size = \"1m\" or start a new ledger"), "{text}");
        assert!(!text.contains("accept-config"), "{text}");
    }

    #[test]
    fn frame_sizes_read_as_a_config_writes_them() {
        assert_eq!(size_text(1), "1s");
        assert_eq!(size_text(90), "90s");
        assert_eq!(size_text(300), "5m");
        assert_eq!(size_text(7200), "2h");
        assert_eq!(size_text(86_400), "1d");
    }
}
