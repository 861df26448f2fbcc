//! The command line: `serve` runs the servers until killed; `check` asks a running simulator
//! whether the RS database holds exactly what the SS serves for a time range (exit 0 if so, 1 if
//! not).

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
use crate::auth::{AuthArgs, Guard};
use crate::capacity::Capacity;
use crate::control::Stats;
use crate::data::{Generator, NUMERIC_STRIDE, UidStyle};
use crate::faults::{FaultArgs, Faults, fraction};
use crate::rs::Rs;
use crate::rs::answer::RsAnswer;
use crate::ss::Ss;
use crate::{data, http};

#[derive(Parser)]
#[command(name = "framesync-sim", version, about = "Simulated SS and RS for testing framesync")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the SS (/ss/events), the RS (/rs/ingest, /rs/query) and /control/* until killed.
    ///
    /// Fault injection: each rate is the fraction of one side's requests that meet that fault,
    /// decided from --seed and the side's request count. A request meets at most one fault (one
    /// roll walks the rates in the order listed), so a side's rates must add up to at most 1.
    /// Latency adds to any fault but a reset. /control/stats counts every injected fault.
    ///
    /// --rs-capacity and --rs-queue make the RS a server of bounded means: that many requests in
    /// service at once, each holding its slot for its latency (so at most capacity / latency
    /// requests a second), that many more waiting their turn, and a 503 with Retry-After: 1 at
    /// once past both. /control/stats counts them under rs_capacity.
    ///
    /// Every fault setting can be changed at run time with `POST /control/faults?KEY=VALUE&...`,
    /// KEY being the flag's name in snake_case (`--ss-5xx-rate` is `ss_5xx_rate`), with `_ms`
    /// after a duration, then in whole milliseconds (`--dribble-delay` is `dribble_delay_ms`;
    /// `ss_latency_ms=none` falls back to `latency_ms`) and `_secs` after seconds
    /// (`retry_after_secs`); `rs_down=1` resets every RS connection until `rs_down=0`;
    /// `rs_lookup_lies=1` and `rs_lookup_unreadable=1` make the RS's lookups misbehave.
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
    /// UIDs: "ev-M-I", the JSON integer M*100000+I, non-ASCII "ünï-M-I-✓", or hostile
    /// "ev-M-I-'\"\\%2C,<newline>;" (quotes, a backslash, `%`, a comma, a newline).
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
    /// How the RS answers: plain (201, a bad record refuses the request with 400), bulk (200
    /// with a result per record, Elasticsearch's `_bulk` shape: bad records 400, some 429 by
    /// --rs-item-429-rate, the rest stored), or clickhouse (a bad record fails the request
    /// with 500 and a "Code: 27" text body, nothing stored). Every mode reads JSON, NDJSON
    /// (Content-Type: application/x-ndjson, action lines skipped) and gzip bodies.
    #[arg(long, value_enum, default_value_t = RsAnswer::Plain)]
    rs_answer: RsAnswer,
    /// With --rs-answer bulk: the fraction of readable records answered 429 and not stored.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    rs_item_429_rate: f64,
    /// JSON pointer to a record's UID in what the RS receives.
    #[arg(long, default_value = "/id", value_parser = json_pointer)]
    rs_uid_pointer: String,
    #[command(flatten)]
    faults: FaultArgs,
    #[command(flatten)]
    auth: AuthArgs,
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

/// Runs one command; the exit code, or the error that stopped it.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
    }
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
    let faults = args.faults.0.clone();
    faults.validate_limits().map_err(anyhow::Error::msg)?;
    faults.validate_rates().map_err(|e| anyhow::anyhow!("{e} (the --ss-*-rate and --rs-*-rate flags)"))?;
    Ok(App {
        ss: Ss::new(generator.clone(), args.page_size as usize),
        generator,
        rs: Rs::open(&args.rs_db, &args.rs_uid_pointer, !args.rs_ignore_keys)?.answering(
            args.rs_answer,
            args.rs_item_429_rate,
            args.seed,
        ),
        faults: Faults::new(args.seed, faults),
        capacity: Capacity::default(),
        stats: Stats::new(),
        guard: Guard::new(args.auth.clone()),
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

fn json_pointer(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!("`{text}` is not a JSON pointer: it must start with `/` (or be empty)"))
    }
}
