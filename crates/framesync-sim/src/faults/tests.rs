use std::collections::{BTreeSet, HashMap};

use super::*;

const DRAWS: usize = 10_000;

fn set<T>(field: &mut T, value: T) -> Result<(), String> {
    *field = value;
    Ok(())
}

fn ss_plans(faults: &Faults, n: usize) -> Vec<Plan> {
    (0..n).map(|_| faults.next_ss()).collect()
}

fn rs_plans(faults: &Faults, n: usize) -> Vec<Plan> {
    (0..n).map(|_| faults.next_rs()).collect()
}

/// How many plans met each fault counter (`None` for no fault).
fn tally(plans: &[Plan]) -> HashMap<Option<&'static str>, usize> {
    let mut counts = HashMap::new();
    for plan in plans {
        *counts.entry(plan.fault.map(|(kind, _)| kind.name())).or_default() += 1;
    }
    counts
}

fn every_ss_rate(rate: f64) -> FaultSettings {
    FaultSettings {
        ss_reset_rate: rate,
        ss_empty_rate: rate,
        ss_error_rate: rate,
        ss_5xx_rate: rate,
        ss_429_rate: rate,
        ss_truncate_rate: rate,
        ss_malformed_rate: rate,
        ss_dribble_rate: rate,
        ..FaultSettings::default()
    }
}

fn every_rs_rate(rate: f64) -> FaultSettings {
    FaultSettings {
        rs_reset_rate: rate,
        rs_empty_rate: rate,
        rs_error_rate: rate,
        rs_5xx_rate: rate,
        rs_4xx_rate: rate,
        rs_429_rate: rate,
        rs_drop_response_rate: rate,
        ..FaultSettings::default()
    }
}

#[test]
fn the_same_seed_and_request_sequence_meet_the_same_faults() {
    let settings = FaultSettings { latency_jitter_ms: 100, ..every_rs_rate(0.1) };
    let a = rs_plans(&Faults::new(1, settings.clone()), 500);
    let b = rs_plans(&Faults::new(1, settings.clone()), 500);
    let c = rs_plans(&Faults::new(2, settings), 500);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn each_rate_is_honored_over_ten_thousand_draws() {
    let ss = tally(&ss_plans(&Faults::new(5, every_ss_rate(0.1)), DRAWS));
    let rs = tally(&rs_plans(&Faults::new(5, every_rs_rate(0.1)), DRAWS));
    // 0.1 of 10,000 has a standard deviation of 30: 200 is over six of them.
    for (counts, faults, none) in [(ss, 8, 2000), (rs, 7, 3000)] {
        assert_eq!(counts.len(), faults + 1, "{counts:?}");
        for (kind, n) in &counts {
            let expected = if kind.is_some() { 1000 } else { none };
            assert!(n.abs_diff(expected) < 200, "{kind:?}: {n} of {DRAWS}, expected about {expected}");
        }
    }
}

#[test]
fn rates_adding_up_to_one_give_every_request_exactly_one_fault() {
    let plans = rs_plans(&Faults::new(9, every_rs_rate(1.0 / 7.0)), DRAWS);
    assert!(plans.iter().all(|p| p.fault.is_some()));
    let counts = tally(&plans);
    assert_eq!(counts.values().sum::<usize>(), DRAWS, "each request counted under one fault");
    assert!(counts.values().all(|n| n.abs_diff(DRAWS / 7) < 200), "{counts:?}");
}

#[test]
fn rates_adding_up_to_more_than_one_are_refused_and_change_nothing() {
    let faults = Faults::new(1, FaultSettings { ss_error_rate: 0.7, ..FaultSettings::default() });
    let error = faults.update(|s| set(&mut s.ss_429_rate, 0.5)).unwrap_err();
    assert!(error.contains("SS fault rates add up to 1.2 (ss_error_rate=0.7 + ss_429_rate=0.5)"), "{error}");
    assert_eq!(faults.settings().ss_429_rate, 0.0);
    let exactly_one = faults.update(|s| set(&mut s.ss_429_rate, 0.3)).unwrap();
    assert_eq!(exactly_one.ss_429_rate, 0.3);
    assert!(every_rs_rate(0.15).validate().unwrap_err().contains("the RS fault rates add up to 1.05"));
}

#[test]
fn injected_statuses_are_drawn_from_their_class() {
    let statuses = |settings: FaultSettings| -> BTreeSet<u16> {
        let faults = Faults::new(3, settings);
        let status = |p: Plan| match p.fault {
            Some((_, Fault::Status(s))) => s,
            other => panic!("expected a status, got {other:?}"),
        };
        (0..200).map(|_| status(faults.next_rs())).collect()
    };
    let five = statuses(FaultSettings { rs_5xx_rate: 1.0, ..FaultSettings::default() });
    assert_eq!(five, BTreeSet::from([500, 502, 503, 504]));
    let four = statuses(FaultSettings { rs_4xx_rate: 1.0, ..FaultSettings::default() });
    assert_eq!(four, BTreeSet::from([400, 422]));
    let legacy = statuses(FaultSettings { rs_error_rate: 1.0, ..FaultSettings::default() });
    assert_eq!(legacy, BTreeSet::from([503]));
}

#[test]
fn ss_requests_do_not_shift_rs_faults() {
    let settings = FaultSettings { rs_error_rate: 0.5, ss_429_rate: 0.5, ..FaultSettings::default() };
    let quiet = Faults::new(3, settings.clone());
    let busy = Faults::new(3, settings);
    ss_plans(&busy, 17);
    assert_eq!(rs_plans(&quiet, 50), rs_plans(&busy, 50));
}

#[test]
fn rates_of_zero_and_one_are_never_and_always() {
    let faults = Faults::new(1, FaultSettings::default());
    assert!(ss_plans(&faults, 100).iter().all(|p| *p == Plan::default()));
    faults.update(|s| set(&mut s.rs_429_rate, 1.0).and(set(&mut s.retry_after_secs, 7))).unwrap();
    let expected = Some((FaultKind::Rs429, Fault::TooManyRequests { retry_after_secs: 7 }));
    assert!(rs_plans(&faults, 100).iter().all(|p| p.fault == expected));
}

#[test]
fn latency_is_the_sides_own_or_the_shared_plus_jitter_within_bounds() {
    let settings = FaultSettings { latency_ms: 10, rs_latency_ms: Some(0), latency_jitter_ms: 5, ..Default::default() };
    let faults = Faults::new(4, settings);
    let ss: BTreeSet<u128> = ss_plans(&faults, 500).iter().map(|p| p.delay.as_millis()).collect();
    let rs: BTreeSet<u128> = rs_plans(&faults, 500).iter().map(|p| p.delay.as_millis()).collect();
    assert_eq!(ss, (10..=15).collect());
    assert_eq!(rs, (0..=5).collect());
}

#[test]
fn every_key_reaches_a_field_named_like_it() {
    let mut settings = FaultSettings::default();
    let json = serde_json::to_value(settings.clone()).unwrap();
    let fields: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, FaultSettings::keys().collect());
    assert!(FaultSettings::keys().all(|key| settings.field(key).is_some()));
    assert!(settings.field("rs_eror_rate").is_none());
}

#[test]
fn every_rate_is_walked_by_its_sides_roll_in_the_order_of_the_table() {
    let settings = FaultSettings::default();
    let walked: Vec<&str> = settings.ss_table(0.0).iter().chain(&settings.rs_table(0.0)).map(|row| row.key).collect();
    let rates: Vec<&str> = SPECS.iter().filter(|spec| spec.kind == Kind::Rate).map(|spec| spec.key).collect();
    assert_eq!(walked, rates);
}

/// The module doc says what a client sees for every setting.
#[test]
fn the_module_doc_names_every_key() {
    let doc: String = include_str!("mod.rs").lines().filter_map(|line| line.strip_prefix("//!")).collect();
    for key in FaultSettings::keys() {
        assert!(doc.contains(&format!("`{key}`")), "the doc of `faults` does not name `{key}`");
    }
}

/// A value of each kind as a flag and as `/control/faults` writes it, and what it sets.
fn sample(kind: Kind) -> (&'static str, &'static str, Typed) {
    match kind {
        Kind::Switch => ("", "1", Typed::Switch(true)),
        Kind::Rate => ("0.25", "0.25", Typed::Rate(0.25)),
        Kind::Millis => ("1500ms", "1500", Typed::Whole(1500)),
        Kind::SideMillis => ("2s", "2000", Typed::Override(Some(2000))),
        Kind::Seconds => ("7", "7", Typed::Whole(7)),
        Kind::Limit => ("12", "12", Typed::Override(Some(12))),
        Kind::SignedSeconds => ("-90", "-90", Typed::Signed(-90)),
    }
}

#[derive(Debug, PartialEq)]
enum Typed {
    Switch(bool),
    Rate(f64),
    Whole(u64),
    Override(Option<u64>),
    Signed(i64),
}

fn value_of(settings: &FaultSettings, key: &str) -> Typed {
    match settings.clone().field(key).expect("a known key") {
        Field::Switch(v) => Typed::Switch(*v),
        Field::Rate(v) => Typed::Rate(*v),
        Field::Whole(v) => Typed::Whole(*v),
        Field::Override(v) => Typed::Override(*v),
        Field::Signed(v) => Typed::Signed(*v),
    }
}

fn serve_flags() -> clap::Command {
    use clap::Args;
    FaultArgs::augment_args(clap::Command::new("serve").no_binary_name(true))
}

fn parse_flags(args: &[&str]) -> FaultSettings {
    use clap::FromArgMatches;
    let matches = serve_flags().try_get_matches_from(args).unwrap();
    FaultArgs::from_arg_matches(&matches).unwrap().0
}

/// The flag is the key in kebab case without its unit: `dribble_delay_ms` is `--dribble-delay`.
fn flag_named_after(key: &str) -> String {
    key.trim_end_matches("_ms").trim_end_matches("_secs").replace('_', "-")
}

#[test]
fn a_capacity_of_zero_is_refused_by_flag_and_by_key_and_a_queue_of_zero_is_not() {
    let error = parse_flags(&["--rs-capacity", "0"]).validate().unwrap_err();
    assert!(error.contains("`rs_capacity` (--rs-capacity) must be at least 1"), "{error}");
    let faults = Faults::new(1, FaultSettings::default());
    assert!(faults.update(|s| s.set("rs_capacity", "0")).is_err());
    assert_eq!(faults.settings().rs_capacity, None);
    let bad = FaultSettings::default().set("rs_queue", "-1").unwrap_err();
    assert_eq!(bad, "`rs_queue` must be a whole number (or `none`, for no limit), not `-1`");
    assert_eq!(parse_flags(&["--rs-capacity", "4", "--rs-queue", "0"]).validate(), Ok(()));
}

#[test]
fn the_ss_clock_skew_is_whole_seconds_either_way_within_a_day() {
    assert_eq!(parse_flags(&["--ss-clock-skew", "-180"]).ss_clock_skew_secs, -180);
    assert_eq!(parse_flags(&["--ss-clock-skew", "86400"]).validate(), Ok(()));
    let far = parse_flags(&["--ss-clock-skew", "-86401"]).validate().unwrap_err();
    assert!(far.contains("`ss_clock_skew_secs` (--ss-clock-skew) must be within a day"), "{far}");
    let faults = Faults::new(1, FaultSettings::default());
    assert!(faults.update(|s| s.set("ss_clock_skew_secs", "90000")).is_err());
    let bad = FaultSettings::default().set("ss_clock_skew_secs", "1.5").unwrap_err();
    assert_eq!(bad, "`ss_clock_skew_secs` must be a whole number, negative or not, not `1.5`");
    assert_eq!(faults.update(|s| s.set("ss_clock_skew_secs", "-180")).unwrap().ss_clock_skew_secs, -180);
}

#[test]
fn no_flag_sets_the_defaults() {
    assert_eq!(parse_flags(&[]), FaultSettings::default());
}

#[test]
fn every_setting_round_trips_through_its_flag_and_its_control_key() {
    for spec in SPECS {
        let (flag_value, control_value, expected) = sample(spec.kind);
        let mut by_key = FaultSettings::default();
        by_key.set(spec.key, control_value).unwrap();
        assert_eq!(value_of(&by_key, spec.key), expected, "{}={control_value}", spec.key);
        assert_ne!(by_key, FaultSettings::default(), "{} changes a setting", spec.key);
        let Some(flag) = spec.flag else {
            assert_eq!(spec.kind, Kind::Switch, "only a switch goes without a flag: {}", spec.key);
            continue;
        };
        assert_eq!(flag, flag_named_after(spec.key), "the flag of {}", spec.key);
        let by_flag = parse_flags(&[&format!("--{flag}"), flag_value]);
        assert_eq!(by_flag, by_key, "--{flag} {flag_value} sets what {}={control_value} does", spec.key);
        let json = serde_json::to_value(&by_key).unwrap();
        assert!(json.get(spec.key).is_some(), "/control/faults answers {}", spec.key);
    }
}

#[test]
fn every_flag_is_documented_in_serve_help() {
    let help = serve_flags().render_long_help().to_string();
    for spec in SPECS {
        let Some(flag) = spec.flag else { continue };
        assert!(help.contains(&format!("--{flag} <")), "--{flag} in:\n{help}");
        assert!(help.contains(spec.help.trim_end_matches('.')), "the help of --{flag} in:\n{help}");
    }
}

/// The README's table of fault settings, made from `SPECS`.
fn readme_table() -> String {
    let mut table = String::from("| `serve` flag | `/control/faults` key | What it does |\n|---|---|---|\n");
    for spec in SPECS {
        let flag = spec.flag.map_or("—".to_string(), |flag| format!("`--{flag}`"));
        table.push_str(&format!("| {flag} | `{}` | {} |\n", spec.key, spec.help));
    }
    table
}

#[test]
fn the_readme_lists_every_fault_setting_as_defined() {
    let readme = include_str!("../../../../README.md");
    let table = readme_table();
    assert!(readme.contains(&table), "README.md's simulator section should hold this table:\n{table}");
}

/// What names the simulator's settings outside it: the scripts, the README, the end-to-end tests.
fn texts_naming_settings() -> Vec<(std::path::PathBuf, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let folders = [root.join("scripts"), root.join("crates/framesync/tests")];
    let mut paths = vec![root.join("README.md")];
    for folder in folders {
        paths.extend(std::fs::read_dir(folder).unwrap().map(|entry| entry.unwrap().path()).filter(|p| p.is_file()));
    }
    paths.into_iter().map(|path| (path.clone(), std::fs::read_to_string(path).unwrap())).collect()
}

/// Words of `text` after `prefix`, made of the characters `allowed` takes.
fn words_after<'a>(text: &'a str, prefix: &str, allowed: fn(char) -> bool) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            &rest[..rest.find(|c| !allowed(c)).unwrap_or(rest.len())]
        })
        .collect()
}

#[test]
fn the_scripts_readme_and_tests_name_only_settings_that_exist() {
    use clap::CommandFactory;
    let cli = crate::cli::Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let flags: BTreeSet<&str> = serve.get_arguments().filter_map(|arg| arg.get_long()).collect();
    let keys: BTreeSet<&str> = FaultSettings::keys().collect();
    let (mut flags_seen, mut keys_seen) = (0, 0);
    for (path, text) in texts_naming_settings() {
        for side in ["--ss-", "--rs-"] {
            for rest in words_after(&text, side, |c| c.is_ascii_alphanumeric() || c == '-') {
                let flag = format!("{}{rest}", &side[2..]);
                assert!(flags.contains(flag.as_str()), "{}: --{flag} is no flag of serve", path.display());
                flags_seen += 1;
            }
        }
        for query in words_after(&text, "/control/faults?", |c| c.is_ascii_alphanumeric() || "_=.&".contains(c)) {
            for key in query.split('&').filter_map(|pair| pair.split_once('=')).map(|(key, _)| key) {
                assert!(keys.contains(key), "{}: `{key}` is no key of /control/faults", path.display());
                keys_seen += 1;
            }
        }
    }
    assert!(flags_seen > 20 && keys_seen > 2, "{flags_seen} flags and {keys_seen} keys found");
}
