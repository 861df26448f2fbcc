//! Config values at and past their bounds: a value whose arithmetic could overflow is a config
//! error naming its key, and whatever `Config::parse` accepts, planning never panics on.

use std::path::Path;

use framesync::config::Config;
use framesync::frames::eligible_until;
use framesync::plan::{self, Facts, Scope, Settings};
use framesync::servers::Pacer;
use framesync::source::frame_url;
use proptest::prelude::*;

/// The keys the property varies.
const KEYS: &[&str] = &[
    "frames.start",
    "frames.size",
    "frames.delay",
    "frames.recheck",
    "source.timeout",
    "source.slow_after",
    "source.max_bytes",
    "source.max_records",
    "source.max_pages",
    "source.max_rps",
    "sink.timeout",
    "sink.batch_size",
    "sink.ack_group",
    "sink.ack_group_time",
    "sink.retries",
    "sink.max_rps",
    "run.max_frames",
    "run.max_seconds",
    "run.fresh",
    "run.retain",
    "run.retry_base",
    "run.retry_max",
    "run.busy_timeout",
];

/// A TOML basic string holding `text`.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn float(f: f64) -> String {
    match f {
        f if f.is_nan() => "nan".into(),
        f if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.into(),
        f => format!("{f:e}"),
    }
}

const UNITS: &[&str] = &["ns", "ms", "s", "m", "h", "d", "w", "M", "y"];

/// A valid value for the key, its bounds included; together they make a valid config.
fn usual(key: &str) -> BoxedStrategy<String> {
    let one_of = |literals: &[&'static str]| prop::sample::select(literals.to_vec()).prop_map(String::from).boxed();
    let durations = |n: std::ops::Range<u64>| {
        (n, prop::sample::select(vec!["s", "m", "h"])).prop_map(|(n, u)| quote(&format!("{n}{u}"))).boxed()
    };
    match key {
        "frames.start" => prop_oneof![
            (0i64..=4_102_444_800).prop_map(|t| quote(&t.to_string())),
            Just(quote("1970-01-01T00:00:00Z")),
            Just(quote("9999-12-31T23:59:59Z")),
        ]
        .boxed(),
        "frames.size" => one_of(&["\"1s\"", "\"1m\"", "\"5m\"", "\"1h\"", "\"1d\""]),
        "frames.recheck" => one_of(&["[]", "[\"10m\", \"6h\"]", "[\"1s\", \"29d\"]"]),
        "run.retain" => one_of(&["\"30d\"", "\"100y\""]),
        "run.retry_base" => one_of(&["\"1s\"", "\"30s\"", "\"1h\""]),
        "run.retry_max" => one_of(&["\"1h\"", "\"100y\""]),
        "run.busy_timeout" => one_of(&["\"0s\"", "\"10s\"", "\"24d\""]),
        "run.fresh" => one_of(&["\"0s\"", "\"10m\"", "\"1d\"", "\"100000s\""]),
        "run.max_seconds" => prop_oneof![(1u64..1000).prop_map(|n| n.to_string()), Just("3155760000".into())].boxed(),
        "run.max_frames" => prop_oneof![(1u64..2000).prop_map(|n| n.to_string()), Just("1000000".into())].boxed(),
        "sink.batch_size" => prop_oneof![(1u64..2000).prop_map(|n| n.to_string()), Just("100000".into())].boxed(),
        "source.max_rps" | "sink.max_rps" => {
            prop_oneof![(0.001f64..1e6).prop_map(float), Just("0.001".into()), Just("1e300".into())].boxed()
        }
        k if k.ends_with("max_bytes") || k.ends_with("max_records") || k.ends_with("max_pages") => {
            prop_oneof![(1u64..1_000_000).prop_map(|n| n.to_string()), Just(u32::MAX.to_string())].boxed()
        }
        "sink.ack_group" | "sink.retries" => (0u64..1000).prop_map(|n| (n + 1).to_string()).boxed(),
        _ => prop_oneof![durations(1..1000), Just(quote("100y")), Just(quote("0s"))].boxed(),
    }
}

/// Anything at all: huge, negative, zero, fractional, of the wrong type, or not a value.
fn hostile() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(float),
        any::<i64>().prop_map(|n| quote(&n.to_string())),
        (any::<u64>(), prop::sample::select(UNITS)).prop_map(|(n, u)| quote(&format!("{n}{u}"))),
        (any::<u32>(), prop::sample::select(UNITS)).prop_map(|(n, u)| quote(&format!("{n}{u}"))),
        "\\PC{0,16}".prop_map(|s| quote(&s)),
        "[0-9 .:TZ+-]{0,24}".prop_map(|s| quote(&s)),
        prop::sample::select(vec![
            "\"-9223372036854775000\"",
            "\"9223372036854775807\"",
            "\"0000-01-01T00:00:00Z\"",
            "\"9999-12-31T23:59:59-23:59\"",
            "\"1969-12-31T23:59:59Z\"",
            "\"101y\"",
            "\"18446744073709551615s\"",
            "\"1ns\"",
            "0",
            "-1",
            "18446744073709551615",
            "1e-300",
            "[\"1y\", \"1000y\"]",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// Every key's literal: ordinary ones, with up to three replaced by hostile ones.
fn values() -> impl Strategy<Value = Vec<String>> {
    let usual: Vec<BoxedStrategy<String>> = KEYS.iter().map(|key| usual(key)).collect();
    let overrides = prop::collection::vec((0..KEYS.len(), hostile()), 0..=2);
    (usual, overrides).prop_map(|(mut values, overrides)| {
        for (i, value) in overrides {
            values[i] = value;
        }
        values
    })
}

fn config_text(values: &[String], time_format: &str) -> String {
    let section = |name: &str| -> String {
        KEYS.iter()
            .zip(values)
            .filter_map(|(key, value)| Some(format!("{} = {value}\n", key.strip_prefix(name)?.strip_prefix('.')?)))
            .collect()
    };
    format!(
        "ledger = \"l.db\"\n[frames]\n{}[source]\nurl = \"http://127.0.0.1:1/ss?from={{from}}&to={{to}}&last={{last}}\"\nuid = \"/id\"\ntime_format = \"{time_format}\"\n{}[sink]\nurl = \"http://127.0.0.1:1/rs\"\n{}[run]\n{}",
        section("frames"),
        section("source"),
        section("sink"),
        section("run")
    )
}

fn parse(text: &str) -> anyhow::Result<Config> {
    Config::parse(text, Path::new("/etc/framesync"), &|_| None)
}

/// A config with every key ordinary, and one replaced by `literal`.
fn with(key: &str, literal: &str) -> String {
    let ordinary = |key: &str| match key {
        "frames.start" => quote("2026-11-01T00:00:00Z"),
        "frames.size" => quote("1m"),
        "frames.recheck" => "[\"10m\"]".into(),
        k if k.ends_with("max_rps") => "10.0".into(),
        k if k.ends_with("max_seconds") || k.ends_with("max_bytes") || k.ends_with("max_records") => "50".into(),
        k if k.ends_with("max_pages") || k.ends_with("max_frames") || k.ends_with("batch_size") => "50".into(),
        k if k.ends_with("ack_group") || k.ends_with("retries") => "50".into(),
        _ => quote("1h"),
    };
    let values: Vec<String> = KEYS.iter().map(|k| if *k == key { literal.to_owned() } else { ordinary(k) }).collect();
    config_text(&values, "rfc3339")
}

#[test]
fn the_ordinary_config_of_these_tests_parses() {
    parse(&with("", "")).unwrap();
}

#[test]
fn values_that_would_overflow_are_refused_naming_the_key_and_the_valid_range() {
    let range = "1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z";
    let cases = [
        ("frames.start", "\"-9223372036854775000\"", range),
        ("frames.start", "\"9223372036854775000\"", range),
        ("frames.start", "\"1969-12-31T23:59:59Z\"", range),
        ("frames.start", "\"+10000-01-01T00:00:00Z\"", "frames.start"),
        ("frames.delay", "\"101y\"", "longer than 100 years"),
        ("frames.recheck", "[\"10m\", \"1000y\"]", "frames.recheck[1]"),
        ("source.timeout", "\"500y\"", "longer than 100 years"),
        ("source.slow_after", "\"18446744073709551615s\"", "source.slow_after"),
        ("source.max_rps", "1e-300", "one request every 1000 s"),
        ("sink.timeout", "\"101y\"", "longer than 100 years"),
        ("sink.ack_group_time", "\"200y\"", "longer than 100 years"),
        ("sink.batch_size", "100001", "from 1 to 100000"),
        ("sink.batch_size", "0", "from 1 to 100000"),
        ("sink.max_rps", "1e-30", "one request every 1000 s"),
        ("run.max_frames", "1000001", "from 1 to 1000000"),
        ("run.max_seconds", "9223372036854775807", "longer than 100 years"),
        ("run.max_seconds", "\"101y\"", "longer than 100 years"),
        ("run.fresh", "\"100y\"", "frames of frames.size"),
        ("run.retain", "\"101y\"", "longer than 100 years"),
        ("run.retry_base", "\"101y\"", "longer than 100 years"),
        ("run.retry_max", "\"101y\"", "longer than 100 years"),
        ("run.busy_timeout", "\"25d\"", "24 days"),
    ];
    for (key, literal, want) in cases {
        let text = with(key, literal);
        let error = format!("{:#}", parse(&text).expect_err(key));
        assert!(error.contains(key) && error.contains(want), "{key} = {literal}: {error}");
    }
}

#[test]
fn values_at_their_bounds_are_taken() {
    let cases = [
        ("frames.start", "\"1970-01-01T00:00:00Z\""),
        ("frames.start", "\"9999-12-31T23:59:59Z\""),
        ("frames.delay", "\"100y\""),
        ("source.timeout", "\"100y\""),
        ("sink.batch_size", "100000"),
        ("run.max_frames", "1000000"),
        ("run.max_seconds", "3155760000"),
        ("run.retain", "\"100y\""),
        ("run.busy_timeout", "\"24d\""),
        ("source.max_rps", "0.001"),
    ];
    for (key, literal) in cases {
        let text = with(key, literal);
        assert!(parse(&text).is_ok(), "{key} = {literal}: {:#}", parse(&text).unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn whatever_the_config_says_parsing_and_planning_never_panic(
        values in values(),
        time_format in prop::sample::select(vec!["rfc3339", "epoch_s", "epoch_ms"]),
        nows in prop::collection::vec(0i64..=4_102_444_800, 1..4),
    ) {
        let Ok(config) = parse(&config_text(&values, time_format)) else { return Ok(()) };
        let frames = &config.frames;
        let settings = Settings::from_config(&config);
        let first = frames.size.frame_at(frames.start);
        let _ = (first.end(), frame_url(&config.source.url, &config.source.query, config.source.time_format, first));
        let _ = (Pacer::new(config.source.max_rps), Pacer::new(config.sink.max_rps));
        for now in nows {
            for scope in [Scope::Run, Scope::Pull, Scope::Push] {
                let plan = plan::plan(&settings, &Facts::default(), now, scope);
                prop_assert!(plan.steps.len() <= config.run.max_frames);
            }
            let horizon = eligible_until(frames.size, now, frames.delay);
            let frame = frames.size.frame_at(horizon - 1);
            let _ = (frame.end(), frame_url(&config.source.url, &config.source.query, config.source.time_format, frame));
        }
    }
}
