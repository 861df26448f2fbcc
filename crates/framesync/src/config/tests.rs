//! The config as a whole: defaults, keys named in errors, secrets, the identity.

use std::time::Duration;

use super::*;
use crate::frames::parse_time;

fn env(name: &str) -> Option<String> {
    match name {
        "SS_TOKEN" => Some("ss-secret-123".into()),
        "RS_TOKEN" => Some("rs-secret-456".into()),
        _ => None,
    }
}

fn minimal(extra_source: &str, extra_run: &str) -> String {
    format!(
        r#"
ledger = "orders.db"
[frames]
start = "2026-11-01T00:00:30Z"
[source]
url = "http://127.0.0.1:1/ss?from={{from}}&to={{to}}"
uid = "/id"
{extra_source}
[sink]
url = "http://127.0.0.1:1/rs"
[run]
{extra_run}
"#
    )
}

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/framesync"), &env)
}

fn error(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("the config should be refused"))
}

#[test]
fn the_example_config_parses() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.frames.size.seconds(), 60);
    assert!(config.secrets.scrub("Bearer ss-secret-123").contains("***"));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(&minimal("", "")).unwrap();
    assert_eq!(config.ledger, PathBuf::from("/etc/framesync/orders.db"));
    assert_eq!(config.frames.start, parse_time("2026-11-01T00:00:00Z").unwrap(), "aligned down");
    assert_eq!(config.frames.delay, 120);
    assert_eq!(config.sink.idempotency_header, "Idempotency-Key");
    assert_eq!(config.sink.already_there, vec![409]);
    assert_eq!(config.run.max_frames, 60);
    assert_eq!(config.run.max_seconds, Duration::from_secs(50));
    assert_eq!((config.sink.ack_group, config.sink.ack_group_time), (100, Duration::from_millis(100)));
    let sink = &config.sink;
    assert_eq!((sink.concurrency, sink.adaptive, sink.ordered, sink.in_flight()), (16, true, false, 16));
}

#[test]
fn sink_ordered_keeps_one_request_in_flight_whatever_the_concurrency() {
    let text = minimal("", "").replace("[sink]", "[sink]\nconcurrency = 64\nordered = true\nadaptive = false");
    let sink = parse(&text).unwrap().sink;
    assert_eq!((sink.concurrency, sink.adaptive, sink.ordered, sink.in_flight()), (64, false, true, 1));
}

#[test]
fn an_unknown_key_is_named() {
    let e = error(&minimal("uidd = \"/x\"", ""));
    assert!(e.contains("uidd"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (minimal("time_format = \"iso\"", ""), "source.time_format"),
        (minimal("timeout = \"soon\"", ""), "source.timeout"),
        (minimal("next = \"next\"", ""), "source.next"),
        (minimal("", "max_frames = 0"), "run.max_frames"),
        (minimal("", "backfill_window = \"22-6\""), "run.backfill_window"),
        (minimal("", "retain = \"5m\"").replace("[source]", "recheck = [\"10m\"]\n[source]"), "run.retain"),
        (minimal("headers = { Authorization = \"Bearer ${NOPE}\" }", ""), "NOPE"),
        (minimal("", "").replace("{to}", "{too}"), "{too}"),
        (minimal("", "").replace("start = \"2026-11-01T00:00:30Z\"", "start = \"yesterday\""), "frames.start"),
        (minimal("", "").replace("[source]", "[frames.x]\n[source]"), "x"),
        (minimal("", "").replace("[run]", "ack_group = 0\n[run]"), "sink.ack_group"),
        (minimal("", "").replace("[run]", "concurrency = 0\n[run]"), "sink.concurrency"),
        (minimal("", "").replace("[run]", "concurrency = 257\n[run]"), "sink.concurrency"),
        (minimal("", "").replace("[run]", "ack_group_time = \"now\"\n[run]"), "sink.ack_group_time"),
        (minimal("", "pushgateway = \"pushgateway:9091\""), "run.pushgateway"),
        (minimal("", "pushgateway = \"http://pg:9091/?x=1\""), "run.pushgateway"),
        (minimal("", "pushgateway = 9091"), "run.pushgateway"),
    ];
    for (text, key) in cases {
        assert!(parse(&text).is_err(), "{key}: accepted {text}");
        let e = error(&text);
        assert!(e.contains(key), "{key} not named in: {e}");
    }
}

#[test]
fn a_frame_size_that_does_not_divide_a_day_is_refused() {
    let text = minimal("", "").replace("[source]", "size = \"7s\"\n[source]");
    let e = error(&text);
    assert!(e.contains("frames.size") && e.contains("divide a day"), "{e}");
}

#[test]
fn environment_values_are_expanded_and_remembered_as_secrets() {
    let config = parse(&minimal("headers = { Authorization = \"Bearer ${SS_TOKEN}\" }", "")).unwrap();
    assert_eq!(config.source.headers, vec![("Authorization".into(), "Bearer ss-secret-123".into())]);
    assert_eq!(config.secrets.scrub("failed: Bearer ss-secret-123"), "failed: Bearer ***");
}

#[test]
fn the_identity_keeps_the_urls_as_written_before_expansion() {
    let text = minimal("", "")
        .replace("&to={to}", "&to={to}&key=${SS_TOKEN}")
        .replace("url = \"http://127.0.0.1:1/rs\"", "url = \"http://127.0.0.1:1/rs?key=${RS_TOKEN}\"");
    let config = parse(&text).unwrap();
    assert!(config.source.url.contains("ss-secret-123") && config.sink.url.contains("rs-secret-456"));
    let identity = &config.identity;
    assert_eq!(identity.source_url, "http://127.0.0.1:1/ss?from={from}&to={to}&key=${SS_TOKEN}");
    assert_eq!(identity.sink_url, "http://127.0.0.1:1/rs?key=${RS_TOKEN}");
    assert_eq!((identity.source_time_format.as_str(), identity.source_records.as_str()), ("rfc3339", ""));
    assert_eq!(identity.source_uid, "/id");
    assert_eq!(identity.frames_start, parse_time("2026-11-01T00:00:00Z").unwrap(), "aligned down");
    assert_eq!(identity.frames_size, 60);
}

#[test]
fn the_pushgateway_is_a_base_url_that_may_come_from_the_environment() {
    assert_eq!(parse(&minimal("", "")).unwrap().run.pushgateway, None, "no push unless asked");
    let config = parse(&minimal("", "pushgateway = \"https://u:${RS_TOKEN}@pg:9091/\"")).unwrap();
    assert_eq!(config.run.pushgateway.as_deref(), Some("https://u:rs-secret-456@pg:9091"));
    assert_eq!(config.secrets.scrub("https://u:rs-secret-456@pg"), "https://u:***@pg");
}

#[test]
fn backfill_windows_may_wrap_midnight() {
    use super::run::utc_window as window;
    assert_eq!(window("22:00-06:00").unwrap(), (1320, 360));
    assert_eq!(window("01:30-02:00").unwrap(), (90, 120));
    assert!(window("25:00-01:00").is_none());
    assert!(window("01:00-01:00").is_none());
}

#[test]
fn bad_mappings_name_the_key() {
    for (text, want) in [
        (r#"a = "id""#, "sink.map.a"),
        (r#"a = { from = "/x", const = 1 }"#, "either"),
        (r#"a = { form = "/x" }"#, "form"),
        (r#"a = { from = "/x", time = "iso" }"#, "sink.map.a.time"),
        (r#"a = 3"#, "sink.map.a"),
    ] {
        let e = error(&minimal("", "").replace("[run]", &format!("map = {{ {text} }}\n[run]")));
        assert!(e.contains(want), "{want} not in {e}");
    }
}

#[test]
fn errors_the_toml_reader_finds_are_one_line_led_by_their_key() {
    let cases = [
        (minimal("uidd = \"/x\"", ""), "source: unknown field `uidd`"),
        (minimal("", "synchronous = \"fsync\""), "run.synchronous: unknown variant `fsync`"),
        (minimal("", "max_seconds = -3"), "run.max_seconds: -3 is not a positive number of seconds such as 50"),
        (
            minimal("", "").replace("[source]", "recheck = [\"10m\", \"1500ms\"]\n[source]"),
            "frames.recheck[1]: \"1500ms\" must be a whole number of seconds",
        ),
        (minimal("", "").replace("uid = \"/id\"", ""), "source.uid: missing; add it, e.g. uid = \"/id\""),
        (
            minimal("", "").replace("[run]", "[sink.map]\na = { form = \"/x\" }\n[run]"),
            "sink.map.a: unknown field `form`",
        ),
        ("ledger = \"x\nfoo".into(), "line 2: "),
    ];
    for (text, want) in cases {
        let e = error(&text);
        assert!(e.starts_with(want) && !e.contains('\n'), "{want:?} does not lead {e:?}");
    }
}

#[test]
fn query_tables_are_checked_expanded_and_kept_in_the_identity() {
    let text = r#"
ledger = "l.db"
[frames]
start = "2026-11-01T00:00:00Z"
[source]
url = "http://127.0.0.1:1/"
uid = "/id"
[source.query]
query = "SELECT * FROM t WHERE ts >= {from} AND ts < {to} AND k = '${SS_TOKEN}' FORMAT JSON"
[sink]
url = "http://127.0.0.1:1/rs"
[sink.query]
query = "INSERT INTO t FORMAT JSONEachRow"
"#;
    let config = parse(text).unwrap();
    assert!(config.source.query.uses(crate::template::Var::From));
    assert!(
        !config.secrets.scrub("k = ss-secret-123").contains("ss-secret-123"),
        "the value from the environment is a secret"
    );
    assert!(config.identity.source_url.contains("${SS_TOKEN}"), "{}", config.identity.source_url);
    assert!(
        config.identity.sink_url.ends_with("?query=INSERT INTO t FORMAT JSONEachRow"),
        "{}",
        config.identity.sink_url
    );

    let typo = text.replace("ts < {to}", "ts < {too}");
    let e = error(&typo);
    assert!(e.starts_with("source.query.query: unknown placeholder {too}") && !e.contains('\n'), "{e}");
    let unbounded = text.replace("ts >= {from} AND ts < {to} AND ", "");
    assert!(error(&unbounded).contains("must contain {from}"), "{}", error(&unbounded));
    let uid_in_sink = text.replace("INSERT INTO t", "INSERT INTO {uid}");
    assert!(error(&uid_in_sink).starts_with("sink.query.query: {uid} cannot be used here"), "{}", error(&uid_in_sink));
}

/// Bad values over every section: each error is one line, led by the value's dotted key, and
/// says the form the key expects in the config's words (no `usize`, `sequence` or `map`).
#[test]
fn type_errors_are_one_line_naming_the_key_and_the_expected_form() {
    let in_sink = |line: &str| minimal("", "").replace("[sink]", &format!("[sink]\n{line}"));
    let in_frames = |line: &str| minimal("", "").replace("[frames]", &format!("[frames]\n{line}"));
    let cases = [
        (minimal("", "").replace("ledger = \"orders.db\"", "ledger = 5"), "ledger: ", "expected a string"),
        (in_frames("delay = \"2m\"").replace("start", "delay2 = 1\nstart"), "frames: ", "unknown field"),
        (in_frames("recheck = \"10m\""), "frames.recheck: ", "expected a list"),
        (in_frames("size = 60"), "frames.size: ", "expected a string"),
        (minimal("timeout = 5", ""), "source.timeout: ", "expected a string"),
        (minimal("headers = [1]", ""), "source.headers: ", "expected a table"),
        (minimal("max_rps = \"fast\"", ""), "source.max_rps: ", "expected a number"),
        (in_sink("batch_size = \"many\""), "sink.batch_size: ", "expected a whole number"),
        (in_sink("mode = \"bulk\""), "sink.mode: ", "expected `record` or `batch`"),
        (in_sink("concurrency = \"many\""), "sink.concurrency: ", "expected a whole number"),
        (in_sink("adaptive = \"yes\""), "sink.adaptive: ", "expected"),
        (in_sink("ordered = 1"), "sink.ordered: ", "expected"),
        (in_sink("already_there = \"409\""), "sink.already_there: ", "expected a list"),
        (in_sink("already_there = [\"409\"]"), "sink.already_there[0]: ", "expected a whole number"),
        (in_sink("headers = [\"a\"]"), "sink.headers: ", "expected a table"),
        (in_sink("auth = { kind = \"nope\" }"), "sink.auth.kind: ", "expected one of `bearer`"),
        (in_sink("auth = \"bearer\""), "sink.auth: ", "expected"),
        (minimal("", "max_frames = \"x\""), "run.max_frames: ", "expected a whole number"),
        (minimal("", "max_frames = [1]"), "run.max_frames: ", "invalid type: a list, expected a whole number"),
        (minimal("", "synchronous = 1"), "run.synchronous: ", "expected"),
        (minimal("", "metrics_file = { a = 1 }"), "run.metrics_file: ", "invalid type: a table"),
    ];
    for (text, key, form) in cases {
        let e = error(&text);
        assert!(e.starts_with(key) && e.contains(form) && !e.contains('\n'), "{key:?} {form:?} not in {e:?}");
        for serde_word in ["usize", "u16", "f64", "sequence", " map"] {
            assert!(!e.contains(serde_word), "{serde_word} in {e:?}");
        }
    }
}

#[test]
fn every_string_value_expands_variables_and_defaults() {
    let env = |name: &str| match name {
        "STATE" => Some("/var/lib/framesync".to_owned()),
        "EMPTY" => Some(String::new()),
        "SS_TOKEN" => Some("ss-secret-123".to_owned()),
        _ => None,
    };
    let text =
        minimal("headers = { Authorization = \"Bearer ${SS_TOKEN:-unused}\", X-Tag = \"${TAG:-plain-tag}\" }", "")
            .replace("\"orders.db\"", "\"${STATE}/orders.db\"")
            .replace("uid = \"/id\"", "uid = \"${UID_AT:-/id}\"")
            .replace("[run]", "[run]\nmetrics_file = \"${EMPTY:-/tmp}/m.prom\"");
    let config = Config::parse(&text, Path::new("/etc/framesync"), &env).unwrap();
    assert_eq!(config.ledger, PathBuf::from("/var/lib/framesync/orders.db"));
    assert_eq!(config.source.uid.as_str(), "/id", "the default is used when the variable is unset");
    assert!(format!("{:?}", config.run).contains("/tmp/m.prom"), "an empty variable takes the default");
    let headers = &config.source.headers;
    assert!(headers.contains(&("Authorization".to_owned(), "Bearer ss-secret-123".to_owned())), "{headers:?}");
    assert!(headers.contains(&("X-Tag".to_owned(), "plain-tag".to_owned())), "{headers:?}");
    let secrets = &config.secrets;
    assert_eq!(secrets.scrub("ss-secret-123"), "***", "a header's value from the environment is a secret");
    assert_eq!(secrets.scrub("plain-tag"), "plain-tag", "a default is written in the file: no secret");
    assert_eq!(secrets.scrub("/var/lib/framesync"), "/var/lib/framesync", "a path is no secret");
}

#[test]
fn an_unset_variable_without_a_default_names_its_key() {
    let e = error(&minimal("", "").replace("\"orders.db\"", "\"${NOWHERE}/orders.db\""));
    assert!(e.starts_with("ledger: the environment variable NOWHERE is not set"), "{e}");
    let e = error(&minimal("", "").replace("uid = \"/id\"", "uid = \"${BAD NAME:-/id}\""));
    assert!(e.starts_with("source.uid: ") && e.contains("not an environment variable name"), "{e}");
}

fn overridden(text: &str, vars: &[(&str, &str)]) -> Result<Config> {
    let vars: Vec<_> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::parse_with_overrides(text, Path::new("/etc/framesync"), &env, &vars)
}

#[test]
fn environment_overrides_set_any_key_before_the_checks() {
    let config = overridden(
        &minimal("", ""),
        &[
            ("FRAMESYNC__SINK__BATCH_SIZE", "1000"),
            ("FRAMESYNC__SINK__MODE", "batch"),
            ("FRAMESYNC__LEDGER", "${STATE:-/srv}/o.db"),
            ("FRAMESYNC__FRAMES__RECHECK", "[\"10m\", \"1h\"]"),
            ("FRAMESYNC__SOURCE__HEADERS__X_TOKEN", "Bearer ${SS_TOKEN}"),
            ("FRAMESYNC__RUN__MAX_FRAMES", "7"),
        ],
    )
    .unwrap();
    assert_eq!((config.sink.batch_size, config.sink.mode), (1000, SinkMode::Batch));
    assert_eq!(config.ledger, PathBuf::from("/srv/o.db"), "a value that is not TOML is a string");
    assert_eq!(config.frames.recheck.len(), 2);
    assert_eq!(config.run.max_frames, 7);
    assert!(config.source.headers.contains(&("x_token".into(), "Bearer ss-secret-123".into())));
    assert_eq!(config.secrets.scrub("ss-secret-123"), "***");
}

#[test]
fn a_bad_override_is_named_by_its_variable() {
    let cases = [
        ("FRAMESYNC__SINK__BATCHSIZE", "5", "FRAMESYNC__SINK__BATCHSIZE: unknown field `batchsize`"),
        ("FRAMESYNC__NOPE__X", "5", "FRAMESYNC__NOPE__X: unknown field `nope`"),
        (
            "FRAMESYNC__SINK__BATCH_SIZE",
            "lots",
            "FRAMESYNC__SINK__BATCH_SIZE: invalid type: string \"lots\", expected a whole number",
        ),
        ("FRAMESYNC__SINK__ALREADY_THERE", "[\"x\"]", "FRAMESYNC__SINK__ALREADY_THERE: invalid type: string"),
        ("FRAMESYNC__LEDGER__PATH", "x", "FRAMESYNC__LEDGER__PATH: ledger is not a table"),
        ("FRAMESYNC__SINK____X", "x", "FRAMESYNC__SINK____X: name a key as"),
    ];
    for (name, value, want) in cases {
        let e = format!("{:#}", overridden(&minimal("", ""), &[(name, value)]).unwrap_err());
        assert!(e.starts_with(want) && !e.contains('\n'), "{want:?} does not lead {e:?}");
    }
}

#[test]
fn source_concurrency_defaults_to_one_frame_at_a_time_and_refuses_values_out_of_range() {
    assert_eq!(parse(&minimal("", "")).unwrap().source.concurrency, 1);
    assert_eq!(parse(&minimal("concurrency = 64", "")).unwrap().source.concurrency, 64);
    for bad in ["concurrency = 0", "concurrency = 65", "concurrency = \"four\""] {
        let e = error(&minimal(bad, ""));
        assert!(e.starts_with("source.concurrency: ") && !e.contains('\n'), "{bad}: {e:?}");
    }
}
