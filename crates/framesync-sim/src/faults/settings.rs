//! The fault settings, defined once in [`fault_settings!`]: the typed [`FaultSettings`] (its
//! field names are the `/control/faults` keys and the JSON that endpoint answers), their
//! defaults, and [`SPECS`], the table the `serve` flags, the control endpoint's parser and the
//! README's table are all made from.

use serde::Serialize;

/// How a setting is written, at `/control/faults` and as a `serve` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `1`/`true` or `0`/`false`; no flag, since the servers start up.
    Switch,
    /// A fraction of one side's requests, from 0 to 1, both ways.
    Rate,
    /// Whole milliseconds at `/control/faults` (key `…_ms`); a duration such as `50ms` as a flag.
    Millis,
    /// Like `Millis`, for one side only: unset (`none`) falls back to the shared value.
    SideMillis,
    /// Whole seconds, both ways (key `…_secs`).
    Seconds,
    /// A whole number of requests; unset (`none`) is no limit.
    Limit,
    /// Whole seconds either way of zero, both ways (key `…_secs`): `-180` is 3 minutes behind.
    SignedSeconds,
}

/// One fault setting: its `/control/faults` key, its `serve` flag and what it does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultSpec {
    pub key: &'static str,
    /// The flag without its `--`: the key with `-` for `_` and without its unit suffix.
    pub flag: Option<&'static str>,
    pub kind: Kind,
    pub help: &'static str,
}

/// A setting reached by its `/control/faults` key, to be parsed into.
pub enum Field<'a> {
    Switch(&'a mut bool),
    Rate(&'a mut f64),
    Whole(&'a mut u64),
    /// A per-side value that falls back to the shared one when `None`.
    Override(&'a mut Option<u64>),
    Signed(&'a mut i64),
}

macro_rules! value_type {
    (Switch) => { bool };
    (Rate) => { f64 };
    (Millis) => { u64 };
    (SideMillis) => { Option<u64> };
    (Seconds) => { u64 };
    (Limit) => { Option<u64> };
    (SignedSeconds) => { i64 };
}

/// Defines every setting from one line each: its doc (which is also its help), key, kind,
/// default and flag.
macro_rules! fault_settings {
    ($( #[doc = $help:literal] $key:ident: $kind:ident = $default:expr, flag $flag:expr; )+) => {
        /// Fault injection as it stands; the field names are the `/control/faults` keys.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        pub struct FaultSettings {
            $( #[doc = $help] pub $key: value_type!($kind), )+
        }

        impl Default for FaultSettings {
            /// No faults, no latency.
            fn default() -> FaultSettings {
                FaultSettings { $( $key: $default, )+ }
            }
        }

        /// Every fault setting: the rates of each side in the order one roll walks them, then
        /// latency and the details of some faults.
        pub const SPECS: &[FaultSpec] = &[
            $( FaultSpec { key: stringify!($key), flag: $flag, kind: Kind::$kind, help: $help.trim_ascii() }, )+
        ];

        impl FaultSettings {
            pub fn field(&mut self, key: &str) -> Option<Field<'_>> {
                match key {
                    $( stringify!($key) => Some(Field::from(&mut self.$key)), )+
                    _ => None,
                }
            }
        }
    };
}

fault_settings! {
    /// Every /rs/ connection is reset right after its request head, as if the RS crashed; no roll is drawn.
    rs_down: Switch = false, flag None;
    /// Fraction of SS requests whose connection is reset after the request head: TCP RST, no byte of answer.
    ss_reset_rate: Rate = 0.0, flag Some("ss-reset-rate");
    /// Fraction of SS requests closed without a byte of answer (EOF).
    ss_empty_rate: Rate = 0.0, flag Some("ss-empty-rate");
    /// Fraction of SS requests answered 500.
    ss_error_rate: Rate = 0.0, flag Some("ss-error-rate");
    /// Fraction of SS requests answered 500, 502, 503 or 504.
    ss_5xx_rate: Rate = 0.0, flag Some("ss-5xx-rate");
    /// Fraction of SS requests answered 429 with Retry-After.
    ss_429_rate: Rate = 0.0, flag Some("ss-429-rate");
    /// Fraction of SS answers cut off halfway through the body: full Content-Length, half the body, close.
    ss_truncate_rate: Rate = 0.0, flag Some("ss-truncate-rate");
    /// Fraction of SS answers that are a 200 whose body is not JSON (HTML, or the page cut in half).
    ss_malformed_rate: Rate = 0.0, flag Some("ss-malformed-rate");
    /// Fraction of SS answers whose body is written a few bytes at a time, --dribble-delay apart.
    ss_dribble_rate: Rate = 0.0, flag Some("ss-dribble-rate");
    /// Fraction of RS requests reset after the request head, body unread, nothing stored: TCP RST.
    rs_reset_rate: Rate = 0.0, flag Some("rs-reset-rate");
    /// Fraction of RS requests read whole, not stored, closed without a byte of answer (EOF).
    rs_empty_rate: Rate = 0.0, flag Some("rs-empty-rate");
    /// Fraction of RS requests answered 503, nothing stored.
    rs_error_rate: Rate = 0.0, flag Some("rs-error-rate");
    /// Fraction of RS requests answered 500, 502, 503 or 504, nothing stored.
    rs_5xx_rate: Rate = 0.0, flag Some("rs-5xx-rate");
    /// Fraction of RS requests answered 400 or 422, nothing stored.
    rs_4xx_rate: Rate = 0.0, flag Some("rs-4xx-rate");
    /// Fraction of RS requests answered 429 with Retry-After, nothing stored.
    rs_429_rate: Rate = 0.0, flag Some("rs-429-rate");
    /// Fraction of RS requests stored, then closed without an answer: the lost response.
    rs_drop_response_rate: Rate = 0.0, flag Some("rs-drop-response-rate");
    /// Slept before every SS and RS answer, faulty or not (but not before a reset).
    latency_ms: Millis = 0, flag Some("latency");
    /// The SS's latency, instead of --latency.
    ss_latency_ms: SideMillis = None, flag Some("ss-latency");
    /// The RS's latency, instead of --latency.
    rs_latency_ms: SideMillis = None, flag Some("rs-latency");
    /// Up to this much more latency, drawn per request (uniform, from the seed).
    latency_jitter_ms: Millis = 0, flag Some("latency-jitter");
    /// Retry-After of injected 429s, SS and RS, in seconds.
    retry_after_secs: Seconds = 1, flag Some("retry-after");
    /// The pause between the pieces of a dribbled body.
    dribble_delay_ms: Millis = 50, flag Some("dribble-delay");
    /// Every RS lookup answers present: /rs/ingest/{uid} 200, /rs/query a count of 1 and every UID asked listed.
    rs_lookup_lies: Switch = false, flag None;
    /// Every /rs/query answer is a 200 without its data: {"rows": 0}.
    rs_lookup_unreadable: Switch = false, flag None;
    /// Requests the RS works on at once, each holding its slot for its whole latency; more wait in its queue. Unlimited unless set.
    rs_capacity: Limit = None, flag Some("rs-capacity");
    /// Requests that may wait beyond --rs-capacity; past it the RS answers 503 at once, with Retry-After: 1. Unbounded unless set.
    rs_queue: Limit = None, flag Some("rs-queue");
    /// The SS's clock, in seconds off the real one (negative: behind, at most a day either way): its Date header, the records it has and what /control/check expects go by it.
    ss_clock_skew_secs: SignedSeconds = 0, flag Some("ss-clock-skew");
}

impl FaultSettings {
    /// Every key `/control/faults` knows.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        SPECS.iter().map(|spec| spec.key)
    }

    /// Sets the setting `key` from its `/control/faults` text. A typo in a key must fail
    /// loudly, not leave the fault silently unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let Some(field) = self.field(key) else {
            return Err(format!(
                "unknown fault setting `{key}`; known: {}",
                Self::keys().collect::<Vec<_>>().join(", ")
            ));
        };
        match field {
            Field::Switch(switch) => *switch = parse_switch(key, value)?,
            Field::Rate(rate) => *rate = parse_rate(key, value)?,
            Field::Whole(number) => *number = parse_whole(key, value, "")?,
            Field::Override(own) if value == "none" => *own = None,
            Field::Override(own) => *own = Some(parse_whole(key, value, none_means(key))?),
            Field::Signed(number) => *number = parse_signed(key, value)?,
        }
        Ok(())
    }
}

impl<'a> From<&'a mut bool> for Field<'a> {
    fn from(value: &'a mut bool) -> Field<'a> {
        Field::Switch(value)
    }
}

impl<'a> From<&'a mut f64> for Field<'a> {
    fn from(value: &'a mut f64) -> Field<'a> {
        Field::Rate(value)
    }
}

impl<'a> From<&'a mut u64> for Field<'a> {
    fn from(value: &'a mut u64) -> Field<'a> {
        Field::Whole(value)
    }
}

impl<'a> From<&'a mut i64> for Field<'a> {
    fn from(value: &'a mut i64) -> Field<'a> {
        Field::Signed(value)
    }
}

impl<'a> From<&'a mut Option<u64>> for Field<'a> {
    fn from(value: &'a mut Option<u64>) -> Field<'a> {
        Field::Override(value)
    }
}

/// What `none` stands for, in the error for a value that is neither it nor a number.
fn none_means(key: &str) -> &'static str {
    match SPECS.iter().find(|spec| spec.key == key).map(|spec| spec.kind) {
        Some(Kind::Limit) => " (or `none`, for no limit)",
        _ => " (or `none`, for the shared value)",
    }
}

fn parse_switch(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("`{key}` must be 0 or 1, not `{value}`")),
    }
}

fn parse_rate(key: &str, value: &str) -> Result<f64, String> {
    let rate: Option<f64> = value.parse().ok().filter(|r| (0.0..=1.0).contains(r));
    rate.ok_or_else(|| format!("`{key}` must be a number from 0 to 1, not `{value}`"))
}

fn parse_whole(key: &str, value: &str, or_none: &str) -> Result<u64, String> {
    value.parse().map_err(|_| format!("`{key}` must be a whole number{or_none}, not `{value}`"))
}

fn parse_signed(key: &str, value: &str) -> Result<i64, String> {
    value.parse().map_err(|_| format!("`{key}` must be a whole number, negative or not, not `{value}`"))
}
