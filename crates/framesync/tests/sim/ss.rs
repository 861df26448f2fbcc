//! The model SS: a store of time-stamped records answering range queries, in the seed's
//! semantics — exclusive `[from, to)` or inclusive `[from, last]` bounds in rfc3339, epoch_s or
//! epoch_ms; one page, a cursor, next-page URLs (paths or absolute, in the body or a `Link`
//! header), or offset and page-number walks at the config's limit (the total stated beside the
//! records where the config stops at it, and lies about them in the fault phase, see `lie`);
//! bodies as JSON or NDJSON; pages fixed at the
//! first page (snapshot) or recomputed from what is visible at each page (live); a `Date`
//! header from its own clock, or none; transient faults; and, in some seeds, no history for
//! old frames (400, for good).
//!
//! It logs every walk through a frame's pages (which records each served, whether its last
//! page was served whole), so the checker can tell which walks framesync committed, and it
//! checks that every query covers its whole frame (invariant 4).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::DateTime;
use serde_json::Value;

use super::net::{Net, Reply, Request, answer, html, json, retry_after};
use super::scenario::{Bounds, Format, MAX_RETRY_AFTER, Paging, SS_HOST, Scenario, TIMEOUT_SECS};
use super::shapes::Stop;

/// One walk through a frame's pages, from its first page to its last or to a failure.
#[derive(Debug, Clone)]
pub struct Walk {
    pub id: u64,
    /// The frame it asked for (the `from` of its query, seconds).
    pub frame: i64,
    /// Stamps served: `[from_ms, end_ms)`.
    pub from_ms: i64,
    pub end_ms: i64,
    pub run: usize,
    /// True time of its first page.
    pub first_page_ms: i64,
    /// The records of a snapshot walk, fixed at the first page.
    snapshot: Option<Vec<usize>>,
    /// Records served by whole pages.
    pub served: BTreeSet<usize>,
    /// The last page (no next) was served whole.
    pub complete: bool,
    /// Records a lie left out of the page that should have held them, where no later page of
    /// the walk serves them (a page number past them, or a total that ends the walk before
    /// them): a loss no client can see, which the checker does not count against framesync.
    pub withheld: BTreeSet<usize>,
    pub pages: usize,
}

#[derive(Debug, Default)]
pub struct Ss {
    walks: BTreeMap<u64, Walk>,
    next_walk: u64,
    /// Queries that did not cover their frame (invariant 4), and requests framesync should
    /// never send (a cursor of another frame, a missing credential).
    pub violations: Vec<String>,
    /// Frames the SS refused because it no longer has their history.
    pub refused_history: BTreeSet<i64>,
    /// Per frame (its `from`, ms), the walk an offset or page-number walk continues.
    counted: BTreeMap<i64, u64>,
}

impl Ss {
    /// The walks that started in `run`, and forgets them.
    pub fn take_walks(&mut self, run: usize) -> Vec<Walk> {
        let ids: Vec<u64> = self.walks.iter().filter(|(_, w)| w.run <= run).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.walks.remove(&id)).collect()
    }
}

/// Answers one request to the SS.
pub fn handle(net: &mut Net, request: &Request) -> Reply {
    net.time.advance(net.dice.range(5, 120));
    if request.header("authorization") != Some("Bearer ss-token") {
        net.ss.violations.push(format!("GET {} without the SS credential", request.target));
        return json(401, r#"{"error":"unauthorized"}"#);
    }
    let Some((walk_id, offset)) = walk_of(net, request) else {
        net.ss.violations.push(format!("GET {}: a request the SS cannot read", request.target));
        return json(400, r#"{"error":"bad query"}"#);
    };
    let frame = net.ss.walks[&walk_id].frame;
    // What the SS has deleted is gone whatever its clock says: the limit is in true time.
    if let Some(limit) = net.scenario.history
        && frame * 1000 < net.time.true_ms - limit * 1000
    {
        net.count("ss-history-400");
        net.ss.refused_history.insert(frame);
        net.ss.walks.remove(&walk_id);
        return json(400, r#"{"error":"this history is no longer available"}"#);
    }
    if let Some(fault) = transient_fault(net) {
        return fault;
    }
    page(net, walk_id, offset)
}

/// The walk and offset a request continues, or a new walk for a first page.
fn walk_of(net: &mut Net, request: &Request) -> Option<(u64, usize)> {
    if let Some(token) = request.path().strip_prefix("/v1/pages/") {
        return continued(net, token, None);
    }
    if request.path() != "/v1/events" {
        return None;
    }
    let scenario = &net.scenario;
    let from_ms = read_time(&request.query("from")?, scenario.format)?;
    let end_ms = match scenario.bounds {
        Bounds::Exclusive => read_time(&request.query("to")?, scenario.format)?,
        Bounds::Inclusive => read_time(&request.query("last")?, scenario.format)? + 1,
    };
    let paging = scenario.paging;
    let position = match paging {
        Paging::Offset | Paging::Page => Some(counted_position(net, request)?),
        _ => None,
    };
    if let Some(position) = position.filter(|&p| p > 0) {
        let walk = *net.ss.counted.get(&from_ms)?;
        if !net.ss.walks.contains_key(&walk) {
            net.ss.violations.push(format!("GET {}: a later page without its walk's first", request.target));
            return None;
        }
        return Some((walk, position));
    }
    if let Some(cursor) = request.query("page_token") {
        return continued(net, &cursor, Some(from_ms));
    }
    check_coverage(net, request, from_ms, end_ms);
    let id = net.ss.next_walk;
    net.ss.next_walk += 1;
    let snapshot = (!net.scenario.live_pages).then(|| visible(net, from_ms, end_ms));
    let walk = Walk {
        id,
        first_page_ms: net.time.true_ms,
        frame: from_ms.div_euclid(1000),
        from_ms,
        end_ms,
        run: net.run,
        snapshot,
        served: BTreeSet::new(),
        complete: false,
        pages: 0,
        withheld: BTreeSet::new(),
    };
    net.ss.walks.insert(id, walk);
    net.ss.counted.insert(from_ms, id);
    Some((id, 0))
}

/// Where an offset or page-number request starts, in records; the limit must be the config's.
fn counted_position(net: &mut Net, request: &Request) -> Option<usize> {
    let shapes = &net.scenario.shapes;
    if request.query("limit").and_then(|l| l.parse().ok()) != Some(shapes.limit) {
        net.ss.violations.push(format!("GET {}: not the configured limit {}", request.target, shapes.limit));
        return None;
    }
    if net.scenario.paging == Paging::Offset {
        return request.query("offset")?.parse().ok();
    }
    let page: u64 = request.query("page")?.parse().ok()?;
    let Some(nth) = page.checked_sub(shapes.first_page) else {
        net.ss.violations.push(format!("GET {}: a page before the first ({})", request.target, shapes.first_page));
        return None;
    };
    Some(nth as usize * shapes.limit)
}

/// A later page: the token names the walk and the offset. A cursor sent with the query of
/// another frame is a client bug.
fn continued(net: &mut Net, token: &str, from_ms: Option<i64>) -> Option<(u64, usize)> {
    let token = if from_ms.is_some() { token.strip_prefix('c')? } else { token };
    let (walk, rest) = token.split_once(['-', '/'])?;
    let offset = rest.split(['+', '=']).next()?.parse().ok()?;
    let walk = u64::from_str_radix(walk, 16).ok()?;
    let known = net.ss.walks.get(&walk)?;
    if from_ms.is_some_and(|f| f != known.from_ms) {
        net.ss.violations.push(format!("a cursor of frame {} sent with another frame's query", known.frame));
        return None;
    }
    Some((walk, offset))
}

/// Invariant 4: the query covers every instant of its frame at the SS's precision.
fn check_coverage(net: &mut Net, request: &Request, from_ms: i64, end_ms: i64) {
    let size = net.scenario.size;
    let frame = from_ms.div_euclid(1000).div_euclid(size) * size;
    let frame_end_ms = (frame + size) * 1000;
    // With whole-second stamps, an inclusive range ending at the last second covers the frame.
    let needed = if net.scenario.whole_seconds { frame_end_ms - 999 } else { frame_end_ms };
    if from_ms > frame * 1000 || end_ms < needed {
        let lost = net.catalog.stamped(end_ms.max(frame * 1000), frame_end_ms).len();
        net.ss.violations.push(format!(
            "GET {} covers [{}, {}) of frame {}..{} ({lost} records stamped in what it leaves out)",
            request.target,
            framesync::frames::rfc3339_ms(from_ms),
            framesync::frames::rfc3339_ms(end_ms),
            framesync::frames::rfc3339(frame),
            framesync::frames::rfc3339(frame + size),
        ));
    }
}

/// The records stamped in `[from_ms, end_ms)` that are visible now.
fn visible(net: &Net, from_ms: i64, end_ms: i64) -> Vec<usize> {
    let now = net.time.true_ms;
    net.catalog.stamped(from_ms, end_ms).filter(|&i| net.catalog.records[i].visible_ms <= now).collect()
}

/// Reads a time in the query's format, at the precision it is written in, in ms.
fn read_time(text: &str, format: Format) -> Option<i64> {
    match format {
        Format::Rfc3339 => DateTime::parse_from_rfc3339(text).ok().map(|d| d.timestamp_millis()),
        Format::EpochS => text.parse::<i64>().ok().map(|s| s * 1000),
        Format::EpochMs => text.parse().ok(),
    }
}

/// A fault instead of an answer, drawn for this request during the fault phase.
fn transient_fault(net: &mut Net) -> Option<Reply> {
    if !net.faults_on || !net.dice.chance(net.scenario.ss_fault_rate) {
        return None;
    }
    let wait = net.dice.range(1, MAX_RETRY_AFTER);
    Some(match net.dice.below(9) {
        0 => fault(net, "ss-500", json(500, r#"{"error":"internal"}"#)),
        1 => fault(net, "ss-502", json(502, "bad gateway")),
        2 => fault(net, "ss-503", json(503, "unavailable")),
        3 => fault(net, "ss-504", json(504, "gateway timeout")),
        4 => fault(net, "ss-429-retry-after", retry_after(429, wait)),
        5 => fault(net, "ss-503-retry-after", retry_after(503, wait)),
        6 => fault(net, "ss-reset", Reply::Reset),
        7 => fault(net, "ss-html-200", html(200)),
        _ => {
            net.time.advance(TIMEOUT_SECS * 1000);
            fault(net, "ss-timeout", Reply::Timeout)
        }
    })
}

fn fault(net: &mut Net, kind: &'static str, reply: Reply) -> Reply {
    net.count(kind);
    reply
}

/// Serves the page at `offset` of a walk, sometimes truncated (then it does not count as
/// served), and in the fault phase sometimes a lie about an offset or page-number walk.
fn page(net: &mut Net, walk_id: u64, offset: usize) -> Reply {
    let walk = &net.ss.walks[&walk_id];
    let ids = match &walk.snapshot {
        Some(ids) => ids.clone(),
        None => visible(net, walk.from_ms, walk.end_ms),
    };
    let counted = matches!(net.scenario.paging, Paging::Offset | Paging::Page);
    let size = net.dice.range(net.scenario.page_size.0, net.scenario.page_size.1) as usize;
    let size = match net.scenario.paging {
        Paging::None => usize::MAX,
        Paging::Offset | Paging::Page => net.scenario.shapes.limit,
        _ => size,
    };
    let honest = offset.min(ids.len())..offset.saturating_add(size).min(ids.len());
    let mut withheld = Vec::new();
    let (served, total, reach) =
        if counted { lie(net, &ids, honest.clone(), &mut withheld) } else { (honest.clone(), ids.len(), 0) };
    let items: Vec<usize> = ids[served.clone()].to_vec();
    let next = (!counted && served.end < ids.len()).then(|| next_link(&net.scenario, walk_id, served.end));
    let body = body(net, &items, next.as_deref(), total);
    let content_type = if net.scenario.shapes.ndjson { "application/x-ndjson" } else { "application/json" };
    let mut headers = vec![("content-type", content_type.to_owned())];
    if net.scenario.paging == Paging::Link
        && let Some(next) = &next
    {
        let prev = if net.scenario.shapes.link_prev { "</v1/events?first>; rel=\"prev\", " } else { "" };
        headers.push(("link", format!("{prev}<{next}>; rel=\"next\"")));
    }
    if net.scenario.date_header {
        headers.push(("date", http_date(net.time.ss_ms().div_euclid(1000))));
    }
    if net.faults_on && net.dice.chance(net.scenario.ss_fault_rate / 3.0) {
        net.count("ss-truncated");
        let mut bytes = answer(200, &headers, &body);
        bytes.truncate(bytes.len() - body.len() / 2 - 1);
        return Reply::Bytes(bytes);
    }
    let walk = net.ss.walks.get_mut(&walk_id).expect("the walk exists");
    walk.pages += 1;
    walk.served.extend(items);
    walk.withheld.extend(withheld);
    // An offset or page-number walk is whole once a page reaches the end the SS states.
    walk.complete = if counted { reach >= ids.len().min(total) } else { next.is_none() };
    Reply::Bytes(answer(200, &headers, &body))
}

/// The page an offset or page-number walk gets for `honest`, the total it states, and how far
/// the walk has reached by the SS's word: the honest answer, or in the fault phase a lie —
/// the first page again (the offset ignored), a total off by one or two, or a short page in
/// the middle (never where the config stops at a short page). Records a lie leaves out that
/// no later page of the walk will serve are noted as withheld.
fn lie(net: &mut Net, ids: &[usize], honest: Range<usize>, withheld: &mut Vec<usize>) -> (Range<usize>, usize, usize) {
    let shapes = &net.scenario.shapes;
    let (stop, len) = (shapes.stop, ids.len());
    if !net.faults_on || !net.dice.chance(shapes.ss_lie_rate) {
        return (honest.clone(), len, honest.end);
    }
    let page_numbers = net.scenario.paging == Paging::Page;
    match net.dice.below(3) {
        0 if honest.start > 0 => {
            net.count("ss-lie-ignores-offset");
            let served = 0..(honest.end - honest.start).max(1).min(len);
            let left_out = honest.clone().filter(|p| !served.contains(p)).map(|p| ids[p]);
            withheld.extend(left_out);
            (served, len, honest.end)
        }
        1 if stop == Stop::Total => {
            net.count("ss-lie-wrong-total");
            let off = 1 + net.dice.below(2) as usize;
            let total = if net.dice.chance(0.5) { len + off } else { len.saturating_sub(off) };
            withheld.extend(ids.iter().skip(total));
            (honest.clone(), total, honest.end)
        }
        2 if stop != Stop::Short && honest.len() >= 2 && honest.end < len => {
            net.count("ss-lie-short-page");
            let end = honest.start + net.dice.range(1, honest.len() as i64 - 1) as usize;
            // The next offset starts after what was served; the next page number does not.
            if page_numbers {
                withheld.extend(ids[end..honest.end].iter().copied());
            }
            (honest.start..end, len, end)
        }
        _ => (honest.clone(), len, honest.end),
    }
}

/// Where the next page is: a cursor with characters a URL must encode, or a next URL.
fn next_link(scenario: &Scenario, walk: u64, offset: usize) -> String {
    match scenario.paging {
        Paging::Cursor => format!("c{walk:x}/{offset}+{}=", walk % 7),
        Paging::NextPath => format!("/v1/pages/{walk:x}-{offset}"),
        Paging::Link if scenario.shapes.link_path => format!("/v1/pages/{walk:x}-{offset}"),
        _ => format!("http://{SS_HOST}/v1/pages/{walk:x}-{offset}"),
    }
}

fn body(net: &Net, items: &[usize], next: Option<&str>, total: usize) -> String {
    let records: Vec<&str> = items.iter().map(|&i| net.catalog.records[i].body.as_str()).collect();
    if net.scenario.shapes.ndjson {
        return records.iter().map(|r| format!("{r}\n")).collect();
    }
    let array = format!("[{}]", records.join(","));
    if !net.scenario.items_pointer {
        return array;
    }
    if net.scenario.shapes.stop == Stop::Total && matches!(net.scenario.paging, Paging::Offset | Paging::Page) {
        return format!("{{\"items\":{array},\"total\":{total}}}");
    }
    let next =
        next.filter(|_| net.scenario.paging != Paging::Link).map_or(Value::Null, |n| Value::String(n.to_owned()));
    format!("{{\"items\":{array},\"next\":{next}}}")
}

/// An HTTP date (RFC 7231), as a `Date` header carries it.
fn http_date(t: i64) -> String {
    DateTime::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}
