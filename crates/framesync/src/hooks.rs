//! Test hooks for the crash, lock, clock and disk-full tests. They exist only in a build with
//! the `test-hooks` feature; in a normal build every function here is an empty inline no-op,
//! so no environment variable can make a production framesync kill itself.
//!
//! - `FRAMESYNC_TEST_KILL_AT=point[:n]`: SIGKILL this process at the n-th (default 1st) pass
//!   through the named point. Points: see [`POINTS`].
//! - `FRAMESYNC_TEST_PANIC_AT=point`: panic at the first pass through the named point (a bug).
//! - `FRAMESYNC_TEST_PAUSE_AT=point:ms`: sleep at the named point (e.g. hold the lock).
//! - `FRAMESYNC_TEST_MOUNTINFO=path`: read mounts from this file instead of /proc/self/mountinfo.
//! - `FRAMESYNC_TEST_NOW=epoch` or `+secs` / `-secs`: the clock, absolute or shifted.
//! - `FRAMESYNC_TEST_MAX_PAGE_COUNT=n`: `PRAGMA max_page_count`, a full disk for the ledger.
//!
//! The in-process simulation kills without a process: [`inprocess::arm`] makes a kill point
//! of this thread panic with [`inprocess::Killed`], which the simulation catches as the death
//! of the process — what was not committed is rolled back when the ledger is dropped, as after
//! a SIGKILL.

/// Every kill point, in the order a run passes them. A kill point is also a pause point.
pub const POINTS: &[&str] = &[
    "after-lock",
    "mid-pull",
    "after-stage",
    "after-mark-sending",
    "mid-wave",
    "after-ack",
    "mid-ack-commit",
    "after-dead-letter",
    "mid-complete",
    "after-complete",
    "mid-prune",
    "before-end-run",
];

#[cfg(feature = "test-hooks")]
mod active {
    use std::collections::HashMap;
    use std::sync::Mutex;

    static PASSES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    pub fn kill_point(point: &'static str) {
        super::inprocess::pass(point);
        pause_point(point);
        debug_assert!(super::POINTS.contains(&point), "unknown kill point {point}");
        if var("FRAMESYNC_TEST_PANIC_AT").as_deref() == Some(point) {
            panic!("FRAMESYNC_TEST_PANIC_AT={point}");
        }
        let Some(spec) = var("FRAMESYNC_TEST_KILL_AT") else { return };
        let (name, nth) = spec.split_once(':').map_or((spec.as_str(), 1), |(n, k)| (n, k.parse().unwrap_or(1)));
        if name != point {
            return;
        }
        let mut passes = PASSES.lock().unwrap_or_else(|e| e.into_inner());
        let count = passes.get_or_insert_with(HashMap::new).entry(point.to_owned()).or_insert(0);
        *count += 1;
        if *count == nth {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
    }

    pub fn pause_point(point: &str) {
        let Some(spec) = var("FRAMESYNC_TEST_PAUSE_AT") else { return };
        if let Some((name, ms)) = spec.split_once(':')
            && name == point
        {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        }
    }

    pub fn now(real: i64) -> i64 {
        match var("FRAMESYNC_TEST_NOW") {
            Some(v) if v.starts_with('+') || v.starts_with('-') => real + v.parse::<i64>().unwrap_or(0),
            Some(v) => v.parse().unwrap_or(real),
            None => real,
        }
    }

    pub fn max_page_count() -> Option<u64> {
        var("FRAMESYNC_TEST_MAX_PAGE_COUNT")?.parse().ok()
    }

    pub fn mountinfo() -> String {
        var("FRAMESYNC_TEST_MOUNTINFO").unwrap_or_else(|| "/proc/self/mountinfo".into())
    }
}

#[cfg(feature = "test-hooks")]
pub use active::{kill_point, max_page_count, mountinfo, now, pause_point};

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn kill_point(_point: &'static str) {}

/// Kills inside this process, for the deterministic simulation (see the module doc).
#[cfg(feature = "test-hooks")]
pub mod inprocess {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Where this thread dies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kill {
        /// At the `nth` (from 1) pass through the named point.
        At { point: &'static str, nth: u64 },
        /// At the `nth` (from 1) pass through any kill point.
        AtPass(u64),
    }

    /// The panic payload of an in-process kill: the point it happened at.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Killed(pub &'static str);

    thread_local! {
        static ARMED: Cell<Option<Kill>> = const { Cell::new(None) };
        static PASSES: Cell<u64> = const { Cell::new(0) };
        static BY_POINT: RefCell<HashMap<&'static str, u64>> = RefCell::new(HashMap::new());
    }

    /// Arms (or with None disarms) this thread's kill, and restarts the pass counts.
    pub fn arm(kill: Option<Kill>) {
        ARMED.set(kill);
        PASSES.set(0);
        BY_POINT.with_borrow_mut(HashMap::clear);
    }

    /// Kill points passed on this thread since `arm`.
    pub fn passes() -> u64 {
        PASSES.get()
    }

    /// Dies here: unwinds to the simulation, which drops everything as the OS would.
    pub fn die(point: &'static str) -> ! {
        ARMED.set(None);
        std::panic::panic_any(Killed(point))
    }

    pub(super) fn pass(point: &'static str) {
        let pass = PASSES.get() + 1;
        PASSES.set(pass);
        let Some(kill) = ARMED.get() else { return };
        let nth = BY_POINT.with_borrow_mut(|m| {
            let n = m.entry(point).or_insert(0);
            *n += 1;
            *n
        });
        let fire = match kill {
            Kill::At { point: p, nth: n } => p == point && n == nth,
            Kill::AtPass(n) => n == pass,
        };
        if fire {
            die(point);
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn pause_point(_point: &str) {}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn now(real: crate::frames::Epoch) -> crate::frames::Epoch {
    real
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn max_page_count() -> Option<u64> {
    None
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn mountinfo() -> String {
    "/proc/self/mountinfo".into()
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    const CHILD: &str = "hooks::tests::in_a_child_process_with_every_variable_set";

    /// Runs the child test below in a process of its own, with every `FRAMESYNC_TEST_*`
    /// variable set, since a test cannot change its own environment safely. Without the feature
    /// the child passes through a kill point it was told to die at and sees the real clock,
    /// disk and mounts; with it, the same variables kill the child, which shows that the child
    /// would notice hooks that act.
    #[test]
    fn the_test_variables_act_only_in_a_build_with_the_test_hooks_feature() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD, "--ignored", "--nocapture", "--test-threads=1"])
            .env("FRAMESYNC_TEST_KILL_AT", "after-lock")
            .env("FRAMESYNC_TEST_PAUSE_AT", "mid-pull:5000")
            .env("FRAMESYNC_TEST_NOW", "+31536000")
            .env("FRAMESYNC_TEST_MAX_PAGE_COUNT", "1")
            .env("FRAMESYNC_TEST_MOUNTINFO", "/nonexistent/mountinfo")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if cfg!(feature = "test-hooks") {
            assert_eq!(out.status.code(), None, "killed at the kill point: {stdout}");
        } else {
            assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("1 passed"), "the child ran: {stdout}");
        }
    }

    #[test]
    #[ignore = "run by the test above, in a child process with the variables set"]
    fn in_a_child_process_with_every_variable_set() {
        assert!(std::env::var_os("FRAMESYNC_TEST_KILL_AT").is_some(), "run only by the test above");
        super::kill_point("after-lock");
        let start = Instant::now();
        super::pause_point("mid-pull");
        assert!(start.elapsed() < Duration::from_secs(5), "paused");
        assert_eq!(super::now(1_000), 1_000);
        assert_eq!(super::max_page_count(), None);
        assert_eq!(super::mountinfo(), "/proc/self/mountinfo");
    }
}
