//! The in-process half of `scripts/bench`: the ledger benchmark (a whole run's work through
//! `Job`, with a generated SS and an RS that acknowledges everything at once), and the fixtures
//! the script needs (a ledger holding a delivered year; static SS pages for one huge frame).
//!
//! ```text
//! cargo run --release --example bench -- ledger FRAMES RECORDS_PER_FRAME [normal|full]
//! cargo run --release --example bench -- year-ledger PATH NOW
//! cargo run --release --example bench -- pages DIR PAGES RECORDS_PER_PAGE
//! cargo run --release --example bench -- empty-ledger PATH
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use framesync::config::Config;
use framesync::delivery::Key;
use framesync::frames::{Epoch, Frame};
use framesync::job::{Clock, Job};
use framesync::ledger::{Ledger, Synchronous};
use framesync::model::StagedRecord;
use framesync::plan::{Plan, Step};
use framesync::sink::{Outgoing, Sink, Verdict};
use framesync::source::{Page, Pages, Source};

const MINUTE: Epoch = 60;
/// 2026-11-01T00:00:00Z: where the ledger benchmark's frames start.
const T0: Epoch = 1_793_491_200;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> Result<i64> {
        let text = args.get(i).with_context(|| format!("argument {i} is missing"))?;
        text.parse().with_context(|| format!("argument {i}: {text:?} is not a number"))
    };
    match args.first().map(String::as_str) {
        Some("ledger") => {
            ledger(number(1)? as usize, number(2)? as usize, args.get(3).map_or("normal", String::as_str))
        }
        Some("year-ledger") => year_ledger(Path::new(args.get(1).context("PATH is missing")?), number(2)?),
        Some("empty-ledger") => {
            Ledger::open(Path::new(args.get(1).context("PATH is missing")?), Synchronous::Normal).map(drop)
        }
        Some("pages") => pages(Path::new(args.get(1).context("DIR is missing")?), number(2)?, number(3)?),
        _ => bail!(
            "usage: bench ledger FRAMES PER_FRAME [normal|full] | year-ledger PATH NOW | pages DIR PAGES PER_PAGE | empty-ledger PATH"
        ),
    }
}

/// An SS handing out records made up before the clock starts: `per_frame` records of about
/// 150 bytes (like the simulator's) per frame, so the benchmark times the ledger, not the SS.
struct Generated {
    frames: RefCell<HashMap<Epoch, Vec<StagedRecord>>>,
}

impl Generated {
    fn new(starts: impl Iterator<Item = Epoch>, per_frame: usize) -> Self {
        let frame = |start: Epoch| {
            (0..per_frame)
                .map(|i| {
                    let uid = format!("ev-{}-{i}", start / MINUTE);
                    let body = format!(
                        r#"{{"id":"{uid}","created_at":"2026-11-01T00:00:00.000Z","valid":true,"payload":{{"amount":{},"note":"note {i} of a generated frame"}}}}"#,
                        i * 7 % 10_000
                    );
                    StagedRecord { uid, ts_ms: Some(start * 1000 + i as i64), body }
                })
                .collect()
        };
        Self { frames: RefCell::new(starts.map(|start| (start, frame(start))).collect()) }
    }
}

impl Source for Generated {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        let records = self.frames.borrow_mut().remove(&frame.start).unwrap_or_default();
        Box::new(std::iter::once(Ok(Page { records, ..Page::default() })))
    }
}

/// An RS that acknowledges every record at once: what is left is the ledger's work.
struct Null;

impl Sink for Null {
    fn batch_size(&self) -> usize {
        1
    }
    fn send(&self, _records: &[Outgoing], _key: &Key) -> Verdict {
        Verdict::Acknowledged
    }
    fn has_lookup(&self) -> bool {
        false
    }
    fn lookup(&self, _uid: &str) -> Result<bool, String> {
        Ok(false)
    }
}

struct Fixed(Epoch);

impl Clock for Fixed {
    fn now(&self) -> Epoch {
        self.0
    }
}

/// Pulls, stages, pushes (one acknowledgement per record, as in record mode) and completes
/// `frames` frames of `per_frame` records on a fresh ledger with `run.synchronous` set to
/// `synchronous`, and prints records per second.
fn ledger(frames: usize, per_frame: usize, synchronous: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        r#"ledger = "ledger.db"
[frames]
start = "2026-11-01T00:00:00Z"
delay = "1m"
[source]
url = "http://127.0.0.1:9/ss?from={{from}}&to={{to}}"
uid = "/id"
[sink]
url = "http://127.0.0.1:9/rs"
[run]
max_frames = {frames}
synchronous = "{synchronous}"
"#
    );
    let config = Config::parse(&text, dir.path(), &|_| None)?;
    let mut ledger = Ledger::open(&config.ledger, config.run.sync)?;
    let steps: Vec<Step> = (0..frames as i64).map(|i| Step::Pull(T0 + i * MINUTE)).collect();
    let horizon = T0 + frames as i64 * MINUTE;
    let plan = Plan { steps, horizon, deferred: 0, outside_window: false };
    let clock = Fixed(horizon + 2 * MINUTE);
    let source = Generated::new(plan.steps.iter().map(|s| s.start()), per_frame);
    let started = Instant::now();
    let outcome = Job::new(&config, &mut ledger, &source, &Null, &clock).without_time_limit().execute(&plan, true)?;
    let seconds = started.elapsed().as_secs_f64();
    let pushed = outcome.figures.records_pushed;
    if pushed != (frames * per_frame) as i64 || outcome.figures.frames_delivered != frames as i64 {
        bail!("expected {} records in {frames} delivered frames, got {:?}", frames * per_frame, outcome.figures);
    }
    println!("records={pushed} seconds={seconds:.3} rate={:.0}", pushed as f64 / seconds);
    Ok(())
}

/// A ledger holding a delivered year of 1-minute frames up to `now`: 525,600 frame rows, one
/// delivered UID each, and one delivered span that reaches two days past `now` (so no frame
/// becomes missing while the benchmark runs).
fn year_ledger(path: &Path, now: Epoch) -> Result<()> {
    let end = now / MINUTE * MINUTE;
    let start = end - 365 * 24 * 60 * MINUTE;
    let started = Instant::now();
    let mut ledger = Ledger::open(path, Synchronous::Normal)?;
    ledger.sync_pipeline(MINUTE, start, 2 * MINUTE, now)?;
    let conn = rusqlite::Connection::open(ledger.path())?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         WITH RECURSIVE f(s) AS (SELECT {start} UNION ALL SELECT s + 60 FROM f WHERE s + 60 < {end})
         INSERT INTO frames (start, end, state, records, pushed, pulled_at, delivered_at, updated_at)
         SELECT s, s + 60, 'delivered', 1, 1, s + 120, s + 125, s + 125 FROM f;
         INSERT INTO delivered (uid, frame, at) SELECT 'ev-' || (start / 60) || '-0', start, delivered_at FROM frames;
         INSERT INTO delivered_spans (start, end) VALUES ({start}, {end} + 2 * 86400);
         COMMIT;"
    ))?;
    let frames: i64 = conn.query_row("SELECT COUNT(*) FROM frames", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    eprintln!("year ledger: {frames} delivered frames in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Static SS pages for one frame: `p0.json` … each with `per_page` records and a `next` path
/// to the following page (served by nginx under `/huge/`).
fn pages(dir: &Path, pages: i64, per_page: i64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    for p in 0..pages {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("p{p}.json")))?);
        out.write_all(b"{\"items\":[")?;
        for i in 0..per_page {
            let sep = if i == 0 { "" } else { "," };
            write!(
                out,
                r#"{sep}{{"id":"hf-{p}-{i}","created_at":"2026-11-01T00:00:00.000Z","valid":true,"payload":{{"amount":{},"note":"record {i} of page {p}"}}}}"#,
                (p * per_page + i) % 10_000
            )?;
        }
        match p + 1 < pages {
            true => write!(out, r#"],"next":"/huge/p{}.json"}}"#, p + 1)?,
            false => out.write_all(b"]}")?,
        }
        out.flush()?;
    }
    eprintln!("{pages} pages of {per_page} records in {:?}", Duration::from_secs_f64(started.elapsed().as_secs_f64()));
    Ok(())
}
