//! One seed, driven: its schedule (a cron run every simulated minute — `run`, or `pull` then
//! `push` — with kills, periods and clock jumps during a fault phase, then a calm phase long
//! enough for the backlog to drain) and the driver that runs the REAL planner and job on a real
//! SQLite ledger with the real HTTP clients, against the model servers, and checks the
//! invariants after every run.
//!
//! A kill is a panic with `Killed` at a named kill point (or the RS's in-flight death); the
//! driver catches it, drops the ledger and the clients as the OS would drop a killed process's
//! handles (what was not committed rolls back), and reopens the ledger.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use framesync::cmd::run::{Parts, execute, make_plan};
use framesync::config::Config;
use framesync::frames::{FrameSize, eligible_until, rfc3339};
use framesync::hooks::inprocess::{Kill, Killed, arm};
use framesync::ledger::{Ledger, Synchronous};
use framesync::plan::{Plan, Scope};
use framesync::sink::HttpSink;
use framesync::source::HttpSource;

use super::check::{Before, Checker, Ending, FAR, RunFacts, Settled, Violation, ledger_err};
use super::clock::SimClock;
use super::dispatch::SeededDispatch;
use super::net::{Net, Shared};
use super::records::Catalog;
use super::report::Report;
use super::rng::Rng;
use super::scenario::{Cron, HOUR, MINUTE, Period, Scenario, YEAR};
use super::trace::Trace;
use super::transport;

/// What to simulate.
pub struct Options {
    pub seed: u64,
    /// Cron minutes of the schedule before the calm phase is extended to drain the backlog.
    pub runs: usize,
    pub trace: Trace,
    pub tolerance: Tolerance,
}

/// Known holes: which end a seed without failing it, and which a seed goes on past.
#[derive(Debug, Clone, Default)]
pub struct Tolerance {
    /// Hole letters or violation tags: the seed ends there, counted as known, not failed.
    pub end_seed: Vec<String>,
    /// Hole letters whose violations are only counted; the seed goes on (to find what lies
    /// beyond them). Only for holes whose damage no later check counts again.
    pub go_on: Vec<char>,
}

impl Tolerance {
    /// The environment that sets this tolerance, for a replay line.
    pub fn env(&self) -> String {
        let mut env = String::new();
        if !self.end_seed.is_empty() {
            env += &format!("SIM_TOLERATE={} ", self.end_seed.join(","));
        }
        if !self.go_on.is_empty() {
            env += &format!("SIM_IGNORE={} ", self.go_on.iter().map(char::to_string).collect::<Vec<_>>().join(","));
        }
        env
    }

    /// `SIM_TOLERATE` (comma-separated letters or tags) and `SIM_IGNORE` (letters).
    pub fn from_env() -> Self {
        let list = |name| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        };
        Self {
            end_seed: list("SIM_TOLERATE"),
            go_on: list("SIM_IGNORE").iter().filter_map(|l| l.chars().next()).collect(),
        }
    }

    fn ends_known(&self, v: &Violation) -> bool {
        self.end_seed.iter().any(|t| t == v.tag || v.hole.is_some_and(|h| t.len() == 1 && t.starts_with(h)))
    }
}

/// Runs one seed to its end or its first violation.
pub fn simulate(options: Options) -> Report {
    quiet_kills();
    let wall = Instant::now();
    let mut driver = Driver::new(options.seed, options.runs, options.trace, options.tolerance.go_on.clone());
    let result = driver.run_all();
    driver.report(result, wall.elapsed(), options.runs, &options.tolerance)
}

/// A kill is a panic: say nothing about it, but keep every other panic's message.
fn quiet_kills() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Killed>().is_none() {
                default(info);
            }
        }));
    });
}

struct Driver {
    scenario: Arc<Scenario>,
    config: Config,
    _dir: tempfile::TempDir,
    shared: Shared,
    ledger: Option<Ledger>,
    rng: Rng,
    dispatch: SeededDispatch,
    checker: Checker,
    /// Cron minutes of the fault phase, and of the whole schedule (extended at the calm start).
    fault_ticks: usize,
    total_ticks: usize,
    /// Minutes a failed frame or a quiet server may legitimately wait (N of invariant 7).
    settle_ticks: usize,
    /// This machine's clock when the calm phase began.
    calm_from: i64,
    /// The latest this machine's clock read at the end of a run, outside a jump far ahead: after
    /// it jumped back, frames up to here were already eligible in the fault phase.
    latest_machine: i64,
    /// When the backlog would take more than `CALM_CAP` times the schedule to drain: the
    /// eligible horizon at the calm phase's start, and the backlog then.
    capped_backlog: Option<(i64, usize)>,
    runs: usize,
    period_until: BTreeMap<Period, usize>,
    year_ahead_at: Option<usize>,
    hour_back_at: Option<usize>,
    ss_jump_until: usize,
    kills: BTreeMap<&'static str, u64>,
    exits: BTreeMap<i32, u64>,
    skipped_ticks: u64,
    last_endings: Vec<Ending>,
}

impl Driver {
    fn new(seed: u64, runs: usize, trace: Trace, go_on: Vec<char>) -> Self {
        let scenario = Arc::new(Scenario::draw(seed));
        let dir = tempfile::Builder::new().prefix("framesync-sim-").tempdir_in(scratch()).expect("a temp dir");
        let env = |name: &str| match name {
            "SS_TOKEN" => Some("ss-token".to_owned()),
            "RS_TOKEN" => Some("rs-token".to_owned()),
            _ => None,
        };
        let config = Config::parse(&scenario.toml(dir.path()), dir.path(), &env).expect("the drawn config parses");
        let until = scenario.start + runs as i64 * MINUTE + 2 * HOUR;
        let catalog = Catalog::generate(&scenario, until);
        let net = Net::new(scenario.clone(), catalog, trace);
        let mut rng = Rng::stream(seed, 4);
        let fault_ticks = runs * 4 / 5;
        let mut at = |on: bool| on.then(|| rng.range(fault_ticks as i64 / 4, fault_ticks as i64 * 3 / 4) as usize);
        let (year_ahead_at, hour_back_at) = (at(scenario.year_ahead), at(scenario.hour_back));
        Self {
            checker: Checker::new(scenario.clone(), config.sink.max_attempts, go_on),
            config,
            _dir: dir,
            shared: Shared::new(net),
            ledger: None,
            rng,
            dispatch: SeededDispatch::new(seed),
            fault_ticks,
            total_ticks: runs,
            settle_ticks: 0,
            calm_from: 0,
            latest_machine: i64::MIN,
            capped_backlog: None,
            runs: 0,
            period_until: BTreeMap::new(),
            year_ahead_at,
            hour_back_at,
            ss_jump_until: 0,
            kills: BTreeMap::new(),
            exits: BTreeMap::new(),
            skipped_ticks: 0,
            last_endings: Vec::new(),
            scenario,
        }
    }

    /// The whole schedule, then the end-of-seed checks.
    fn run_all(&mut self) -> Result<(), Violation> {
        self.shared.lock().trace(|| format!("seed {}: {}", self.scenario.seed, self.scenario.describe()));
        let mut tick = 0;
        while tick < self.total_ticks {
            if tick >= self.fault_ticks && !self.checker.calm {
                self.calm()?;
            }
            self.schedule(tick);
            self.last_endings.clear();
            for &scope in self.scopes() {
                let ending = self.run_once(tick, scope)?;
                self.last_endings.push(ending);
            }
            tick = self.next_minute(tick);
        }
        self.finish()
    }

    fn scopes(&self) -> &'static [Scope] {
        match self.scenario.cron {
            Cron::Run => &[Scope::Run],
            Cron::PullThenPush => &[Scope::Pull, Scope::Push],
        }
    }

    /// Moves true time to the next cron minute; minutes that passed while the run still held
    /// the lock are skipped, as cron's run would exit at once.
    fn next_minute(&mut self, tick: usize) -> usize {
        let mut net = self.shared.lock();
        let mut next = tick + 1;
        while net.time.true_ms >= self.tick_ms(next) {
            next += 1;
            self.skipped_ticks += 1;
        }
        let target = self.tick_ms(next);
        let now = net.time.true_ms;
        net.time.advance(target - now);
        next
    }

    fn tick_ms(&self, tick: usize) -> i64 {
        (self.scenario.start + tick as i64 * MINUTE) * 1000
    }

    /// This minute's events: clock drift and jumps, periods starting and ending.
    fn schedule(&mut self, tick: usize) {
        let faulty = tick < self.fault_ticks;
        let shared = self.shared.clone();
        let mut net = shared.lock();
        net.time.drift(&mut self.rng);
        if net.time.jump >= YEAR / 2 {
            net.time.jump -= YEAR;
            net.trace(|| "  this machine's clock jumps back from a year ahead".into());
        } else if self.year_ahead_at.is_some_and(|t| tick >= t) {
            self.year_ahead_at = None;
            net.time.jump += YEAR;
            net.count("clock-year-ahead");
            net.trace(|| "  this machine's clock jumps a year ahead, for one run".into());
        }
        if self.hour_back_at.is_some_and(|t| tick >= t) {
            self.hour_back_at = None;
            net.time.jump -= HOUR;
            self.checker.jump_back = HOUR;
            net.count("clock-hour-back");
            net.trace(|| "  this machine's clock jumps an hour back, for good".into());
        }
        if self.scenario.ss_clock_jumps && faulty {
            self.ss_clock(&mut net, tick);
        }
        self.periods(&mut net, tick, faulty);
    }

    /// The SS's clock jumps an hour either way for a while, during the fault phase.
    fn ss_clock(&mut self, net: &mut Net, tick: usize) {
        if net.time.ss_jump != 0 && tick >= self.ss_jump_until {
            net.time.ss_jump = 0;
            net.trace(|| "  the SS's clock is right again".into());
        } else if net.time.ss_jump == 0 && self.rng.chance(0.003) {
            net.time.ss_jump = if self.rng.chance(0.5) { HOUR } else { -HOUR };
            self.ss_jump_until = tick + self.rng.range(5, 60) as usize;
            net.count("ss-clock-jump");
            let jump = net.time.ss_jump;
            net.trace(|| format!("  the SS's clock jumps {jump:+}s"));
        }
    }

    fn periods(&mut self, net: &mut Net, tick: usize, faulty: bool) {
        for &period in &self.scenario.periods {
            let until = self.period_until.get(&period).copied();
            if until.is_some_and(|u| tick >= u || !faulty) {
                self.period_until.remove(&period);
                net.periods.remove(&period);
                net.trace(|| format!("  {} ends", period.name()));
            } else if until.is_none() && faulty && self.rng.chance(self.scenario.period_rate) {
                self.period_until.insert(period, tick + self.rng.range(2, 30) as usize);
                if period == Period::Down {
                    net.rs_down_refuses = self.rng.chance(0.5);
                }
                net.periods.insert(period);
                *net.faults.entry(period_start(period)).or_default() += 1;
                net.trace(|| format!("  {} begins", period.name()));
            }
        }
    }

    /// The calm phase: no more transient faults, periods, kills or jumps; it lasts long enough
    /// for the backlog to drain (see `Checker::liveness` for what is then required).
    fn calm(&mut self) -> Result<(), Violation> {
        let (backlog, rechecks) = self.backlog()?;
        self.calm_from = SimClock(self.shared.clone()).now_secs();
        let s = &self.scenario;
        let work_per_frame = 1 + s.recheck.len();
        let load = s.frames_per_minute() as usize * work_per_frame;
        let drain_rate = s.max_frames.saturating_sub(load).max(1);
        // Every frame of the backlog is pulled, then re-checked, and the re-checks of frames
        // already delivered come due, out of what the fresh frames leave of the budget; a
        // tenth more for runs cut short by max_seconds.
        let mut drain = (backlog * work_per_frame + rechecks).div_ceil(drain_rate) * 11 / 10;
        if let Some((from, to)) = s.backfill_window {
            let open = ((to + 1_440 - from) % 1_440) as usize;
            drain = drain.div_ceil(open) * 1_440 + drain % open + 1_440;
        }
        // A frame failed just before the calm waits at most this long; a quiet server too.
        self.settle_ticks = (s.longest_wait() / MINUTE) as usize + 3;
        let needed = self.settle_ticks + drain + 10;
        let cap = self.total_ticks * CALM_CAP;
        if needed > cap {
            // Too long to wait for: the liveness check then asks the backlog to shrink.
            let size = FrameSize::new(s.size).expect("a valid size");
            // Frames eligible before the calm began (by the latest clock: it may have jumped back
            // since) are the backlog; later ones are the calm phase's own.
            let horizon = eligible_until(size, self.calm_from.max(self.latest_machine), s.delay);
            let ledger = self.ledger.as_ref().expect("opened by backlog()");
            let left = super::check::undelivered(ledger, &self.shared.lock(), s.reference, horizon, s.size)?;
            self.capped_backlog = Some((horizon, left));
        }
        self.total_ticks = self.total_ticks.max(self.fault_ticks + needed.min(cap));
        self.checker.calm = true;
        let mut net = self.shared.lock();
        net.faults_on = false;
        net.periods.clear();
        net.time.ss_jump = 0;
        net.trace(|| {
            format!(
                "calm phase: backlog {backlog} frames and {rechecks} re-checks, drain rate {drain_rate}/run, {needed} runs needed"
            )
        });
        Ok(())
    }

    /// Eligible frames not delivered now, and the re-checks of delivered frames still to come.
    fn backlog(&mut self) -> Result<(usize, usize), Violation> {
        let now = SimClock(self.shared.clone()).now_secs();
        let size = FrameSize::new(self.scenario.size).expect("a valid size");
        let horizon = eligible_until(size, now, self.scenario.delay);
        let (reference, per_frame) = (self.scenario.reference, self.scenario.recheck.len() as i64);
        // Where the SS keeps a limited history, re-checks may meet refusals, each tried
        // run.max_recheck_attempts times (5) before it is given up.
        let attempts = if self.scenario.history.is_some() { 5 } else { 1 };
        let ledger = self.ledger()?;
        let spans = ledger.delivered_spans(reference, horizon.max(reference)).map_err(ledger_err)?;
        let gaps: i64 = framesync::plan::gaps(&spans, reference, horizon.max(reference))
            .iter()
            .map(|(from, to)| (to - from) / size.seconds())
            .sum();
        let open = ledger.open_frames().map_err(ledger_err)?.len();
        let rechecks: i64 = rusqlite::Connection::open(ledger.path())
            .and_then(|conn| {
                conn.query_row(
                "SELECT COALESCE(SUM(MAX(?1 - rechecks, 1)), 0) FROM frames WHERE state = 'delivered' AND next_recheck IS NOT NULL",
                [per_frame],
                    |r| r.get(0),
                )
            })
            .map_err(|e| ledger_err(e.into()))?;
        Ok((gaps as usize + open, rechecks as usize * attempts))
    }

    /// The ledger, opened as a new process opens it.
    fn ledger(&mut self) -> Result<&mut Ledger, Violation> {
        if self.ledger.is_none() {
            let opened = Ledger::open_with(&self.config.ledger, Synchronous::Normal, Duration::from_secs(5));
            self.ledger = Some(opened.map_err(ledger_err)?);
        }
        Ok(self.ledger.as_mut().expect("opened"))
    }

    /// One cron invocation of `scope`: plan, execute (perhaps killed), check.
    fn run_once(&mut self, tick: usize, scope: Scope) -> Result<Ending, Violation> {
        let run = self.runs;
        self.runs += 1;
        let kill = self.draw_kill(tick);
        let clock = SimClock(self.shared.clone());
        let plan_now = clock.now_secs();
        let (plan, before) = self.plan(scope, plan_now)?;
        self.trace_run(run, tick, scope, &plan, kill);
        self.shared.lock().run = run;
        let ending = self.execute(scope, &plan, kill);
        if matches!(ending, Ending::Killed(_) | Ending::Panicked(_)) {
            self.ledger = None; // the process is gone: its connection closes, its transaction rolls back
        }
        self.tally(&ending);
        let far_ahead = {
            let time = &self.shared.lock().time;
            time.machine_ms() - time.true_ms > FAR * 1000
        };
        if !far_ahead {
            self.latest_machine = self.latest_machine.max(clock.now_secs());
        }
        self.ledger()?;
        let facts = RunFacts {
            config: &self.config,
            run,
            scope,
            plan: &plan,
            plan_now,
            end_now: clock.now_secs(),
            ending: &ending,
            clock_far_ahead: far_ahead,
        };
        let ledger = self.ledger.as_ref().expect("opened");
        let mut net = self.shared.lock();
        self.checker.after(ledger, &mut net, &before, &facts)?;
        Ok(ending)
    }

    fn plan(&mut self, scope: Scope, now: i64) -> Result<(Plan, Before), Violation> {
        self.ledger()?;
        let ledger = self.ledger.as_ref().expect("opened");
        let plan = make_plan(&self.config, ledger, scope, now).map_err(ledger_err)?;
        let before = self.checker.before(ledger, &plan).map_err(|e| ledger_err(e.into()))?;
        Ok((plan, before))
    }

    /// The run itself, as `framesync run` does it after taking its locks, with this run's
    /// process: new clients, the shared simulated clock.
    fn execute(&mut self, scope: Scope, plan: &Plan, kill: Option<Kill>) -> Ending {
        let config = &self.config;
        let shared = &self.shared;
        let (ledger, dispatch) = (self.ledger.as_mut().expect("opened by plan"), &self.dispatch);
        arm(kill);
        let result = catch_unwind(AssertUnwindSafe(|| {
            framesync::hooks::kill_point("after-lock");
            let source = HttpSource::with_agent(&config.source, transport::agent(shared, config.source.timeout));
            let sink = HttpSink::with_agent(&config.sink, transport::agent(shared, config.sink.timeout));
            let clock = SimClock(shared.clone());
            let started = framesync::clock::Clock::elapsed(&clock);
            let parts =
                Parts { source: &source, read_ahead: None, sink: &sink, clock: &clock, dispatch: Some(dispatch) };
            execute(config, ledger, scope, plan, &parts, started)
        }));
        arm(None);
        match result {
            Ok(Ok(outcome)) => {
                Ending::Exit { code: outcome.exit_code(), out_of_time: outcome.out_of_time, failures: outcome.failures }
            }
            Ok(Err(e)) => Ending::LedgerFailed(format!("{e:#}")),
            Err(payload) => match payload.downcast_ref::<Killed>() {
                Some(Killed(point)) => Ending::Killed(point),
                None => Ending::Panicked(panic_message(payload.as_ref())),
            },
        }
    }

    /// A kill for this run, during the fault phase: at a named point's n-th pass, or at the
    /// n-th pass through any point.
    fn draw_kill(&mut self, tick: usize) -> Option<Kill> {
        if tick >= self.fault_ticks || !self.rng.chance(self.scenario.kill_rate) {
            return None;
        }
        if self.rng.chance(0.6) {
            let point = self.rng.pick(framesync::hooks::POINTS);
            let busy =
                ["mid-pull", "after-mark-sending", "mid-wave", "after-ack", "mid-ack-commit", "after-dead-letter"];
            let nth = 1 + self.rng.below(if busy.contains(&point) { 8 } else { 2 });
            Some(Kill::At { point, nth })
        } else {
            Some(Kill::AtPass(1 + self.rng.below(40)))
        }
    }

    fn tally(&mut self, ending: &Ending) {
        match ending {
            Ending::Exit { code, .. } => *self.exits.entry(*code).or_default() += 1,
            Ending::LedgerFailed(_) => *self.exits.entry(3).or_default() += 1,
            Ending::Killed(point) => *self.kills.entry(point).or_default() += 1,
            Ending::Panicked(_) => {}
        }
        let mut net = self.shared.lock();
        if net.trace.is_on() {
            let line = match ending {
                Ending::Exit { code, failures, out_of_time } => format!(
                    "  exit {code}{}{}",
                    if *out_of_time { " (out of time)" } else { "" },
                    failures.iter().map(|f| format!("\n    failure: {f}")).collect::<String>()
                ),
                Ending::LedgerFailed(e) => format!("  exit 3: {e}"),
                Ending::Killed(point) => format!("  killed at {point}"),
                Ending::Panicked(e) => format!("  panicked: {e}"),
            };
            net.trace(|| line);
        }
    }

    fn trace_run(&self, run: usize, tick: usize, scope: Scope, plan: &Plan, kill: Option<Kill>) {
        let mut net = self.shared.lock();
        if !net.trace.is_on() {
            return;
        }
        let time = &net.time;
        let head = format!(
            "run {run} (minute {tick}) {scope:?}: true {} machine {} ss {}{}",
            framesync::frames::rfc3339_ms(time.true_ms),
            framesync::frames::rfc3339_ms(time.machine_ms()),
            framesync::frames::rfc3339_ms(time.ss_ms()),
            kill.map_or(String::new(), |k| format!(", kill armed: {k:?}"))
        );
        let steps: Vec<String> =
            plan.steps.iter().map(|s| s.to_string().split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        let body = format!(
            "  plan (horizon {}, deferred {}{}): {}",
            rfc3339(plan.horizon),
            plan.deferred,
            if plan.outside_window { ", outside the backfill window" } else { "" },
            if steps.is_empty() { "nothing".into() } else { steps.join(", ") }
        );
        net.trace(|| head);
        net.trace(|| body);
    }

    /// The end of the seed: liveness, nothing promised lost, and the whole ledger's integrity.
    fn finish(&mut self) -> Result<(), Violation> {
        let now = SimClock(self.shared.clone()).now_secs();
        let size = FrameSize::new(self.scenario.size).expect("a valid size");
        let settled = eligible_until(size, now - self.settle_ticks as i64 * MINUTE, self.scenario.delay);
        let settled = match self.capped_backlog {
            None => Settled { frames_from: None, frames_until: settled, rechecks_until: self.calm_from, now },
            Some((horizon, backlog)) => {
                Settled { frames_from: Some((horizon, backlog)), frames_until: settled, rechecks_until: i64::MIN, now }
            }
        };
        let last = std::mem::take(&mut self.last_endings);
        self.ledger()?;
        let ledger = self.ledger.as_ref().expect("opened");
        let net = self.shared.lock();
        for ending in &last {
            self.checker.liveness(ledger, &net, &settled, ending)?;
        }
        self.checker.nothing_promised_is_lost(ledger, &net, settled.frames_until)?;
        self.checker.integrity(ledger)
    }

    fn report(&mut self, result: Result<(), Violation>, wall: Duration, runs: usize, tolerance: &Tolerance) -> Report {
        let mut net = self.shared.lock();
        let violation = result.err();
        let known = violation.as_ref().is_some_and(|v| tolerance.ends_known(v));
        let dead_letters = self
            .ledger
            .as_ref()
            .and_then(|l| rusqlite::Connection::open(l.path()).ok())
            .map_or(0, |conn| conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0)).unwrap_or(0));
        Report {
            seed: self.scenario.seed,
            runs_asked: runs,
            runs: self.runs as u64,
            skipped_ticks: self.skipped_ticks,
            kills: self.kills.clone(),
            faults: net.faults.clone(),
            served: self.checker.records_served,
            stored: net.rs.stored.len() as u64,
            dead_letters,
            doubles: net.rs.doubles.len() as u64,
            double_bound: self.checker.double_bound(&net),
            exits: self.exits.clone(),
            violation,
            known,
            ignored: std::mem::take(&mut self.checker.ignored),
            tolerance: tolerance.env(),
            wall,
            scenario: self.scenario.describe(),
            trace: std::mem::take(&mut net.trace).lines(),
        }
    }
}

/// The calm phase lasts at most this many times the schedule's minutes.
const CALM_CAP: usize = 4;

/// Where the seeds' ledgers live: memory, when the machine has /dev/shm.
fn scratch() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm } else { Box::leak(std::env::temp_dir().into_boxed_path()) }
}

fn period_start(period: Period) -> &'static str {
    match period {
        Period::Down => "period: rs-down",
        Period::Redirect => "period: rs-redirect",
        Period::ExpiredToken => "period: rs-expired-token",
        Period::DroppedTable => "period: rs-dropped-table",
        Period::Maintenance => "period: rs-maintenance",
        Period::RateLimited => "period: rs-rate-limited",
        Period::SsDown => "period: ss-down",
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
