//! A seed's world, drawn once: framesync's config (rendered as the TOML an operator would
//! write) and the semantics of the model SS and RS, the machine's clock and the schedule. Every
//! later draw (faults, kills, periods) comes from the rates chosen here.

use std::path::Path;

use super::rng::Rng;
use super::shapes::Shapes;

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
pub const YEAR: i64 = 365 * DAY;

/// The host names of the two servers (resolved by the simulation, never by DNS).
pub const SS_HOST: &str = "ss.sim";
pub const RS_HOST: &str = "rs.sim";

/// The longest Retry-After either model sends, in seconds.
pub const MAX_RETRY_AFTER: i64 = 120;
/// How far this machine's clock drifts from true time at most, outside its jumps, in ms. The
/// SS's latency promise keeps this much clear of `delay`, so skew alone never loses a record.
pub const MAX_DRIFT_MS: i64 = 3_000;
/// The SS's clock drifts as much, outside its own jumps.
pub const SS_MAX_DRIFT_MS: i64 = 3_000;
/// The request timeout both clients are configured with: a timeout fault costs this long.
pub const TIMEOUT_SECS: i64 = 5;

/// How the SS reads a frame's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// `?from={from}&to={to}`: stamps in [from, to).
    Exclusive,
    /// `?from={from}&last={last}`: stamps in [from, last], `last` read at the precision it is written in.
    Inclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc3339,
    EpochS,
    EpochMs,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Rfc3339 => "rfc3339",
            Format::EpochS => "epoch_s",
            Format::EpochMs => "epoch_ms",
        }
    }
}

/// How the SS splits an answer into pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// One page, always.
    None,
    /// An opaque cursor in the body, sent back in `cursor_param`.
    Cursor,
    /// A next-page path on the same server.
    NextPath,
    /// A next-page absolute URL on the same origin.
    NextUrl,
    /// A `Link: <...>; rel="next"` header.
    Link,
    /// `offset` and `limit` parameters framesync counts.
    Offset,
    /// `page` and `limit` parameters framesync counts.
    Page,
}

/// What the RS does with an Idempotency-Key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A key seen before replays its stored answer without storing.
    Honors,
    /// As `Honors`, but a known key with another body answers 422.
    Strict,
    /// Every POST is stored.
    Ignores,
}

/// The RS's lookup URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    None,
    /// 200 when stored, 404 when not.
    Truthful,
    /// Truthful, except during maintenance: 200 with an HTML page for every UID.
    LiesInMaintenance,
    /// 200 with an HTML page for every UID, always.
    LiesAlways,
}

/// Periods of the RS (they come and go during the fault phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// Connection refused, or 503 from the load balancer in front of it.
    Down,
    /// POST answers 302 to /login, whose GET answers 200 text/html.
    Redirect,
    /// 401 for everything.
    ExpiredToken,
    /// 404 for everything.
    DroppedTable,
    /// POST 503; lookups 200 HTML where the lookup lies, 503 where it does not.
    Maintenance,
    /// 429 with Retry-After.
    RateLimited,
    /// The SS refuses connections.
    SsDown,
}

impl Period {
    pub const ALL: [Period; 7] = [
        Period::Down,
        Period::Redirect,
        Period::ExpiredToken,
        Period::DroppedTable,
        Period::Maintenance,
        Period::RateLimited,
        Period::SsDown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Down => "rs-down",
            Period::Redirect => "rs-redirect",
            Period::ExpiredToken => "rs-expired-token",
            Period::DroppedTable => "rs-dropped-table",
            Period::Maintenance => "rs-maintenance",
            Period::RateLimited => "rs-rate-limited",
            Period::SsDown => "ss-down",
        }
    }
}

/// The cron lines: one `run`, or `pull` then `push` every minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cron {
    Run,
    PullThenPush,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    // ---- framesync's config
    pub size: i64,
    pub delay: i64,
    pub recheck: Vec<i64>,
    pub max_frames: usize,
    pub max_seconds: i64,
    pub retry_base: i64,
    pub retry_max: i64,
    pub fresh: i64,
    pub ack_group: usize,
    pub ack_group_time_ms: i64,
    pub retries: u32,
    /// Batch mode with this batch size; record mode when None.
    pub batch: Option<usize>,
    /// `sink.concurrency`: requests in flight at once (a wave).
    pub concurrency: usize,
    /// `sink.ordered`: one request in flight, whatever the concurrency.
    pub ordered: bool,
    pub retain: i64,
    /// UTC minutes after midnight.
    pub backfill_window: Option<(u32, u32)>,
    /// A `sink.map` whose `amount` field some records lack.
    pub map: bool,
    pub cron: Cron,
    // ---- the SS
    pub bounds: Bounds,
    pub format: Format,
    pub whole_seconds: bool,
    pub paging: Paging,
    pub page_size: (i64, i64),
    /// Pages are computed from what is visible at each page's request (else fixed at the first).
    pub live_pages: bool,
    /// The records are at `/items` (else the body is the array, one page only).
    pub items_pointer: bool,
    pub date_header: bool,
    pub records_per_frame: i64,
    pub late_fraction: f64,
    /// The SS answers 400 for frames older than this (seconds), for good.
    pub history: Option<i64>,
    pub ss_fault_rate: f64,
    pub ss_clock_jumps: bool,
    /// The shapes of both servers beyond the first dialect (`shapes.rs`).
    pub shapes: Shapes,
    // ---- the RS
    pub keys: Keys,
    pub lookup: Lookup,
    pub poison_rate: f64,
    /// 400 or 422: how the RS refuses a bad record.
    pub poison_status: u16,
    pub crash_rate: f64,
    /// Batches larger than this answer 413.
    pub capacity: Option<usize>,
    pub rs_fault_rate: f64,
    pub lost_answer_rate: f64,
    pub in_flight_rate: f64,
    pub periods: Vec<Period>,
    pub period_rate: f64,
    // ---- this machine
    pub year_ahead: bool,
    pub hour_back: bool,
    pub kill_rate: f64,
    // ---- time
    /// True time of the first cron run.
    pub start: i64,
    /// `frames.start`.
    pub reference: i64,
}

impl Scenario {
    pub fn draw(seed: u64) -> Self {
        let mut rng = Rng::stream(seed, 1);
        let size = rng.pick(&[10, 15, 20, 30, 60, 120, 300]);
        let delay = rng.pick(&[10, 30, 60, 120, 300]);
        let recheck = if rng.chance(0.4) {
            Vec::new()
        } else {
            vec![rng.pick(&[120, 300, 600]), rng.pick(&[1_800, 3_600, 3 * HOUR])]
        };
        let per_minute = (MINUTE + size - 1) / size;
        // The fresh frames and their re-checks fit in a run's budget with a quarter to spare,
        // so a backlog drains (a budget the load fills is a config error, not a finding).
        let load = per_minute * (1 + recheck.len() as i64);
        let needed = load + (load / 4).max(2);
        let max_frames = rng.range(needed, (needed + 4).max(20)) as usize;
        let retry_base = rng.pick(&[0, 5, 30]);
        let bounds = if rng.chance(0.25) { Bounds::Inclusive } else { Bounds::Exclusive };
        let format = rng.pick(&[Format::Rfc3339, Format::Rfc3339, Format::EpochS, Format::EpochMs, Format::EpochMs]);
        // An inclusive epoch_s range cannot say a millisecond: only with whole-second stamps.
        let whole_seconds = rng.chance(0.25) || (bounds == Bounds::Inclusive && format == Format::EpochS);
        let paging = rng.pick(&[Paging::None, Paging::Cursor, Paging::Cursor, Paging::NextPath, Paging::NextUrl]);
        let batch = rng.chance(0.4).then(|| rng.range(2, 8) as usize);
        let last_recheck = recheck.last().copied().unwrap_or(0);
        let start = 1_793_491_200 + rng.range(0, 1_439) * MINUTE; // 2026-11-01, any minute
        let backlog = rng.pick(&[0, 10 * MINUTE, HOUR, 3 * HOUR]);
        let mut periods: Vec<Period> = Period::ALL.into_iter().filter(|_| rng.chance(0.3)).collect();
        periods.sort();
        let mut s = Self {
            seed,
            size,
            delay,
            max_frames,
            max_seconds: rng.pick(&[10, 20, 50]),
            retry_base,
            retry_max: rng.pick(&[60, 120, 300]).max(retry_base),
            fresh: 10 * MINUTE,
            ack_group: rng.range(1, 8) as usize,
            ack_group_time_ms: rng.pick(&[100, 2_000]),
            retries: rng.range(0, 2) as u32,
            retain: last_recheck + rng.pick(&[10 * MINUTE, 30 * MINUTE, 2 * HOUR]),
            backfill_window: rng.chance(0.2).then(|| {
                let from = rng.range(0, 23) as u32 * 60;
                (from, (from + rng.range(4, 12) as u32 * 60) % 1_440)
            }),
            map: rng.chance(0.15),
            cron: if rng.chance(0.3) { Cron::PullThenPush } else { Cron::Run },
            bounds,
            format,
            whole_seconds,
            paging,
            page_size: {
                let low = rng.range(1, 4);
                (low, low + rng.range(0, 3))
            },
            live_pages: rng.chance(0.5),
            items_pointer: paging != Paging::None || rng.chance(0.5),
            date_header: rng.chance(0.75),
            records_per_frame: (rng.range(1, 4) * size / MINUTE).max(1),
            late_fraction: rng.pick(&[0.0, 0.05, 0.2]),
            history: rng.chance(0.25).then(|| rng.range((2 * (delay + 10 * MINUTE)).max(30 * MINUTE), 4 * HOUR)),
            ss_fault_rate: rng.pick(&[0.0, 0.01, 0.03, 0.08]),
            ss_clock_jumps: rng.chance(0.2),
            keys: rng.pick(&[Keys::Honors, Keys::Honors, Keys::Honors, Keys::Strict, Keys::Ignores, Keys::Ignores]),
            lookup: rng.pick(&[
                Lookup::None,
                Lookup::None,
                Lookup::None,
                Lookup::None,
                Lookup::Truthful,
                Lookup::Truthful,
                Lookup::Truthful,
                Lookup::LiesInMaintenance,
                Lookup::LiesInMaintenance,
                Lookup::LiesAlways,
            ]),
            poison_rate: if rng.chance(0.25) { 0.005 } else { 0.0 },
            poison_status: rng.pick(&[400, 422]),
            crash_rate: if rng.chance(0.1) { 0.003 } else { 0.0 },
            capacity: batch.filter(|_| rng.chance(0.3)).map(|b| rng.range(1, b as i64 - 1) as usize),
            batch,
            rs_fault_rate: rng.pick(&[0.0, 0.01, 0.03, 0.08]),
            lost_answer_rate: rng.pick(&[0.0, 0.005, 0.02]),
            in_flight_rate: rng.pick(&[0.0, 0.002, 0.01]),
            periods,
            period_rate: rng.pick(&[0.002, 0.005, 0.01]),
            year_ahead: rng.chance(0.15),
            hour_back: rng.chance(0.15),
            kill_rate: rng.pick(&[0.0, 0.02, 0.05, 0.1]),
            start,
            reference: (start - backlog) / size * size,
            recheck,
            shapes: Shapes::default(),
            concurrency: 1,
            ordered: false,
        };
        s.shapes = Shapes::draw(seed, &mut s.paging, &mut s.items_pointer, s.batch);
        // Its own stream: drawing these reshuffles none of the seed's other draws.
        let mut sending = Rng::stream(seed, 6);
        (s.concurrency, s.ordered) = (sending.pick(&[1, 2, 4, 16]), sending.chance(0.2));
        if s.shapes.code27 {
            s.poison_status = 500;
        }
        s
    }

    /// The config file an operator would write for this world.
    pub fn toml(&self, dir: &Path) -> String {
        let mut t = String::new();
        t += &format!("ledger = {:?}\n", dir.join("ledger.db").display().to_string());
        t += "[frames]\n";
        t += &format!("start = \"{}\"\n", framesync::frames::rfc3339(self.reference));
        t += &format!("size = \"{}s\"\ndelay = \"{}s\"\n", self.size, self.delay);
        let recheck: Vec<String> = self.recheck.iter().map(|r| format!("\"{r}s\"")).collect();
        t += &format!("recheck = [{}]\n", recheck.join(", "));
        t += "[source]\n";
        t += &format!("url = \"{}\"\n", self.source_url());
        t += &format!("time_format = \"{}\"\n", self.format.name());
        t += &format!("records = \"{}\"\n", if self.items_pointer { "/items" } else { "" });
        t += "uid = \"/id\"\ntimestamp = \"/ts\"\n";
        t += &format!("timestamp_format = \"{}\"\n", self.record_format().name());
        if matches!(self.paging, Paging::Cursor | Paging::NextPath | Paging::NextUrl) {
            t += "next = \"/next\"\ncursor_param = \"page_token\"\n";
        }
        t += &format!("timeout = \"{TIMEOUT_SECS}s\"\n");
        t += "headers = { Authorization = \"Bearer ${SS_TOKEN}\" }\n";
        t += &self.shapes.source_toml(self.paging);
        t += "[sink]\n";
        t += &format!("url = \"http://{RS_HOST}/v1/ingest\"\n");
        if let Some(size) = self.batch {
            t += &format!("mode = \"batch\"\nbatch_size = {size}\n");
        }
        t += &self.shapes.sink_keys(self.batch, self.lookup != Lookup::None);
        t += &format!("timeout = \"{TIMEOUT_SECS}s\"\nretries = {}\n", self.retries);
        t += &format!("ack_group = {}\nack_group_time = \"{}ms\"\n", self.ack_group, self.ack_group_time_ms);
        t += &format!("concurrency = {}\nordered = {}\n", self.concurrency, self.ordered);
        t += "headers = { Authorization = \"Bearer ${RS_TOKEN}\" }\n";
        if self.map {
            t += "map = { event_id = \"/id\", amount = \"/amount\", at = \"/ts\", source = { const = \"sim\" } }\n";
        }
        t += &self.shapes.sink_tables(self.lookup != Lookup::None);
        t += "[run]\n";
        t += &format!("metrics_file = {:?}\n", dir.join("metrics.prom").display().to_string());
        t += &format!("max_frames = {}\nmax_seconds = {}\n", self.max_frames, self.max_seconds);
        t += &format!("fresh = \"{}s\"\nretain = \"{}s\"\n", self.fresh, self.retain);
        t += &format!("retry_base = \"{}s\"\nretry_max = \"{}s\"\n", self.retry_base, self.retry_max);
        if let Some((from, to)) = self.backfill_window {
            t += &format!("backfill_window = \"{:02}:{:02}-{:02}:{:02}\"\n", from / 60, from % 60, to / 60, to % 60);
        }
        t
    }

    fn source_url(&self) -> String {
        let range = match self.bounds {
            Bounds::Exclusive => "from={from}&to={to}",
            Bounds::Inclusive => "from={from}&last={last}",
        };
        format!("http://{SS_HOST}/v1/events?{range}")
    }

    /// The lookup can answer "present" for a UID that does not exist (framesync turns it off).
    pub fn lookup_lies(&self) -> bool {
        matches!(self.lookup, Lookup::LiesInMaintenance | Lookup::LiesAlways)
    }

    /// How the SS writes the `ts` field of its records.
    pub fn record_format(&self) -> Format {
        match self.format {
            Format::EpochS if !self.whole_seconds => Format::EpochMs,
            other => other,
        }
    }

    /// The JSON pointer of the UID in what the RS receives.
    pub fn rs_uid_field(&self) -> &'static str {
        if self.map { "event_id" } else { "id" }
    }

    /// The latest a record of a frame becomes visible at the SS, after the frame's end, in
    /// ms: within `delay`, or within `delay` + the last re-check when there are re-checks,
    /// minus what this machine's and the SS's clocks may drift (so skew alone never loses a
    /// record).
    pub fn latest_visibility_ms(&self) -> i64 {
        let margin = MAX_DRIFT_MS + SS_MAX_DRIFT_MS + 1_000;
        let promise = self.delay + self.recheck.last().copied().unwrap_or(0);
        (promise * 1000 - margin).max(0)
    }

    /// The longest a frame may legitimately wait for its next attempt, in seconds.
    pub fn longest_wait(&self) -> i64 {
        self.retry_max.max(MAX_RETRY_AFTER)
    }

    /// Frames that become eligible every minute.
    pub fn frames_per_minute(&self) -> i64 {
        (MINUTE + self.size - 1) / self.size
    }

    /// One line naming the world's semantics, for traces and reports.
    pub fn describe(&self) -> String {
        format!(
            "size {}s delay {}s recheck {:?} max_frames {} max_seconds {} retries {} ack_group {} concurrency {}{} {} lookup {:?} keys {:?} \
             {:?} {:?}{} paging {:?}{} date {} history {:?} poison {}/{} crash {} capacity {:?} periods {:?} \
             cron {:?} map {} window {:?} year_ahead {} hour_back {} kills {} | {}",
            self.size,
            self.delay,
            self.recheck,
            self.max_frames,
            self.max_seconds,
            self.retries,
            self.ack_group,
            self.concurrency,
            if self.ordered { " ordered" } else { "" },
            self.batch.map_or("record".to_string(), |b| format!("batch {b}")),
            self.lookup,
            self.keys,
            self.bounds,
            self.format,
            if self.whole_seconds { " whole-second stamps" } else { " ms stamps" },
            self.paging,
            if self.live_pages { " live" } else { " snapshot" },
            self.date_header,
            self.history,
            self.poison_rate,
            self.poison_status,
            self.crash_rate,
            self.capacity,
            self.periods,
            self.cron,
            self.map,
            self.backfill_window,
            self.year_ahead,
            self.hour_back,
            self.kill_rate,
            self.shapes.describe(self.paging),
        )
    }
}
