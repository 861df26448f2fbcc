//! Planning: which frames a run works on, as a pure function of (settings, ledger facts, now).
//! The plan is sorted and deterministic, so it can be printed with `--dry-run` and tested as
//! a table. Its cost grows with the number of holes, never with the length of the horizon.

use std::collections::{HashMap, HashSet};

use crate::frames::{Epoch, FrameSize, eligible_until};
use crate::model::{FrameState, OpenFrame};

#[derive(Debug, Clone)]
pub struct Settings {
    pub reference: Epoch,
    pub size: FrameSize,
    pub delay: i64,
    /// Frames starting within this many seconds of the eligible edge are fresh.
    pub fresh: i64,
    /// Old gaps are only planned inside this UTC window (minutes after midnight).
    pub backfill_window: Option<(u32, u32)>,
    pub max_frames: usize,
    /// The longest wait a frame is given (`run.retry_max`, or a server's `run.max_retry_after`):
    /// a next attempt further
    /// ahead was set by a clock that has jumped back since, and the frame is due now.
    pub max_wait: i64,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Settings {
            reference: config.frames.start,
            size: config.frames.size,
            delay: config.frames.delay,
            fresh: config.run.fresh,
            backfill_window: config.run.backfill_window,
            max_frames: config.run.max_frames,
            max_wait: config.run.retry_max.max(config.run.max_retry_after),
        }
    }
}

/// What the ledger says, read just before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Delivered spans `[start, end)`, sorted, non-overlapping.
    pub spans: Vec<(Epoch, Epoch)>,
    /// Frame rows that are not delivered.
    pub open: Vec<OpenFrame>,
    /// Delivered frames whose re-check is due, oldest first.
    pub due_rechecks: Vec<Epoch>,
    /// Seconds the SS's clock is a little behind ours: new frames are eligible by its clock.
    pub ss_behind: i64,
}

/// Which half of the job a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Push what is staged, then pull and push missing frames.
    Run,
    /// Pull missing frames and stage them; push nothing.
    Pull,
    /// Push what is staged; pull nothing.
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The frame's records are staged: push what is left (crash recovery, retries).
    Push(Epoch),
    /// The frame is missing: pull it (and, in a run, push it).
    Pull(Epoch),
    /// The frame is delivered and due for a re-check: pull it again and push what is new.
    Recheck(Epoch),
    /// The frame is delivered, and an operator asked for it again (`backfill --redeliver`):
    /// pull it and push every record, with the same Idempotency-Keys as the first time.
    Redeliver(Epoch),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Step::Push(_) => "push",
            Step::Pull(_) => "pull",
            Step::Recheck(_) => "re-check",
            Step::Redeliver(_) => "re-deliver",
        };
        write!(f, "{what:<10} {}", crate::frames::rfc3339(self.start()))
    }
}

impl Step {
    pub fn start(self) -> Epoch {
        match self {
            Step::Push(s) | Step::Pull(s) | Step::Recheck(s) | Step::Redeliver(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The end of the last eligible frame.
    pub horizon: Epoch,
    /// Missing frames left for later runs: over the budget, waiting for a retry, or outside the
    /// backfill window.
    pub deferred: u64,
    pub outside_window: bool,
}

pub fn plan(settings: &Settings, facts: &Facts, now: Epoch, scope: Scope) -> Plan {
    let size = settings.size.seconds();
    let horizon = eligible_until(settings.size, now - facts.ss_behind, settings.delay);
    let reference = settings.reference;
    let fresh_from = settings.size.align_down(horizon - settings.fresh).max(reference);
    let budget = settings.max_frames;
    let pulls = scope != Scope::Push && horizon > reference;
    let due = |f: &OpenFrame| due(f, now, settings.max_wait);
    let resumes: Vec<Epoch> = if scope == Scope::Pull { Vec::new() } else { resumable(facts, &due).collect() };
    let gaps = if pulls { gaps(&facts.spans, reference, horizon) } else { Vec::new() };
    // Frames with a row that cannot be pulled now: staged, or failed and waiting for its retry.
    let blocked: HashSet<Epoch> =
        facts.open.iter().filter(|f| f.state != FrameState::Missing || !due(f)).map(|f| f.start).collect();
    let pullable = |from, to| frames_in(&gaps, from, to, size).filter(|s| !blocked.contains(s));

    // 1. Fresh frames, staged or missing, in time order; the newest win when they exceed the budget.
    let mut steps: Vec<Step> = resumes.iter().filter(|&&s| s >= fresh_from).map(|&s| Step::Push(s)).collect();
    steps.extend(pullable(fresh_from, horizon).map(Step::Pull));
    steps.sort_by_key(|s| s.start());
    steps.drain(..steps.len().saturating_sub(budget));
    // 2. Older staged frames (crash recovery, retries): those that failed least first, then the
    //    oldest, so frames whose records the RS keeps failing (each run stops pushing after two
    //    failures in a row) never starve the others.
    let room = budget - steps.len();
    let failures: HashMap<Epoch, i64> = facts.open.iter().map(|f| (f.start, f.attempts)).collect();
    let mut older: Vec<Epoch> = resumes.iter().copied().filter(|&s| s < fresh_from).collect();
    older.sort_by_key(|s| (failures[s], *s));
    steps.extend(older.into_iter().take(room).map(Step::Push));
    // 3. Re-checks that are due — at most half the room left when old gaps wait, so failing
    //    or numerous re-checks never starve the gaps.
    let outside_window = !in_window(settings.backfill_window, now);
    if pulls {
        let room = budget - steps.len();
        let gaps_wait = !outside_window && pullable(reference, fresh_from).next().is_some();
        let room = if gaps_wait { room.div_ceil(2) } else { room };
        steps.extend(facts.due_rechecks.iter().take(room).map(|&s| Step::Recheck(s)));
    }
    // 4. The oldest gaps, inside the backfill window: frames that failed before get at most a
    //    quarter of the room first, so frames the SS keeps refusing (history it no longer has)
    //    never starve the others; then frames never tried; then more retries if room is left.
    //    Retries go in the order they came due — those that failed for a passing reason before
    //    those the SS refused — so none waits behind a stream of newer failures.
    if pulls && !outside_window {
        let room = budget - steps.len();
        let failed: HashSet<Epoch> =
            facts.open.iter().filter(|f| f.state == FrameState::Missing).map(|f| f.start).collect();
        let mut retries: Vec<&OpenFrame> = facts
            .open
            .iter()
            .filter(|f| f.state == FrameState::Missing && due(f) && (reference..fresh_from).contains(&f.start))
            .collect();
        retries.sort_by_key(|f| (f.refused, f.next_attempt.map_or(Epoch::MIN, |t| t.min(now)), f.start));
        let retries: Vec<Epoch> = retries.into_iter().map(|f| f.start).collect();
        let untried: Vec<Epoch> = pullable(reference, fresh_from).filter(|s| !failed.contains(s)).take(room).collect();
        let first = retries.len().min(room.div_ceil(4));
        let taken = untried.len().min(room - first);
        let more = (room - first - taken).min(retries.len() - first);
        let mut old: Vec<Epoch> = retries[..first + more].iter().chain(&untried[..taken]).copied().collect();
        old.sort_unstable();
        steps.extend(old.into_iter().map(Step::Pull));
    }
    let missing: u64 = gaps.iter().map(|(s, e)| ((e - s) / size) as u64).sum();
    let pulled = steps.iter().filter(|s| matches!(s, Step::Pull(_))).count() as u64;
    Plan { steps, horizon, deferred: missing.saturating_sub(pulled), outside_window }
}

/// A backfill by hand: every frame of `[from, to)` up to the horizon, in time order — staged
/// frames pushed, missing ones pulled (retry times and the backfill window do not apply to an
/// operator), delivered ones skipped, or pulled and sent again when `redeliver` is set.
pub fn backfill(
    size: FrameSize,
    facts: &Facts,
    from: Epoch,
    to: Epoch,
    now: Epoch,
    delay: i64,
    redeliver: bool,
) -> Plan {
    let horizon = eligible_until(size, now, delay);
    let staged: HashSet<Epoch> = facts
        .open
        .iter()
        .filter(|f| matches!(f.state, FrameState::Pulled | FrameState::Pushing))
        .map(|f| f.start)
        .collect();
    let delivered = |start: Epoch| facts.spans.iter().any(|&(s, e)| s <= start && start < e);
    let steps = (size.align_down(from)..to.min(horizon))
        .step_by(size.seconds() as usize)
        .filter_map(|start| match () {
            _ if staged.contains(&start) => Some(Step::Push(start)),
            _ if delivered(start) => redeliver.then_some(Step::Redeliver(start)),
            _ => Some(Step::Pull(start)),
        })
        .collect();
    Plan { steps, horizon, deferred: 0, outside_window: false }
}

/// Frames with staged records whose retry time has come, oldest first.
fn resumable<'a>(facts: &'a Facts, due: &'a dyn Fn(&OpenFrame) -> bool) -> impl Iterator<Item = Epoch> + 'a {
    facts
        .open
        .iter()
        .filter(move |f| matches!(f.state, FrameState::Pulled | FrameState::Pushing) && due(f))
        .map(|f| f.start)
}

/// A frame's retry time has come — or lies further ahead than any wait framesync sets.
fn due(frame: &OpenFrame, now: Epoch, max_wait: i64) -> bool {
    frame.next_attempt.is_none_or(|t| t <= now || t > now.saturating_add(max_wait))
}

/// The complement of the delivered spans within `[from, to)`.
pub fn gaps(spans: &[(Epoch, Epoch)], from: Epoch, to: Epoch) -> Vec<(Epoch, Epoch)> {
    let mut gaps = Vec::new();
    let mut cursor = from;
    for &(start, end) in spans {
        if end <= cursor {
            continue;
        }
        if start >= to {
            break;
        }
        if start > cursor {
            gaps.push((cursor, start));
        }
        cursor = end;
    }
    if cursor < to {
        gaps.push((cursor, to));
    }
    gaps
}

/// Frame starts inside the gaps, clipped to `[from, to)`, ascending; lazy, so a year-long gap
/// costs only the frames actually taken.
fn frames_in(gaps: &[(Epoch, Epoch)], from: Epoch, to: Epoch, size: i64) -> impl Iterator<Item = Epoch> + '_ {
    gaps.iter()
        .map(move |&(s, e)| (s.max(from), e.min(to)))
        .filter(|(s, e)| s < e)
        .flat_map(move |(s, e)| (s..e).step_by(size as usize))
}

fn in_window(window: Option<(u32, u32)>, now: Epoch) -> bool {
    let Some((start, end)) = window else { return true };
    let minute = (now.rem_euclid(86_400) / 60) as u32;
    if start < end { (start..end).contains(&minute) } else { minute >= start || minute < end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::parse_time;

    const MIN: i64 = 60;
    const HOUR: i64 = 3600;

    fn t(text: &str) -> Epoch {
        parse_time(text).unwrap()
    }

    fn settings(reference: &str) -> Settings {
        Settings {
            reference: t(reference),
            size: FrameSize::new(60).unwrap(),
            delay: 120,
            fresh: 10 * MIN,
            backfill_window: None,
            max_frames: 60,
            max_wait: 3600,
        }
    }

    fn open(start: Epoch, state: FrameState, next_attempt: Option<Epoch>) -> OpenFrame {
        OpenFrame { start, state, next_attempt, attempts: 1, refused: false }
    }

    fn pulls(plan: &Plan) -> Vec<Epoch> {
        plan.steps.iter().filter_map(|s| if let Step::Pull(t) = s { Some(*t) } else { None }).collect()
    }

    #[test]
    fn a_fresh_ledger_plans_every_eligible_frame_once() {
        let s = settings("2026-11-01T12:00:00Z");
        let p = plan(&s, &Facts::default(), t("2026-11-01T12:10:30Z"), Scope::Run);
        // Eligible until 12:08 (12:10:30 - 2m, aligned down): frames 12:00..12:07.
        assert_eq!(p.horizon, t("2026-11-01T12:08:00Z"));
        assert_eq!(pulls(&p), (0..8).map(|i| t("2026-11-01T12:00:00Z") + i * MIN).collect::<Vec<_>>());
        assert_eq!(p.deferred, 0);
    }

    #[test]
    fn nothing_is_planned_when_everything_is_delivered() {
        let s = settings("2026-11-01T12:00:00Z");
        let facts = Facts {
            spans: vec![(t("2026-11-01T12:00:00Z"), t("2026-11-01T12:08:00Z"))],
            open: vec![],
            ..Facts::default()
        };
        let p = plan(&s, &facts, t("2026-11-01T12:10:30Z"), Scope::Run);
        assert!(p.steps.is_empty());
    }

    #[test]
    fn fresh_frames_staged_or_missing_come_first_then_older_staged_frames_then_old_gaps() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 14;
        let old_staged = t("2026-11-01T03:00:00Z");
        let fresh_staged = t("2026-11-01T11:55:00Z");
        let facts = Facts {
            open: vec![open(old_staged, FrameState::Pushing, None), open(fresh_staged, FrameState::Pulled, None)],
            ..Facts::default()
        };
        let p = plan(&s, &facts, t("2026-11-01T12:02:00Z"), Scope::Run);
        assert_eq!(p.steps[0], Step::Pull(t("2026-11-01T11:50:00Z")));
        assert_eq!(p.steps[5], Step::Push(fresh_staged), "in time order among the fresh frames");
        assert_eq!(p.steps[9], Step::Pull(t("2026-11-01T11:59:00Z")));
        assert_eq!(p.steps[10], Step::Push(old_staged));
        assert_eq!(p.steps[11..], [0, 1, 2].map(|i| Step::Pull(t("2026-11-01T00:00:00Z") + i * MIN)));
        assert!(!p.steps.contains(&Step::Pull(old_staged)) && !p.steps.contains(&Step::Pull(fresh_staged)));
    }

    /// Pins a staged frame starved behind two whose records the RS always failed: they went
    /// first, oldest first, and two failures in a row stopped every run's pushes.
    #[test]
    fn older_staged_frames_that_failed_least_go_first() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 3;
        let [a, b, c] = [3, 4, 5].map(|h| t("2026-11-01T00:00:00Z") + h * 3600);
        let mut open = [a, b, c].map(|f| open(f, FrameState::Pushing, None));
        open[0].attempts = 12;
        open[1].attempts = 12;
        let facts = Facts { open: open.to_vec(), ..Facts::default() };
        let p = plan(&s, &facts, t("2026-11-01T12:02:00Z"), Scope::Push);
        assert_eq!(p.steps, vec![Step::Push(c), Step::Push(a), Step::Push(b)]);
    }

    #[test]
    fn staged_frames_are_pushed_even_when_the_budget_is_full_of_fresh_frames_later() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 2;
        let staged = t("2026-11-01T03:00:00Z");
        let facts = Facts { open: vec![open(staged, FrameState::Pushing, None)], ..Facts::default() };
        let p = plan(&s, &facts, t("2026-11-01T12:02:00Z"), Scope::Push);
        assert_eq!(p.steps, vec![Step::Push(staged)], "push has no fresh pulls to compete with");
    }

    #[test]
    fn the_freshest_frames_come_before_the_oldest_gaps_and_the_budget_holds() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 15;
        let now = t("2026-11-01T12:02:00Z");
        let p = plan(&s, &Facts::default(), now, Scope::Run);
        let got = pulls(&p);
        assert_eq!(got.len(), 15);
        // The 10 fresh frames (11:50..11:59) first, then the 5 oldest (00:00..00:04).
        assert_eq!(got[0], t("2026-11-01T11:50:00Z"));
        assert_eq!(got[9], t("2026-11-01T11:59:00Z"));
        assert_eq!(got[10..], [0, 1, 2, 3, 4].map(|i| t("2026-11-01T00:00:00Z") + i * MIN));
        assert_eq!(p.deferred, 12 * 60 - 15);
    }

    #[test]
    fn when_fresh_frames_exceed_the_budget_the_newest_win() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 3;
        let p = plan(&s, &Facts::default(), t("2026-11-01T12:02:00Z"), Scope::Run);
        assert_eq!(pulls(&p), [57, 58, 59].map(|m| t("2026-11-01T11:00:00Z") + m * MIN));
    }

    #[test]
    fn old_gaps_wait_for_the_backfill_window_but_fresh_frames_do_not() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.backfill_window = Some((22 * 60, 6 * 60));
        let noon = plan(&s, &Facts::default(), t("2026-11-01T12:02:00Z"), Scope::Run);
        assert!(noon.outside_window);
        assert_eq!(pulls(&noon).len(), 10);
        assert!(pulls(&noon).iter().all(|&f| f >= t("2026-11-01T11:50:00Z")));
        let night = plan(&s, &Facts::default(), t("2026-11-01T23:02:00Z"), Scope::Run);
        assert!(!night.outside_window);
        assert_eq!(pulls(&night).len(), 60);
    }

    #[test]
    fn a_failed_frame_waits_for_its_retry_time() {
        let s = settings("2026-11-01T12:00:00Z");
        let f = t("2026-11-01T12:01:00Z");
        let now = t("2026-11-01T12:10:30Z");
        let waiting =
            Facts { spans: vec![], open: vec![open(f, FrameState::Missing, Some(now + 30))], ..Facts::default() };
        assert!(!pulls(&plan(&s, &waiting, now, Scope::Run)).contains(&f));
        let due = Facts { spans: vec![], open: vec![open(f, FrameState::Missing, Some(now))], ..Facts::default() };
        assert!(pulls(&plan(&s, &due, now, Scope::Run)).contains(&f));
        let pushing_later =
            Facts { spans: vec![], open: vec![open(f, FrameState::Pushing, Some(now + 30))], ..Facts::default() };
        let p = plan(&s, &pushing_later, now, Scope::Run);
        assert!(!p.steps.iter().any(|st| st.start() == f), "neither pushed nor pulled again");
    }

    /// Pins starving gaps: old frames the SS refuses for good (history it no longer keeps) came
    /// first in every run, and three failures stopped the pulls before any other gap.
    #[test]
    fn old_frames_that_keep_failing_take_at_most_a_quarter_of_the_room_before_untried_gaps() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 18; // 10 fresh frames, 8 for old gaps
        let now = t("2026-11-01T12:02:00Z");
        let failed: Vec<OpenFrame> =
            (0..100).map(|i| open(t("2026-11-01T00:00:00Z") + i * MIN, FrameState::Missing, Some(now))).collect();
        let p = plan(&s, &Facts { open: failed, ..Facts::default() }, now, Scope::Run);
        let old: Vec<Epoch> = pulls(&p).into_iter().filter(|&f| f < t("2026-11-01T11:50:00Z")).collect();
        assert_eq!(old.len(), 8);
        let retried = old.iter().filter(|&&f| f < t("2026-11-01T01:40:00Z")).count();
        assert_eq!(retried, 2, "a quarter of the room: {old:?}");
        assert_eq!(old[2], t("2026-11-01T01:40:00Z"), "then the oldest frames never tried");
    }

    #[test]
    fn among_old_frames_that_failed_those_the_ss_refused_are_retried_last() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 14; // 10 fresh frames, 4 for old gaps: one retry first
        let now = t("2026-11-01T12:02:00Z");
        let mut open: Vec<OpenFrame> =
            (0..50).map(|i| open(t("2026-11-01T00:00:00Z") + i * MIN, FrameState::Missing, Some(now - HOUR))).collect();
        for f in &mut open {
            (f.attempts, f.refused) = (40, true); // refused for hours
        }
        let once = t("2026-11-01T05:00:00Z");
        open.push(OpenFrame {
            start: once,
            state: FrameState::Missing,
            next_attempt: Some(now),
            attempts: 1,
            refused: false,
        });
        let p = plan(&s, &Facts { open, ..Facts::default() }, now, Scope::Run);
        assert!(pulls(&p).contains(&once), "a frame that failed in an outage goes before those the SS refuses");
    }

    /// Pins a frame starved for hours (seeds 12672 and 13881 of the simulation): it failed twice in
    /// an outage, and retries went fewest failures first — behind the frames of dropped history
    /// the SS refused once, a new one every run, until the SS had dropped this frame too.
    #[test]
    fn old_frames_are_retried_in_the_order_they_came_due_so_none_starves() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 14; // 10 fresh frames, 4 for old gaps: one retry first
        let now = t("2026-11-01T12:02:00Z");
        let twice = t("2026-11-01T08:00:00Z");
        let mut open = vec![OpenFrame {
            start: twice,
            state: FrameState::Missing,
            next_attempt: Some(now - 2 * HOUR),
            attempts: 2,
            refused: false,
        }];
        // Frames that failed once since, for a passing reason and for good.
        open.extend((0..50).map(|i| OpenFrame {
            start: t("2026-11-01T00:00:00Z") + i * MIN,
            state: FrameState::Missing,
            next_attempt: Some(now - i * MIN),
            attempts: 1,
            refused: i % 2 == 0,
        }));
        let p = plan(&s, &Facts { open, ..Facts::default() }, now, Scope::Run);
        assert!(pulls(&p).contains(&twice), "the retry due longest goes first: {:?}", pulls(&p));
    }

    #[test]
    fn pull_and_push_scopes_keep_to_their_half() {
        let s = settings("2026-11-01T12:00:00Z");
        let f = t("2026-11-01T12:01:00Z");
        let facts = Facts { spans: vec![], open: vec![open(f, FrameState::Pulled, None)], ..Facts::default() };
        let now = t("2026-11-01T12:10:30Z");
        assert_eq!(plan(&s, &facts, now, Scope::Push).steps, vec![Step::Push(f)]);
        assert!(plan(&s, &facts, now, Scope::Pull).steps.iter().all(|st| matches!(st, Step::Pull(_))));
    }

    #[test]
    fn due_rechecks_come_after_the_fresh_frames_and_before_the_oldest_gaps() {
        let mut s = settings("2026-11-01T00:00:00Z");
        s.max_frames = 13;
        let recheck = t("2026-11-01T11:00:00Z");
        let facts = Facts { spans: vec![(recheck, recheck + MIN)], due_rechecks: vec![recheck], ..Facts::default() };
        let p = plan(&s, &facts, t("2026-11-01T12:02:00Z"), Scope::Run);
        assert_eq!(p.steps[9], Step::Pull(t("2026-11-01T11:59:00Z")));
        assert_eq!(p.steps[10], Step::Recheck(recheck));
        assert_eq!(p.steps[11], Step::Pull(t("2026-11-01T00:00:00Z")));
        assert_eq!(p.steps.len(), 13);
        assert!(plan(&s, &facts, t("2026-11-01T12:02:00Z"), Scope::Push).steps.is_empty(), "push pulls nothing");
    }

    #[test]
    fn a_reference_in_the_future_plans_nothing() {
        let s = settings("2026-12-01T00:00:00Z");
        assert!(plan(&s, &Facts::default(), t("2026-11-01T12:00:00Z"), Scope::Run).steps.is_empty());
    }

    #[test]
    fn frame_sizes_other_than_a_minute_plan_aligned_frames() {
        let mut s = settings("2026-11-01T12:07:00Z");
        s.size = FrameSize::new(300).unwrap();
        s.reference = s.size.align_down(s.reference);
        let p = plan(&s, &Facts::default(), t("2026-11-01T12:24:00Z"), Scope::Run);
        // 12:22 aligned to 5m is 12:20: frames 12:05, 12:10, 12:15; the last 10 minutes first.
        assert_eq!(pulls(&p), ["12:10", "12:15", "12:05"].map(|m| t(&format!("2026-11-01T{m}:00Z"))));
    }

    #[test]
    fn a_backfill_pulls_missing_frames_pushes_staged_ones_and_skips_delivered_ones_unless_asked() {
        let size = FrameSize::new(60).unwrap();
        let t0 = t("2026-11-01T00:00:00Z");
        let facts = Facts {
            spans: vec![(t0 + MIN, t0 + 3 * MIN)],
            open: vec![
                open(t0 + 3 * MIN, FrameState::Pushing, Some(i64::MAX)),
                open(t0 + 4 * MIN, FrameState::Missing, Some(i64::MAX)),
            ],
            ..Facts::default()
        };
        let now = t0 + 8 * MIN; // eligible until 00:06
        let p = backfill(size, &facts, t0 + 30, t0 + 100 * MIN, now, 120, false);
        assert_eq!(
            p.steps,
            vec![Step::Pull(t0), Step::Push(t0 + 3 * MIN), Step::Pull(t0 + 4 * MIN), Step::Pull(t0 + 5 * MIN)]
        );
        let again = backfill(size, &facts, t0, t0 + 3 * MIN, now, 120, true);
        assert_eq!(again.steps, vec![Step::Pull(t0), Step::Redeliver(t0 + MIN), Step::Redeliver(t0 + 2 * MIN)]);
    }

    #[test]
    fn gaps_are_the_complement_of_the_spans() {
        assert_eq!(gaps(&[], 0, 100), vec![(0, 100)]);
        assert_eq!(gaps(&[(0, 100)], 0, 100), vec![]);
        assert_eq!(gaps(&[(10, 20), (30, 40)], 0, 100), vec![(0, 10), (20, 30), (40, 100)]);
        assert_eq!(gaps(&[(-50, 20), (90, 200)], 0, 100), vec![(20, 90)]);
    }

    #[test]
    fn planning_a_year_with_few_holes_touches_only_the_holes() {
        let s = Settings { max_frames: 60, ..settings("2025-11-01T00:00:00Z") };
        let now = t("2026-11-01T00:00:00Z");
        let horizon = eligible_until(s.size, now, s.delay);
        // A year delivered except three single-frame holes.
        let holes = [t("2026-01-01T00:00:00Z"), t("2026-05-01T00:00:00Z"), t("2026-10-01T00:00:00Z")];
        let mut spans = vec![];
        let mut cursor = s.reference;
        for h in holes {
            spans.push((cursor, h));
            cursor = h + MIN;
        }
        spans.push((cursor, horizon));
        let p = plan(&s, &Facts { spans, ..Facts::default() }, now, Scope::Run);
        assert_eq!(pulls(&p), holes.to_vec());
    }
}
