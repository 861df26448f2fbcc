//! The simulator as one HTTP handler: routes each request to the SS, the RS or the control
//! endpoints, plans its faults and latency from its head, carries them out, and counts what
//! happened.

use std::thread;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::control::{self, Stats};
use crate::data::Generator;
use crate::faults::{Fault, FaultKind, Faults, Garbage, Plan};
use crate::http::{Handler, Outcome, Request, Response};
use crate::rs::Rs;
use crate::ss::Ss;

const LOOKUP_PREFIX: &str = "/rs/ingest/";
/// What a proxy in the way might answer instead of the SS's JSON.
const HTML_PAGE: &str = "<html><head><title>Service Unavailable</title></head>\
                         <body><h1>The upstream server is not responding</h1></body></html>\n";

pub struct App {
    pub generator: Generator,
    pub ss: Ss,
    pub rs: Rs,
    pub faults: Faults,
    pub stats: Stats,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Endpoint {
    SsEvents,
    RsIngest,
    RsLookup,
    ControlCheck,
    ControlFaults,
    ControlStats,
    WrongMethod,
    NotFound,
}

impl Endpoint {
    fn of(request: &Request) -> Endpoint {
        let known = ["/ss/events", "/rs/ingest", "/control/check", "/control/faults", "/control/stats"];
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/ss/events") => Endpoint::SsEvents,
            ("POST", "/rs/ingest") => Endpoint::RsIngest,
            ("GET", path) if path.starts_with(LOOKUP_PREFIX) => Endpoint::RsLookup,
            ("GET", "/control/check") => Endpoint::ControlCheck,
            ("POST", "/control/faults") => Endpoint::ControlFaults,
            ("GET", "/control/stats") => Endpoint::ControlStats,
            (_, path) if known.contains(&path) || path.starts_with(LOOKUP_PREFIX) => Endpoint::WrongMethod,
            _ => Endpoint::NotFound,
        }
    }

    /// The name under which `/control/stats` counts it.
    fn name(self) -> &'static str {
        match self {
            Endpoint::SsEvents => "ss_events",
            Endpoint::RsIngest => "rs_ingest",
            Endpoint::RsLookup => "rs_lookup",
            Endpoint::ControlCheck => "control_check",
            Endpoint::ControlFaults => "control_faults",
            Endpoint::ControlStats => "control_stats",
            Endpoint::WrongMethod => "method_not_allowed",
            Endpoint::NotFound => "not_found",
        }
    }
}

impl Handler for App {
    type Plan = Plan;

    /// Faults are drawn from the head, before the body is read, because a reset must come
    /// before it. RS faults apply to ingest and lookup alike: the RS is one server that fails as
    /// a whole. A downed RS resets every connection, like a crashed server, and draws nothing.
    fn plan(&self, head: &Request) -> Option<Plan> {
        let endpoint = Endpoint::of(head);
        if head.path.starts_with("/rs/") && self.faults.rs_down() {
            return self.reset(endpoint, FaultKind::RsDownClose);
        }
        let plan = match endpoint {
            Endpoint::SsEvents => self.faults.next_ss(),
            Endpoint::RsIngest | Endpoint::RsLookup => self.faults.next_rs(),
            _ => Plan::default(),
        };
        match plan.fault {
            Some((kind, Fault::Reset)) => self.reset(endpoint, kind),
            _ => Some(plan),
        }
    }

    fn handle(&self, request: &Request, plan: Plan) -> Outcome {
        let endpoint = Endpoint::of(request);
        if endpoint == Endpoint::SsEvents && request.header("authorization").is_some() {
            self.stats.ss_with_authorization();
        }
        self.pause(endpoint, plan.delay);
        let outcome = match plan.fault {
            Some((kind, fault)) => {
                self.stats.fault(kind);
                self.faulty(endpoint, request, fault)
            }
            None => Outcome::Respond(self.dispatch(endpoint, request)),
        };
        let status = outcome.status();
        log::debug!("{} {} -> {status:?}", request.method, request.path);
        self.stats.request(endpoint.name(), status);
        outcome
    }
}

impl App {
    /// Counts a connection reset after its head; `None` tells the server to drop it.
    fn reset(&self, endpoint: Endpoint, kind: FaultKind) -> Option<Plan> {
        self.stats.request(endpoint.name(), None);
        self.stats.fault(kind);
        None
    }

    /// Carries out a drawn fault; only the last four process the request.
    fn faulty(&self, endpoint: Endpoint, request: &Request, fault: Fault) -> Outcome {
        let processed = || self.dispatch(endpoint, request);
        match fault {
            // A reset never gets this far: `plan` turned it away.
            Fault::Reset | Fault::Empty => Outcome::Close,
            Fault::Status(status) => Outcome::Respond(Response::error(status, injected(endpoint, status))),
            Fault::TooManyRequests { retry_after_secs } => {
                let response = Response::error(429, injected(endpoint, 429));
                Outcome::Respond(response.with_header("Retry-After", retry_after_secs.to_string()))
            }
            Fault::Malformed(Garbage::Html) => Outcome::Respond(Response::new(200, "text/html", HTML_PAGE.into())),
            Fault::DropResponse => {
                processed();
                Outcome::Close
            }
            Fault::Truncate => Outcome::Truncate(processed()),
            Fault::Malformed(Garbage::CutJson) => Outcome::Respond(cut_in_half(processed())),
            Fault::Dribble { pause } => Outcome::Dribble(processed(), pause),
        }
    }

    fn dispatch(&self, endpoint: Endpoint, request: &Request) -> Response {
        match endpoint {
            Endpoint::SsEvents => self.ss.events(request, now_ms()),
            Endpoint::RsIngest => self.ingest(request),
            Endpoint::RsLookup => self.lookup(request),
            Endpoint::ControlCheck => self.check(request),
            Endpoint::ControlFaults => self.set_faults(request),
            Endpoint::ControlStats => Response::json(200, &self.stats.to_json()),
            Endpoint::WrongMethod => Response::error(405, "method not allowed"),
            Endpoint::NotFound => Response::error(404, format!("no such endpoint: {}", request.path)),
        }
    }

    fn ingest(&self, request: &Request) -> Response {
        let key = request.header("idempotency-key");
        match self.rs.ingest(key, &request.body, now_ms()) {
            Ok(reply) if reply.replayed => {
                Response::json(reply.status, &reply.body).with_header("Idempotent-Replayed", "true")
            }
            Ok(reply) => Response::json(reply.status, &reply.body),
            Err(e) => internal_error(e.context("storing records in the RS database")),
        }
    }

    fn lookup(&self, request: &Request) -> Response {
        let encoded = &request.path[LOOKUP_PREFIX.len()..];
        let Ok(uid) = percent_decode_str(encoded).decode_utf8() else {
            return Response::error(400, "the UID in the path is not UTF-8");
        };
        match self.rs.count(&uid) {
            Ok(0) => Response::error(404, format!("no record with UID {uid}")),
            Ok(count) => Response::json(200, &json!({ "uid": uid, "count": count })),
            Err(e) => internal_error(e.context("looking a UID up in the RS database")),
        }
    }

    fn check(&self, request: &Request) -> Response {
        let range = match control::check_range(request, &self.generator) {
            Ok(range) => range,
            Err(message) => return Response::error(400, message),
        };
        match self.rs.uid_counts() {
            Ok(stored) => {
                let report = control::compare(&self.generator, range, now_ms(), &stored);
                Response::json(200, &json!(report))
            }
            Err(e) => internal_error(e.context("reading the RS database")),
        }
    }

    fn set_faults(&self, request: &Request) -> Response {
        match self.faults.update(|settings| control::apply_fault_query(request, settings)) {
            Ok(settings) => Response::json(200, &json!(settings)),
            Err(message) => Response::error(400, message),
        }
    }

    /// Sleeps the injected latency, counted per side.
    fn pause(&self, endpoint: Endpoint, delay: Duration) {
        if !delay.is_zero() {
            let kind = if endpoint == Endpoint::SsEvents { FaultKind::SsDelay } else { FaultKind::RsDelay };
            self.stats.fault(kind);
            thread::sleep(delay);
        }
    }
}

/// A 200 with the first half of the answer's body, and a Content-Length that matches the cut.
fn cut_in_half(response: Response) -> Response {
    let mut body = response.body;
    body.truncate(body.len() / 2);
    Response::new(200, "application/json", body)
}

fn injected(endpoint: Endpoint, status: u16) -> String {
    let side = if endpoint == Endpoint::SsEvents { "SS" } else { "RS" };
    format!("injected fault: the {side} answers {status}")
}

/// The client learns of the failure through the 500; the log tells the operator why.
fn internal_error(error: anyhow::Error) -> Response {
    log::error!("{error:#}");
    Response::error(500, format!("{error:#}"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
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
            stats: Stats::new(),
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
        let keys: Vec<(String, String)> = served
            .iter()
            .map(|r| (r["created_at"].as_str().unwrap().into(), r["id"].as_str().unwrap().into()))
            .collect();
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
}
