//! The `serve` flags of the fault settings, made from [`SPECS`]: one flag per setting that has
//! one, its help the setting's, its default the one of [`FaultSettings::default`].

use std::time::Duration;

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::settings::{FaultSettings, FaultSpec, Field, Kind, SPECS};

/// The fault flags of `serve`, parsed into the settings a simulator starts with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultArgs(pub FaultSettings);

impl Args for FaultArgs {
    fn augment_args(command: Command) -> Command {
        let defaults = FaultSettings::default();
        let flags = SPECS.iter().filter_map(|spec| Some(flag(spec, spec.flag?, &defaults)));
        command.next_help_heading("Fault injection").args(flags)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for FaultArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = FaultArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for spec in SPECS.iter().filter(|spec| spec.flag.is_some()) {
            let field = self.0.field(spec.key).expect("every spec names a field");
            match field {
                Field::Rate(rate) => set(rate, matches.get_one(spec.key).copied()),
                Field::Whole(number) => set(number, matches.get_one(spec.key).copied()),
                Field::Override(own) => set(own, matches.get_one(spec.key).copied().map(Some)),
                Field::Signed(number) => set(number, matches.get_one(spec.key).copied()),
                Field::Switch(_) => unreachable!("a switch has no flag"),
            }
        }
        Ok(())
    }
}

/// A flag left out keeps the default.
fn set<T>(field: &mut T, given: Option<T>) {
    if let Some(value) = given {
        *field = value;
    }
}

fn flag(spec: &FaultSpec, name: &'static str, defaults: &FaultSettings) -> Arg {
    let (value_name, parser): (&str, ValueParser) = match spec.kind {
        Kind::Rate => ("RATE", ValueParser::new(fraction)),
        Kind::Millis | Kind::SideMillis => ("DURATION", ValueParser::new(millis)),
        Kind::Seconds => ("SECONDS", clap::value_parser!(u64).into()),
        Kind::Limit => ("N", clap::value_parser!(u64).into()),
        Kind::SignedSeconds => ("SECONDS", clap::value_parser!(i64).into()),
        Kind::Switch => unreachable!("a switch has no flag"),
    };
    // One sentence of help, without its period, like clap's own from a doc comment.
    let help = spec.help.strip_suffix('.').unwrap_or(spec.help);
    let help = match default_text(spec, defaults) {
        Some(default) => format!("{help} [default: {default}]"),
        None => help.to_string(),
    };
    let arg = Arg::new(spec.key).long(name).value_name(value_name).value_parser(parser).action(ArgAction::Set);
    arg.allow_negative_numbers(spec.kind == Kind::SignedSeconds).help(help)
}

/// The default as the flag would be written, or `None` for a setting unset by default.
fn default_text(spec: &FaultSpec, defaults: &FaultSettings) -> Option<String> {
    match (defaults.clone().field(spec.key)?, spec.kind) {
        (Field::Rate(rate), _) => Some(rate.to_string()),
        (Field::Whole(ms), Kind::Millis) => Some(humantime::format_duration(Duration::from_millis(*ms)).to_string()),
        (Field::Whole(number), _) => Some(number.to_string()),
        (Field::Override(own), Kind::Limit) => own.map(|n| n.to_string()),
        (Field::Override(own), _) => own.map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string()),
        (Field::Switch(switch), _) => Some(switch.to_string()),
        (Field::Signed(number), _) => Some(number.to_string()),
    }
}

/// A fraction from 0 to 1, such as a rate.
pub fn fraction(text: &str) -> Result<f64, String> {
    let value: Option<f64> = text.parse().ok().filter(|f| (0.0..=1.0).contains(f));
    value.ok_or_else(|| format!("`{text}` is not a number from 0 to 1"))
}

/// A duration such as `50ms` or `2s`, in whole milliseconds.
fn millis(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))
}
