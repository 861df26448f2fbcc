//! `framesync-sim`: a sending server (SS) with deterministic data and a receiving server (RS)
//! with its own SQLite database, on one port, with fault injection on both sides (`faults` says
//! what a client sees for each fault; `serve --help` lists the flags and `/control/faults` keys).
//! The demo, the integration and crash tests and the benchmarks run it as a real process.
//!
//! `serve` runs the servers until killed; `check` asks a running simulator whether the RS
//! database holds exactly what the SS serves for a time range (exit 0 if so, 1 if not).

mod app;
mod control;
mod data;
mod faults;
mod http;
mod rs;
mod ss;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::app::App;
use crate::control::Stats;
use crate::data::{Generator, NUMERIC_STRIDE, UidStyle};
use crate::faults::{FaultSettings, Faults};
use crate::rs::Rs;
use crate::ss::Ss;

#[derive(Parser)]
#[command(name = "framesync-sim", version, about = "Simulated SS and RS for testing framesync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the SS (/ss/events), the RS (/rs/ingest) and /control/* until killed.
    ///
    /// Fault injection: each rate is the fraction of one side's requests that meet that fault,
    /// decided from --seed and the side's request count. A request meets at most one fault (one
    /// roll walks the rates in the order listed), so a side's rates must add up to at most 1.
    /// Latency adds to any fault but a reset. /control/stats counts every injected fault.
    ///
    /// Every fault setting can be changed at run time with `POST /control/faults?KEY=VALUE&...`,
    /// KEY being the flag's name in snake_case (`--ss-5xx-rate` is `ss_5xx_rate`), except:
    /// durations are whole milliseconds (`latency_ms`, `ss_latency_ms`, `rs_latency_ms`,
    /// `latency_jitter_ms`, `dribble_delay_ms`; `ss_latency_ms=none` falls back to `latency_ms`),
    /// `retry_after_secs` is seconds, and `rs_down=1` resets every RS connection until `rs_down=0`.
    Serve(Box<ServeArgs>),
    /// Ask a running simulator whether the RS holds exactly the SS's records of a range.
    Check(CheckArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Also write the bound HOST:PORT to this file (atomically).
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
    /// Seed of the generated records and of the fault decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records generated per epoch minute (below 100000, the numeric UID stride).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..NUMERIC_STRIDE))]
    records_per_minute: u32,
    /// Maximum records per SS page.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
    /// Fraction of records that become visible at the SS after their timestamp.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    late_fraction: f64,
    /// How late a late record can be.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_lateness: Duration,
    /// UIDs: "ev-M-I", the JSON integer M*100000+I, or non-ASCII "ünï-M-I-✓".
    #[arg(long, value_enum, default_value_t = UidStyle::String)]
    uid_style: UidStyle,
    /// Fraction of records carrying "valid": false, which the RS rejects with 400.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    poison_fraction: f64,
    /// The RS's SQLite database (created if absent, kept across restarts).
    #[arg(long, value_name = "PATH")]
    rs_db: PathBuf,
    /// The RS ignores Idempotency-Key and stores every POST.
    #[arg(long)]
    rs_ignore_keys: bool,
    /// JSON pointer to a record's UID in what the RS receives.
    #[arg(long, default_value = "/id", value_parser = json_pointer)]
    rs_uid_pointer: String,
    #[command(flatten)]
    faults: FaultArgs,
}

/// The flags of `FaultSettings`, in the order a roll walks the rates; explained in `serve --help`.
#[derive(Args)]
#[command(next_help_heading = "Fault injection")]
struct FaultArgs {
    /// Fraction of SS requests whose connection is reset after the request head: TCP RST, no byte of answer.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_reset_rate: f64,
    /// Fraction of SS requests closed without a byte of answer (EOF).
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_empty_rate: f64,
    /// Fraction of SS requests answered 500.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_error_rate: f64,
    /// Fraction of SS requests answered 500, 502, 503 or 504.
    #[arg(long = "ss-5xx-rate", default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_5xx_rate: f64,
    /// Fraction of SS requests answered 429 with Retry-After.
    #[arg(long = "ss-429-rate", default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_429_rate: f64,
    /// Fraction of SS answers cut off halfway through the body: full Content-Length, half the body, close.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_truncate_rate: f64,
    /// Fraction of SS answers that are a 200 whose body is not JSON (HTML, or the page cut in half).
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_malformed_rate: f64,
    /// Fraction of SS answers whose body is written a few bytes at a time, --dribble-delay apart.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    ss_dribble_rate: f64,
    /// Fraction of RS requests reset after the request head, body unread, nothing stored: TCP RST.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_reset_rate: f64,
    /// Fraction of RS requests read whole, not stored, closed without a byte of answer (EOF).
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_empty_rate: f64,
    /// Fraction of RS requests answered 503, nothing stored.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_error_rate: f64,
    /// Fraction of RS requests answered 500, 502, 503 or 504, nothing stored.
    #[arg(long = "rs-5xx-rate", default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_5xx_rate: f64,
    /// Fraction of RS requests answered 400 or 422, nothing stored.
    #[arg(long = "rs-4xx-rate", default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_4xx_rate: f64,
    /// Fraction of RS requests answered 429 with Retry-After, nothing stored.
    #[arg(long = "rs-429-rate", default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_429_rate: f64,
    /// Fraction of RS requests stored, then closed without an answer: the lost response.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", value_parser = fraction)]
    rs_drop_response_rate: f64,
    /// Slept before every SS and RS answer, faulty or not (but not before a reset).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The SS's latency, instead of --latency.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ss_latency: Option<Duration>,
    /// The RS's latency, instead of --latency.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    rs_latency: Option<Duration>,
    /// Up to this much more latency, drawn per request (uniform, from the seed).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    latency_jitter: Duration,
    /// Retry-After of injected 429s, SS and RS, in seconds.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    retry_after: u64,
    /// The pause between the pieces of a dribbled body.
    #[arg(long, default_value = "50ms", value_name = "DURATION", value_parser = humantime::parse_duration)]
    dribble_delay: Duration,
}

impl FaultArgs {
    fn settings(&self) -> Result<FaultSettings> {
        let settings = FaultSettings {
            rs_down: false,
            ss_reset_rate: self.ss_reset_rate,
            ss_empty_rate: self.ss_empty_rate,
            ss_error_rate: self.ss_error_rate,
            ss_5xx_rate: self.ss_5xx_rate,
            ss_429_rate: self.ss_429_rate,
            ss_truncate_rate: self.ss_truncate_rate,
            ss_malformed_rate: self.ss_malformed_rate,
            ss_dribble_rate: self.ss_dribble_rate,
            rs_reset_rate: self.rs_reset_rate,
            rs_empty_rate: self.rs_empty_rate,
            rs_error_rate: self.rs_error_rate,
            rs_5xx_rate: self.rs_5xx_rate,
            rs_4xx_rate: self.rs_4xx_rate,
            rs_429_rate: self.rs_429_rate,
            rs_drop_response_rate: self.rs_drop_response_rate,
            latency_ms: millis(self.latency, "--latency")?,
            ss_latency_ms: self.ss_latency.map(|d| millis(d, "--ss-latency")).transpose()?,
            rs_latency_ms: self.rs_latency.map(|d| millis(d, "--rs-latency")).transpose()?,
            latency_jitter_ms: millis(self.latency_jitter, "--latency-jitter")?,
            retry_after_secs: self.retry_after,
            dribble_delay_ms: millis(self.dribble_delay, "--dribble-delay")?,
        };
        settings.validate().map_err(|e| anyhow::anyhow!("{e} (the --ss-*-rate and --rs-*-rate flags)"))?;
        Ok(settings)
    }
}

fn millis(duration: Duration, flag: &str) -> Result<u64> {
    u64::try_from(duration.as_millis()).with_context(|| format!("{flag} is too long"))
}

#[derive(Args)]
struct CheckArgs {
    /// The simulator's HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Start of the range (inclusive): RFC 3339 or epoch seconds.
    #[arg(long)]
    from: String,
    /// End of the range (exclusive): RFC 3339 or epoch seconds.
    #[arg(long)]
    to: String,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("framesync-sim: {e:#}");
        ExitCode::from(2)
    })
}

fn serve(args: &ServeArgs) -> Result<ExitCode> {
    let app = Arc::new(build_app(args)?);
    let listener = TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    announce(listener.local_addr()?, args.addr_file.as_deref())?;
    http::serve(listener, app)
}

fn build_app(args: &ServeArgs) -> Result<App> {
    let generator = Generator {
        seed: args.seed,
        per_minute: args.records_per_minute,
        late_fraction: args.late_fraction,
        max_lateness_ms: millis(args.max_lateness, "--max-lateness")?,
        poison_fraction: args.poison_fraction,
        uid_style: args.uid_style,
    };
    let faults = args.faults.settings()?;
    Ok(App {
        ss: Ss::new(generator.clone(), args.page_size as usize),
        generator,
        rs: Rs::open(&args.rs_db, &args.rs_uid_pointer, !args.rs_ignore_keys)?,
        faults: Faults::new(args.seed, faults),
        stats: Stats::new(),
    })
}

/// Tells whoever started us where we listen: one line on stdout, and optionally a file.
fn announce(addr: SocketAddr, addr_file: Option<&Path>) -> Result<()> {
    if let Some(path) = addr_file {
        write_atomically(path, &addr.to_string())?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush().context("writing the listening line to stdout")
}

/// Temp file in the same directory, then rename: a reader never sees a partial address.
fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp.{}", std::process::id()));
    std::fs::write(&temp, contents).with_context(|| format!("writing {}", Path::new(&temp).display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming into {}", path.display()))
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    for (name, value) in [("--from", &args.from), ("--to", &args.to)] {
        data::parse_instant(value).map_err(anyhow::Error::msg).with_context(|| name.to_string())?;
    }
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let target = format!("/control/check?from={}&to={}", encode(&args.from), encode(&args.to));
    let (status, body) = http::get(&args.addr, &target).with_context(|| format!("GET {target} from {}", args.addr))?;
    let body = String::from_utf8_lossy(&body);
    if status != 200 {
        bail!("the simulator at {} answered {status}: {body}", args.addr);
    }
    let report: Value = serde_json::from_str(&body).context("the check report is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let clean = ["missing", "extra", "duplicates"].iter().all(|k| report[k].as_u64() == Some(0));
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn fraction(text: &str) -> Result<f64, String> {
    let value: Option<f64> = text.parse().ok().filter(|f| (0.0..=1.0).contains(f));
    value.ok_or_else(|| format!("`{text}` is not a number from 0 to 1"))
}

fn json_pointer(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!("`{text}` is not a JSON pointer: it must start with `/` (or be empty)"))
    }
}
