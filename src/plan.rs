//! Planning: which frames a run works on, as a pure function of (settings, ledger facts, now).
//! The plan is sorted and deterministic, so it can be printed with `--dry-run` and tested as
//! a table. Its cost grows with the number of holes, never with the length of the horizon.

use std::collections::HashSet;

use crate::frames::{Epoch, FrameSize, eligible_until};
use crate::ledger::{FrameState, OpenFrame};

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
}

/// What the ledger says, read just before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Delivered spans `[start, end)`, sorted, non-overlapping.
    pub spans: Vec<(Epoch, Epoch)>,
    /// Frame rows that are not delivered.
    pub open: Vec<OpenFrame>,
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
}

impl Step {
    pub fn start(self) -> Epoch {
        match self {
            Step::Push(s) | Step::Pull(s) => s,
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
    let horizon = eligible_until(settings.size, now, settings.delay);
    let budget = settings.max_frames;
    let mut steps = Vec::new();
    if scope != Scope::Pull {
        steps.extend(resumable(facts, now).map(Step::Push).take(budget));
    }
    let mut plan = Plan { steps, horizon, deferred: 0, outside_window: false };
    if scope != Scope::Push {
        plan_pulls(settings, facts, now, &mut plan);
    }
    plan
}

/// Frames with staged records whose retry time has come, oldest first.
fn resumable(facts: &Facts, now: Epoch) -> impl Iterator<Item = Epoch> + '_ {
    facts
        .open
        .iter()
        .filter(move |f| matches!(f.state, FrameState::Pulled | FrameState::Pushing) && due(f, now))
        .map(|f| f.start)
}

fn due(frame: &OpenFrame, now: Epoch) -> bool {
    frame.next_attempt.is_none_or(|t| t <= now)
}

/// Adds missing frames: the fresh ones first, then the oldest gaps, within the budget.
fn plan_pulls(settings: &Settings, facts: &Facts, now: Epoch, plan: &mut Plan) {
    let size = settings.size.seconds();
    let (reference, horizon) = (settings.reference, plan.horizon);
    if horizon <= reference {
        return;
    }
    // Frames with a row that is not pullable now: staged, or failed and waiting for its retry.
    let blocked: HashSet<Epoch> =
        facts.open.iter().filter(|f| f.state != FrameState::Missing || !due(f, now)).map(|f| f.start).collect();
    let gaps = gaps(&facts.spans, reference, horizon);
    let missing_total: u64 = gaps.iter().map(|(s, e)| ((e - s) / size) as u64).sum();
    let fresh_from = settings.size.align_down(horizon - settings.fresh).max(reference);
    let budget = settings.max_frames.saturating_sub(plan.steps.len());

    let mut fresh: Vec<Epoch> = frames_in(&gaps, fresh_from, horizon, size).filter(|s| !blocked.contains(s)).collect();
    // More fresh frames than budget: the newest matter most to a near-real-time feed.
    fresh.drain(..fresh.len().saturating_sub(budget));
    let mut pulls = fresh;
    plan.outside_window = !in_window(settings.backfill_window, now);
    if !plan.outside_window {
        let room = budget - pulls.len();
        pulls.extend(frames_in(&gaps, reference, fresh_from, size).filter(|s| !blocked.contains(s)).take(room));
    }
    plan.deferred = missing_total.saturating_sub(pulls.len() as u64);
    plan.steps.extend(pulls.into_iter().map(Step::Pull));
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
        }
    }

    fn open(start: Epoch, state: FrameState, next_attempt: Option<Epoch>) -> OpenFrame {
        OpenFrame { start, state, next_attempt }
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
        let facts = Facts { spans: vec![(t("2026-11-01T12:00:00Z"), t("2026-11-01T12:08:00Z"))], open: vec![] };
        let p = plan(&s, &facts, t("2026-11-01T12:10:30Z"), Scope::Run);
        assert!(p.steps.is_empty());
    }

    #[test]
    fn staged_frames_are_pushed_before_anything_is_pulled() {
        let s = settings("2026-11-01T12:00:00Z");
        let a = t("2026-11-01T12:03:00Z");
        let b = t("2026-11-01T12:01:00Z");
        let facts = Facts {
            spans: vec![],
            open: vec![open(b, FrameState::Pushing, None), open(a, FrameState::Pulled, Some(a))],
        };
        let p = plan(&s, &facts, t("2026-11-01T12:10:30Z"), Scope::Run);
        assert_eq!(&p.steps[..2], &[Step::Push(b), Step::Push(a)]);
        assert!(!pulls(&p).contains(&a) && !pulls(&p).contains(&b));
        assert_eq!(pulls(&p).len(), 6);
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
        let waiting = Facts { spans: vec![], open: vec![open(f, FrameState::Missing, Some(now + 30))] };
        assert!(!pulls(&plan(&s, &waiting, now, Scope::Run)).contains(&f));
        let due = Facts { spans: vec![], open: vec![open(f, FrameState::Missing, Some(now))] };
        assert!(pulls(&plan(&s, &due, now, Scope::Run)).contains(&f));
        let pushing_later = Facts { spans: vec![], open: vec![open(f, FrameState::Pushing, Some(now + 30))] };
        let p = plan(&s, &pushing_later, now, Scope::Run);
        assert!(!p.steps.iter().any(|st| st.start() == f), "neither pushed nor pulled again");
    }

    #[test]
    fn pull_and_push_scopes_keep_to_their_half() {
        let s = settings("2026-11-01T12:00:00Z");
        let f = t("2026-11-01T12:01:00Z");
        let facts = Facts { spans: vec![], open: vec![open(f, FrameState::Pulled, None)] };
        let now = t("2026-11-01T12:10:30Z");
        assert_eq!(plan(&s, &facts, now, Scope::Push).steps, vec![Step::Push(f)]);
        assert!(plan(&s, &facts, now, Scope::Pull).steps.iter().all(|st| matches!(st, Step::Pull(_))));
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
        let p = plan(&s, &Facts { spans, open: vec![] }, now, Scope::Run);
        assert_eq!(pulls(&p), holes.to_vec());
    }
}
