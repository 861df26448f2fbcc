//! The simulator over loopback: routes, faults and what the RS stores.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::*;
use crate::data::generator;
use crate::faults::{FaultSettings, Field};
use crate::http;

const NOV_1_2026: &str = "2026-11-01T00%3A00%3A00Z";
const NOV_1_2026_PLUS_1M: &str = "2026-11-01T00%3A01%3A00Z";

const PAGE: &str = "/ss/events?from=2026-11-01T00%3A00%3A00Z&to=2026-11-01T00%3A01%3A00Z";

fn start(dir: &tempfile::TempDir, per_minute: u32, page_size: usize) -> SocketAddr {
    start_app(dir, per_minute, page_size, FaultSettings::default()).0
}

/// A simulator on loopback, and the app itself, to look into its database and counters.
fn start_app(
    dir: &tempfile::TempDir,
    per_minute: u32,
    page_size: usize,
    faults: FaultSettings,
) -> (SocketAddr, Arc<App>) {
    let generator = generator(1, per_minute);
    let app = Arc::new(App {
        ss: Ss::new(generator.clone(), page_size),
        generator,
        rs: Rs::open(&dir.path().join("rs.db"), "/id", true).unwrap(),
        faults: Faults::new(1, faults),
        capacity: Capacity::default(),
        stats: Stats::new(),
        guard: Guard::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::clone(&app);
    thread::spawn(move || http::serve(listener, served));
    (addr, app)
}

/// A simulator with one fault setting at `rate`, e.g. `("rs_4xx_rate", 1.0)`.
fn start_faulty(dir: &tempfile::TempDir, key: &str, rate: f64) -> (SocketAddr, Arc<App>) {
    let mut settings = FaultSettings { retry_after_secs: 7, dribble_delay_ms: 2, ..FaultSettings::default() };
    let Some(Field::Rate(field)) = settings.field(key) else { panic!("{key} is not a rate") };
    *field = rate;
    start_app(dir, 2, 100, settings)
}

/// What a client sees: every byte until the server closes, and the error that ended it, if any.
#[derive(Debug)]
struct Seen {
    bytes: Vec<u8>,
    error: Option<ErrorKind>,
}

impl Seen {
    fn head(&self) -> &str {
        let text = std::str::from_utf8(&self.bytes).unwrap();
        text.split_once("\r\n\r\n").map_or(text, |(head, _)| head)
    }

    fn status(&self) -> u16 {
        self.head()[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let line = self.head().lines().find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}: ")))?;
        Some(&line[name.len() + 2..])
    }

    fn body(&self) -> &[u8] {
        &self.bytes[self.head().len() + 4..]
    }

    fn content_length(&self) -> usize {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

/// Sends one request with `Connection: close` and reads until the server closes.
fn send(addr: SocketAddr, method: &str, target: &str, body: &str) -> Seen {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    stream.write_all(format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let error = stream.read_to_end(&mut bytes).err().map(|e| e.kind());
    Seen { bytes, error }
}

fn post_record(addr: SocketAddr, uid: &str) -> Seen {
    send(addr, "POST", "/rs/ingest", &json!({ "id": uid }).to_string())
}

fn fault_count(app: &App, name: &str) -> u64 {
    app.stats.to_json()["faults"][name].as_u64().unwrap()
}

/// Sends one request on a kept-alive connection and reads the answer.
fn exchange(stream: &mut TcpStream, method: &str, target: &str, body: &str) -> (u16, Value) {
    let head = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n", body.len());
    write!(stream, "{head}Idempotency-Key: k-{body}\r\n\r\n{body}").unwrap();
    let (status, body) = http::read_response(&mut BufReader::new(&*stream)).unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn paging_over_loopback_returns_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(&dir, 10, 3);
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut target = Some(format!("/ss/events?from={NOV_1_2026}&to={NOV_1_2026_PLUS_1M}"));
    let (mut served, mut pages) = (Vec::new(), 0);
    while let Some(t) = target.take() {
        let (status, body) = exchange(&mut stream, "GET", &t, "");
        assert_eq!(status, 200, "{body}");
        served.extend(body["items"].as_array().unwrap().iter().cloned());
        target = body["next"].as_str().map(String::from);
        pages += 1;
    }
    assert_eq!(pages, 4);
    let keys: Vec<(String, String)> =
        served.iter().map(|r| (r["created_at"].as_str().unwrap().into(), r["id"].as_str().unwrap().into())).collect();
    let mut expected = keys.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(keys, expected, "in order, each once");
    assert_eq!(keys.len(), 10);
}

#[test]
fn what_the_rs_stores_checks_clean_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(&dir, 5, 100);
    let mut stream = TcpStream::connect(addr).unwrap();
    let page = format!("/ss/events?from={NOV_1_2026}&to={NOV_1_2026_PLUS_1M}");
    let (_, body) = exchange(&mut stream, "GET", &page, "");
    for record in body["items"].as_array().unwrap() {
        let (status, _) = exchange(&mut stream, "POST", "/rs/ingest", &record.to_string());
        assert_eq!(status, 201);
    }
    let first = &body["items"][0];
    let (status, _) = exchange(&mut stream, "POST", "/rs/ingest", &first.to_string());
    assert_eq!(status, 201, "a replayed key answers as the first time");
    let lookup = format!("/rs/ingest/{}", first["id"].as_str().unwrap());
    assert_eq!(exchange(&mut stream, "GET", &lookup, "").0, 200);
    assert_eq!(exchange(&mut stream, "GET", "/rs/ingest/ev-0-0", "").0, 404);
    let check = format!("/control/check?from={NOV_1_2026}&to={NOV_1_2026_PLUS_1M}");
    let (status, report) = http::get(&addr.to_string(), &check).unwrap();
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(status, 200);
    assert_eq!((&report["expected"], &report["missing"]), (&json!(5), &json!(0)));
    assert_eq!((&report["extra"], &report["duplicates"]), (&json!(0), &json!(0)));
}

#[test]
fn a_dropped_response_is_stored_but_never_answered() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(&dir, 5, 100);
    let mut control = TcpStream::connect(addr).unwrap();
    let (status, _) = exchange(&mut control, "POST", "/control/faults?rs_drop_response_rate=1", "");
    assert_eq!(status, 200);
    let seen = post_record(addr, "x");
    assert_eq!((seen.bytes.len(), seen.error), (0, None), "EOF before any byte");
    exchange(&mut control, "POST", "/control/faults?rs_drop_response_rate=0", "");
    assert_eq!(exchange(&mut control, "GET", "/rs/ingest/x", "").0, 200);
    let (_, stats) = exchange(&mut control, "GET", "/control/stats", "");
    assert_eq!(stats["faults"]["rs_dropped_responses"], json!(1));
    assert_eq!(stats["requests"]["rs_ingest"]["by_status"]["no_response"], json!(1));
}

#[test]
fn a_downed_rs_resets_connections_and_unknown_paths_get_404() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(&dir, 5, 100);
    let mut control = TcpStream::connect(addr).unwrap();
    exchange(&mut control, "POST", "/control/faults?rs_down=1", "");
    let seen = send(addr, "GET", "/rs/ingest/x", "");
    assert_eq!((seen.bytes.len(), seen.error), (0, Some(ErrorKind::ConnectionReset)));
    assert_eq!(exchange(&mut control, "GET", "/nowhere", "").0, 404);
    assert_eq!(exchange(&mut control, "DELETE", "/control/stats", "").0, 405);
}

#[test]
fn the_rs_stores_nothing_it_fails_except_the_lost_response() {
    let cases = [
        ("rs_reset_rate", "rs_resets", 0),
        ("rs_empty_rate", "rs_empty_responses", 0),
        ("rs_error_rate", "rs_errors", 0),
        ("rs_5xx_rate", "rs_5xx_errors", 0),
        ("rs_4xx_rate", "rs_4xx_errors", 0),
        ("rs_429_rate", "rs_429s", 0),
        ("rs_drop_response_rate", "rs_dropped_responses", 1),
    ];
    for (key, counter, stored) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (addr, app) = start_faulty(&dir, key, 1.0);
        post_record(addr, "ev-1");
        assert_eq!(app.rs.count("ev-1").unwrap(), stored, "{key}");
        assert_eq!(fault_count(&app, counter), 1, "{key}");
        let faults = app.stats.to_json()["faults"].as_object().unwrap().clone();
        assert_eq!(faults.values().filter_map(Value::as_u64).sum::<u64>(), 1, "one fault per request: {faults:?}");
    }
}

#[test]
fn a_reset_is_an_rst_before_any_byte_for_a_get_and_a_post() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "ss_reset_rate", 1.0);
    let seen = send(addr, "GET", PAGE, "");
    assert_eq!((seen.bytes.len(), seen.error), (0, Some(ErrorKind::ConnectionReset)));
    assert_eq!(fault_count(&app, "ss_resets"), 1);
    let (addr, app) = start_faulty(&dir, "rs_reset_rate", 1.0);
    let seen = post_record(addr, "ev-1");
    assert_eq!((seen.bytes.len(), seen.error), (0, Some(ErrorKind::ConnectionReset)));
    assert_eq!(app.stats.to_json()["requests"]["rs_ingest"]["by_status"]["no_response"], json!(1));
}

#[test]
fn an_empty_response_is_eof_before_any_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "ss_empty_rate", 1.0);
    let seen = send(addr, "GET", PAGE, "");
    assert_eq!((seen.bytes.len(), seen.error), (0, None));
    assert_eq!(fault_count(&app, "ss_empty_responses"), 1);
    let (addr, _) = start_faulty(&dir, "rs_empty_rate", 1.0);
    let seen = post_record(addr, "ev-1");
    assert_eq!((seen.bytes.len(), seen.error), (0, None));
}

#[test]
fn a_truncated_body_is_half_its_content_length_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "ss_truncate_rate", 1.0);
    let seen = send(addr, "GET", PAGE, "");
    assert_eq!((seen.status(), seen.error), (200, None));
    assert!(seen.content_length() > 100);
    assert_eq!(seen.body().len(), seen.content_length() / 2);
    assert_eq!(fault_count(&app, "ss_truncated_bodies"), 1);
}

#[test]
fn a_malformed_body_is_a_whole_200_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "ss_malformed_rate", 1.0);
    let mut content_types = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let seen = send(addr, "GET", PAGE, "");
        assert_eq!((seen.status(), seen.body().len()), (200, seen.content_length()));
        let body = String::from_utf8_lossy(seen.body());
        assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
        content_types.insert(seen.header("content-type").unwrap().to_string());
    }
    assert_eq!(content_types, ["application/json", "text/html"].map(String::from).into());
    assert_eq!(fault_count(&app, "ss_malformed_bodies"), 8);
}

#[test]
fn a_dribbled_body_arrives_whole_but_slowly_and_times_out_an_impatient_client() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "ss_dribble_rate", 1.0);
    let started = Instant::now();
    let seen = send(addr, "GET", PAGE, "");
    assert_eq!((seen.status(), seen.error), (200, None));
    assert_eq!(seen.body().len(), seen.content_length());
    let page: Value = serde_json::from_slice(seen.body()).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let pieces = seen.content_length().div_ceil(http::DRIBBLE_BYTES) as u32;
    assert!(started.elapsed() >= pieces * Duration::from_millis(2), "{pieces} pieces 2ms apart");

    let patient = |s: &mut FaultSettings| {
        s.dribble_delay_ms = 200;
        Ok(())
    };
    app.faults.update(patient).unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {PAGE} HTTP/1.1\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut bytes, mut buf) = (Vec::new(), [0; 1024]);
    let error = loop {
        match stream.read(&mut buf) {
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => break e.kind(),
        }
    };
    assert!(matches!(error, ErrorKind::WouldBlock | ErrorKind::TimedOut), "{error:?}");
    let head = String::from_utf8_lossy(&bytes);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "the head, no body: {head}");
    assert_eq!(fault_count(&app, "ss_dribbled_bodies"), 2);
}

#[test]
fn injected_statuses_are_of_their_class_and_429s_carry_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[u16]); 6] = [
        ("ss_error_rate", "GET", &[500]),
        ("ss_5xx_rate", "GET", &[500, 502, 503, 504]),
        ("ss_429_rate", "GET", &[429]),
        ("rs_error_rate", "POST", &[503]),
        ("rs_4xx_rate", "POST", &[400, 422]),
        ("rs_429_rate", "POST", &[429]),
    ];
    for (key, method, statuses) in cases {
        let (addr, _) = start_faulty(&dir, key, 1.0);
        let target = if method == "GET" { PAGE } else { "/rs/ingest" };
        let seen = send(addr, method, target, r#"{"id": "ev-1"}"#);
        assert!(statuses.contains(&seen.status()), "{key}: {}", seen.head());
        let error: Value = serde_json::from_slice(seen.body()).unwrap();
        assert!(error["error"].as_str().unwrap().starts_with("injected fault"), "{key}");
        let retry_after = (seen.status() == 429).then_some("7");
        assert_eq!(seen.header("retry-after"), retry_after, "{key}");
    }
}

#[test]
fn a_gzipped_body_is_inflated_and_another_encoding_refused() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_app(&dir, 2, 100, FaultSettings::default());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"id\":\"g1\"}\n{\"id\":\"g2\"}\n").unwrap();
    let body = gz.finish().unwrap();
    let post = |encoding: &str, body: &[u8]| {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /rs/ingest HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        Seen { bytes, error: None }.status()
    };
    assert_eq!(post("gzip", &body), 201);
    assert_eq!((app.rs.count("g1").unwrap(), app.rs.count("g2").unwrap()), (1, 1));
    assert_eq!(post("gzip", b"{\"id\":\"g3\"}\n"), 400, "not gzip");
    assert_eq!(post("br", b"x"), 415);
}

#[test]
fn latency_is_slept_per_side_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let settings = FaultSettings { latency_ms: 60, rs_latency_ms: Some(0), ..FaultSettings::default() };
    let (addr, app) = start_app(&dir, 2, 100, settings);
    let started = Instant::now();
    assert_eq!(send(addr, "GET", PAGE, "").status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(post_record(addr, "ev-1").status(), 201);
    assert_eq!((fault_count(&app, "ss_delays"), fault_count(&app, "rs_delays")), (1, 0));
}

#[test]
fn a_fault_query_that_adds_up_past_one_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_faulty(&dir, "rs_4xx_rate", 0.6);
    let seen = send(addr, "POST", "/control/faults?rs_429_rate=0.5&latency_ms=5", "");
    assert_eq!(seen.status(), 400);
    assert!(String::from_utf8_lossy(seen.body()).contains("RS fault rates add up to 1.1"));
    assert_eq!(app.faults.settings().latency_ms, 0);
    assert_eq!(send(addr, "POST", "/control/faults?rs_4xx_rate=0&rs_429_rate=0.5", "").status(), 200);
}

#[test]
fn thirty_two_clients_against_capacity_four_and_queue_eight_meet_503s_and_never_five_in_service() {
    let dir = tempfile::tempdir().unwrap();
    let settings = FaultSettings { rs_latency_ms: Some(40), ..FaultSettings::default() };
    let (addr, app) = start_app(&dir, 2, 100, settings);
    assert_eq!(send(addr, "POST", "/control/faults?rs_capacity=4&rs_queue=8", "").status(), 200);
    let start = Arc::new(std::sync::Barrier::new(32));
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                (0..3).map(|n| post_record(addr, &format!("c{client}-{n}"))).collect::<Vec<_>>()
            })
        })
        .collect();
    let seen: Vec<Seen> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let overloaded: Vec<&Seen> = seen.iter().filter(|s| s.status() == 503).collect();
    assert!(!overloaded.is_empty() && overloaded.len() < seen.len(), "{} of {} were 503", overloaded.len(), seen.len());
    assert!(overloaded.iter().all(|s| s.header("retry-after") == Some("1")));
    assert!(seen.iter().all(|s| matches!(s.status(), 201 | 503)));
    let stats = send(addr, "GET", "/control/stats", "");
    let capacity: Value = serde_json::from_slice(stats.body()).unwrap();
    let capacity = &capacity["rs_capacity"];
    assert_eq!(capacity["overloaded_503s"], overloaded.len() as u64, "{capacity}");
    assert_eq!(capacity["max_in_service"], 4, "{capacity}");
    assert!(capacity["max_queued"].as_u64().unwrap() <= 8, "{capacity}");
    assert!(capacity["queue_wait_ms"].as_u64().unwrap() >= 40, "{capacity}");
    let stored = seen.len() - overloaded.len();
    assert_eq!(app.rs.uid_counts().unwrap().len(), stored, "every request let in is stored, none turned away");
}

#[test]
fn a_request_over_capacity_waits_its_turn_so_its_latency_grows() {
    let dir = tempfile::tempdir().unwrap();
    let settings = FaultSettings { rs_latency_ms: Some(50), rs_capacity: Some(1), ..FaultSettings::default() };
    let (addr, _app) = start_app(&dir, 2, 100, settings);
    let started = Instant::now();
    let first = thread::spawn(move || post_record(addr, "first").status());
    thread::sleep(Duration::from_millis(10));
    assert_eq!(post_record(addr, "second").status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
    assert_eq!(first.join().unwrap(), 201);
}

#[test]
fn a_capacity_of_zero_is_refused_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, app) = start_app(&dir, 2, 100, FaultSettings::default());
    let seen = send(addr, "POST", "/control/faults?rs_capacity=0", "");
    assert_eq!(seen.status(), 400);
    assert!(String::from_utf8_lossy(seen.body()).contains("`rs_capacity` (--rs-capacity) must be at least 1"));
    let seen = send(addr, "POST", "/control/faults?rs_queue=lots", "");
    assert!(
        String::from_utf8_lossy(seen.body()).contains("`rs_queue` must be a whole number (or `none`, for no limit)")
    );
    assert_eq!(send(addr, "POST", "/control/faults?rs_capacity=2&rs_queue=0", "").status(), 200);
    assert_eq!(send(addr, "POST", "/control/faults?rs_capacity=none", "").status(), 200);
    assert_eq!((app.faults.settings().rs_capacity, app.faults.settings().rs_queue), (None, Some(0)));
}

/// An SS 3 minutes behind has, and serves, only what its own clock has reached, says its time in
/// its `Date` header, and `/control/check` expects what it has served; a skew of 0 puts it back.
#[test]
fn an_ss_with_a_skewed_clock_serves_and_dates_by_it_and_can_be_put_right_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let settings = FaultSettings { ss_clock_skew_secs: -180, ..FaultSettings::default() };
    let (addr, app) = start_app(&dir, 10, 1000, settings);
    let now = now_ms() / 1000;
    // The last two whole minutes by the real clock: not yet reached by the SS's.
    let (from, to) = ((now / 60 - 2) * 60, (now / 60) * 60);
    let page = format!("/ss/events?from={from}&to={to}");
    let seen = send(addr, "GET", &page, "");
    assert_eq!(seen.status(), 200);
    let date = chrono::DateTime::parse_from_rfc2822(seen.header("date").unwrap()).unwrap().timestamp();
    assert!((now - 180 - date).abs() <= 5, "the SS's Date is 3 minutes behind: {date} vs {now}");
    let body: Value = serde_json::from_slice(seen.body()).unwrap();
    assert_eq!(body["items"], json!([]), "nothing stamped after the SS's clock");
    let check = |addr: SocketAddr| {
        let (_, report) = http::get(&addr.to_string(), &format!("/control/check?from={from}&to={to}")).unwrap();
        serde_json::from_slice::<Value>(&report).unwrap()["expected"].as_i64().unwrap()
    };
    assert_eq!(check(addr), 0, "the check expects what the SS has served");
    let rs = send(addr, "POST", "/rs/ingest", r#"{"id":"a"}"#);
    let rs_date = chrono::DateTime::parse_from_rfc2822(rs.header("date").unwrap()).unwrap().timestamp();
    assert!((rs_date - now).abs() <= 5, "the RS's Date is the real clock's: {rs_date} vs {now}");
    app.faults.update(|s| s.set("ss_clock_skew_secs", "0")).unwrap();
    let body: Value = serde_json::from_slice(send(addr, "GET", &page, "").body()).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 20, "two minutes of 10 records");
    assert_eq!(check(addr), 20);
}
