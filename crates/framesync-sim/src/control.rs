//! The control endpoints: `/control/check` (does the RS database hold exactly what the SS
//! serves for a range?), `/control/faults` (change fault injection at run time) and
//! `/control/stats` (request and fault counters).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use crate::data::{Generator, Range};
use crate::faults::{FaultKind, FaultSettings};
use crate::http::Request;

/// A check generates every record of its range in memory: beyond this, split the range.
pub const MAX_CHECK_RECORDS: i64 = 10_000_000;
/// How many UIDs each list of the report shows.
const LIST_LIMIT: usize = 20;

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct CheckReport {
    /// Records with a timestamp in the range that are visible now and not poison.
    pub expected: usize,
    /// Rows in the RS database whose UID belongs to the range.
    pub stored: u64,
    pub distinct: usize,
    pub missing: usize,
    pub extra: usize,
    /// Rows minus distinct UIDs.
    pub duplicates: u64,
    /// Visible poison records of the range, which the RS rejects and must not hold.
    pub rejected_poison: usize,
    pub missing_uids: Vec<String>,
    pub extra_uids: Vec<String>,
    pub duplicate_uids: Vec<String>,
}

pub fn check_range(request: &Request, generator: &Generator) -> Result<Range, String> {
    let range = Range::parse(request.param("from"), request.param("to"))?;
    let records = range.minutes().count() as i64 * i64::from(generator.per_minute);
    if records > MAX_CHECK_RECORDS {
        return Err(format!("range holds {records} records, over {MAX_CHECK_RECORDS}: split it"));
    }
    Ok(range)
}

/// Compares what the SS serves for `range` now with the RS's rows (`stored`: UID → row count).
/// A stored UID belongs to the range when it decodes to a record stamped inside it, or when it
/// decodes to nothing at all: a UID no generator made is extra wherever one looks.
pub fn compare(generator: &Generator, range: Range, now_ms: i64, stored: &HashMap<String, u64>) -> CheckReport {
    let (expected, rejected_poison) = expected_uids(generator, range, now_ms);
    let belongs = |uid: &str| generator.record_for_uid(uid).is_none_or(|r| range.contains(r.ts_ms));
    let ours: BTreeMap<&str, u64> =
        stored.iter().filter(|(uid, _)| belongs(uid)).map(|(uid, n)| (uid.as_str(), *n)).collect();
    let missing: Vec<&str> = expected.iter().map(String::as_str).filter(|u| !ours.contains_key(u)).collect();
    let extra: Vec<&str> = ours.keys().copied().filter(|u| !expected.contains(*u)).collect();
    let duplicated: Vec<&str> = ours.iter().filter(|(_, n)| **n > 1).map(|(u, _)| *u).collect();
    let rows: u64 = ours.values().sum();
    CheckReport {
        expected: expected.len(),
        stored: rows,
        distinct: ours.len(),
        missing: missing.len(),
        extra: extra.len(),
        duplicates: rows - ours.len() as u64,
        rejected_poison,
        missing_uids: first(&missing),
        extra_uids: first(&extra),
        duplicate_uids: first(&duplicated),
    }
}

/// The UIDs the RS should hold, and how many visible records are poison.
fn expected_uids(generator: &Generator, range: Range, now_ms: i64) -> (BTreeSet<String>, usize) {
    let (mut expected, mut poison) = (BTreeSet::new(), 0);
    for record in generator.records(range).filter(|r| r.visible(now_ms)) {
        if record.poison {
            poison += 1;
        } else {
            expected.insert(record.uid_text);
        }
    }
    (expected, poison)
}

fn first(uids: &[&str]) -> Vec<String> {
    uids.iter().take(LIST_LIMIT).map(|u| u.to_string()).collect()
}

/// Applies `POST /control/faults?…` to `settings`, a copy the caller keeps only on success, so
/// one bad key or value changes nothing.
pub fn apply_fault_query(request: &Request, settings: &mut FaultSettings) -> Result<(), String> {
    request.query.iter().try_for_each(|(key, value)| settings.set(key, value))
}

/// Request counts per endpoint and answer, and injected faults per kind.
pub struct Stats {
    inner: Mutex<StatsInner>,
}

#[derive(Serialize)]
struct StatsInner {
    requests: BTreeMap<&'static str, EndpointStats>,
    faults: BTreeMap<&'static str, u64>,
    /// SS requests that carried an `Authorization` header (credentials meant for another
    /// server, when this simulator stands for a second origin).
    ss_with_authorization: u64,
    /// SS requests being answered now, and the most at once: how many frames a client read
    /// concurrently.
    #[serde(skip)]
    ss_in_flight: u64,
    ss_max_in_flight: u64,
}

#[derive(Default, Serialize)]
struct EndpointStats {
    total: u64,
    /// Keyed by status code, or `no_response` when the connection was closed instead.
    by_status: BTreeMap<String, u64>,
}

impl Stats {
    /// Every fault kind starts at zero, so the JSON shape does not depend on what happened.
    pub fn new() -> Stats {
        let faults = FaultKind::ALL.iter().map(|k| (k.name(), 0)).collect();
        Stats {
            inner: Mutex::new(StatsInner {
                requests: BTreeMap::new(),
                faults,
                ss_with_authorization: 0,
                ss_in_flight: 0,
                ss_max_in_flight: 0,
            }),
        }
    }

    pub fn request(&self, endpoint: &'static str, status: Option<u16>) {
        let label = status.map_or_else(|| "no_response".to_string(), |s| s.to_string());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.requests.entry(endpoint).or_default();
        entry.total += 1;
        *entry.by_status.entry(label).or_default() += 1;
    }

    pub fn ss_with_authorization(&self) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).ss_with_authorization += 1;
    }

    /// Counts an SS request as in flight until the guard is dropped.
    pub fn ss_request(&self) -> SsInFlight<'_> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.ss_in_flight += 1;
        inner.ss_max_in_flight = inner.ss_max_in_flight.max(inner.ss_in_flight);
        SsInFlight { stats: self }
    }

    pub fn fault(&self, kind: FaultKind) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.faults.entry(kind.name()).or_default() += 1;
    }

    pub fn to_json(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::to_value(&*inner).expect("counters always serialize")
    }
}

/// An SS request being answered: [`Stats::ss_request`].
pub struct SsInFlight<'a> {
    stats: &'a Stats,
}

impl Drop for SsInFlight<'_> {
    fn drop(&mut self) {
        self.stats.inner.lock().unwrap_or_else(PoisonError::into_inner).ss_in_flight -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Generator, generator};
    use crate::http::parse_request;
    use serde_json::json;

    const NOV_1_2026_MS: i64 = 1_793_491_200_000;
    const LATER: i64 = NOV_1_2026_MS + 3_600_000;

    fn minute(m: i64) -> Range {
        Range { from_ms: NOV_1_2026_MS + m * 60_000, to_ms: NOV_1_2026_MS + (m + 1) * 60_000 }
    }

    fn stored_from(generator: &Generator, range: Range) -> HashMap<String, u64> {
        generator.records(range).filter(|r| !r.poison).map(|r| (r.uid_text, 1)).collect()
    }

    fn request(target: &str) -> Request {
        parse_request(format!("POST {target} HTTP/1.1\r\n\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn an_exact_copy_checks_clean() {
        let g = Generator { poison_fraction: 0.2, ..generator(1, 50) };
        let report = compare(&g, minute(0), LATER, &stored_from(&g, minute(0)));
        assert_eq!((report.missing, report.extra, report.duplicates), (0, 0, 0));
        assert_eq!(report.expected + report.rejected_poison, 50);
        assert_eq!(report.stored, report.expected as u64);
    }

    #[test]
    fn missing_extra_and_duplicate_uids_are_reported() {
        let g = generator(1, 10);
        let mut stored = stored_from(&g, minute(0));
        let gone = g.records(minute(0)).next().unwrap().uid_text;
        stored.remove(&gone);
        let doubled = g.records(minute(0)).nth(3).unwrap().uid_text;
        stored.insert(doubled.clone(), 3);
        stored.insert("not-ours".into(), 1);
        stored.extend(stored_from(&g, minute(1))); // another range's rows are not extra
        let report = compare(&g, minute(0), LATER, &stored);
        assert_eq!(report.missing_uids, vec![gone]);
        assert_eq!(report.extra_uids, vec!["not-ours".to_string()]);
        assert_eq!(report.duplicate_uids, vec![doubled]);
        assert_eq!((report.stored, report.distinct, report.duplicates), (12, 10, 2));
    }

    #[test]
    fn stored_poison_records_are_extra() {
        let g = Generator { poison_fraction: 0.5, ..generator(1, 10) };
        let stored = g.records(minute(0)).map(|r| (r.uid_text, 1)).collect();
        let report = compare(&g, minute(0), LATER, &stored);
        assert_eq!(report.extra, report.rejected_poison);
        assert!(report.extra > 0 && report.missing == 0);
    }

    #[test]
    fn too_large_a_check_range_is_refused() {
        let g = generator(1, 100);
        let year = request("/control/check?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z");
        assert!(check_range(&year, &g).unwrap_err().contains("split it"));
        let day = request("/control/check?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z");
        assert!(check_range(&day, &g).is_ok());
    }

    #[test]
    fn a_fault_query_sets_the_settings_it_names() {
        let mut settings = FaultSettings::default();
        let query = "/control/faults?rs_down=1&ss_5xx_rate=0.25&rs_latency_ms=30&dribble_delay_ms=5";
        apply_fault_query(&request(query), &mut settings).unwrap();
        let expected = FaultSettings {
            rs_down: true,
            ss_5xx_rate: 0.25,
            rs_latency_ms: Some(30),
            dribble_delay_ms: 5,
            ..FaultSettings::default()
        };
        assert_eq!(settings, expected);
        apply_fault_query(&request("/control/faults?rs_latency_ms=none"), &mut settings).unwrap();
        assert_eq!(settings.rs_latency_ms, None);
    }

    #[test]
    fn bad_fault_keys_and_values_are_refused_by_name() {
        for (bad, names) in [
            ("rs_down=2", "`rs_down` must be 0 or 1"),
            ("rs_error_rate=1.5", "`rs_error_rate` must be a number from 0 to 1"),
            ("latency_ms=-1", "`latency_ms` must be a whole number, not `-1`"),
            ("ss_latency_ms=soon", "(or `none`, for the shared value)"),
            ("rs_eror_rate=0.1", "unknown fault setting `rs_eror_rate`; known: rs_down, ss_reset_rate"),
        ] {
            let error = apply_fault_query(&request(&format!("/control/faults?{bad}")), &mut FaultSettings::default());
            assert!(error.as_ref().unwrap_err().contains(names), "{bad}: {error:?}");
        }
    }

    #[test]
    fn stats_count_requests_by_status_and_faults_by_kind() {
        let stats = Stats::new();
        stats.request("rs_ingest", Some(201));
        stats.request("rs_ingest", None);
        stats.fault(FaultKind::RsDroppedResponse);
        let json = stats.to_json();
        assert_eq!(json["requests"]["rs_ingest"], json!({ "total": 2, "by_status": { "201": 1, "no_response": 1 } }));
        assert_eq!(json["faults"]["rs_dropped_responses"], json!(1));
        assert_eq!(json["faults"]["ss_429s"], json!(0));
    }

    #[test]
    fn stats_keep_the_most_ss_requests_in_flight_at_once() {
        let stats = Stats::new();
        let (a, b) = (stats.ss_request(), stats.ss_request());
        drop(a);
        let c = stats.ss_request();
        drop((b, c));
        let _d = stats.ss_request();
        let json = stats.to_json();
        assert_eq!(json["ss_max_in_flight"], json!(2));
        assert!(json.get("ss_in_flight").is_none(), "only the most is reported");
    }
}
