//! The simulator as one HTTP handler: routes each request to the SS, the RS or the control
//! endpoints, applies the fault settings and latency on the way, and counts what happened.

use std::thread;

use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::control::{self, Stats};
use crate::data::Generator;
use crate::faults::{FaultKind, Faults, RsFault, SsFault};
use crate::http::{Handler, Outcome, Request, Response};
use crate::rs::Rs;
use crate::ss::Ss;

const LOOKUP_PREFIX: &str = "/rs/ingest/";

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
    /// A downed RS closes the connection before reading the body, like a crashed server.
    fn refuse(&self, head: &Request) -> bool {
        let refused = head.path.starts_with("/rs/") && self.faults.rs_down();
        if refused {
            self.stats.request(Endpoint::of(head).name(), None);
            self.stats.fault(FaultKind::RsDownClose);
        }
        refused
    }

    fn handle(&self, request: &Request) -> Outcome {
        let endpoint = Endpoint::of(request);
        let outcome = self.dispatch(endpoint, request);
        let status = match &outcome {
            Outcome::Respond(response) => Some(response.status),
            Outcome::Close => None,
        };
        log::debug!("{} {} -> {status:?}", request.method, request.path);
        self.stats.request(endpoint.name(), status);
        outcome
    }
}

impl App {
    fn dispatch(&self, endpoint: Endpoint, request: &Request) -> Outcome {
        let response = match endpoint {
            Endpoint::SsEvents => self.ss_events(request),
            Endpoint::RsIngest | Endpoint::RsLookup => return self.rs(endpoint, request),
            Endpoint::ControlCheck => self.check(request),
            Endpoint::ControlFaults => self.set_faults(request),
            Endpoint::ControlStats => Response::json(200, &self.stats.to_json()),
            Endpoint::WrongMethod => Response::error(405, "method not allowed"),
            Endpoint::NotFound => Response::error(404, format!("no such endpoint: {}", request.path)),
        };
        Outcome::Respond(response)
    }

    fn ss_events(&self, request: &Request) -> Response {
        self.pause();
        match self.faults.next_ss() {
            SsFault::Error => {
                self.stats.fault(FaultKind::SsError);
                Response::error(500, "injected fault: SS internal error")
            }
            SsFault::TooManyRequests { retry_after_secs } => {
                self.stats.fault(FaultKind::Ss429);
                let response = Response::error(429, "injected fault: SS overloaded");
                response.with_header("Retry-After", retry_after_secs.to_string())
            }
            SsFault::None => self.ss.events(request, now_ms()),
        }
    }

    /// RS faults apply to ingest and lookup alike: the RS is one server that fails as a whole.
    fn rs(&self, endpoint: Endpoint, request: &Request) -> Outcome {
        self.pause();
        let fault = self.faults.next_rs();
        if fault == RsFault::Error {
            self.stats.fault(FaultKind::RsError);
            return Outcome::Respond(Response::error(503, "injected fault: RS unavailable"));
        }
        let response = match endpoint {
            Endpoint::RsIngest => self.ingest(request),
            _ => self.lookup(request),
        };
        if fault == RsFault::DropResponse {
            self.stats.fault(FaultKind::RsDroppedResponse);
            return Outcome::Close;
        }
        Outcome::Respond(response)
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
        match control::parse_fault_update(request) {
            Ok(update) => Response::json(200, &json!(self.faults.update(update))),
            Err(message) => Response::error(400, message),
        }
    }

    fn pause(&self) {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            thread::sleep(latency);
        }
    }
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
    use std::io::{BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::data::generator;
    use crate::faults::no_faults;
    use crate::http;

    const NOV_1_2026: &str = "2026-11-01T00%3A00%3A00Z";
    const NOV_1_2026_PLUS_1M: &str = "2026-11-01T00%3A01%3A00Z";

    fn start(dir: &tempfile::TempDir, per_minute: u32, page_size: usize) -> SocketAddr {
        let generator = generator(1, per_minute);
        let app = App {
            ss: Ss::new(generator.clone(), page_size),
            generator,
            rs: Rs::open(&dir.path().join("rs.db"), "/id", true).unwrap(),
            faults: Faults::new(1, no_faults()),
            stats: Stats::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || http::serve(listener, Arc::new(app)));
        addr
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
        let mut stream = TcpStream::connect(addr).unwrap();
        let body = r#"{"id": "x"}"#;
        write!(stream, "POST /rs/ingest HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        assert!(http::read_response(&mut BufReader::new(&stream)).is_err());
        exchange(&mut control, "POST", "/control/faults?rs_drop_response_rate=0", "");
        assert_eq!(exchange(&mut control, "GET", "/rs/ingest/x", "").0, 200);
        let (_, stats) = exchange(&mut control, "GET", "/control/stats", "");
        assert_eq!(stats["faults"]["rs_dropped_responses"], json!(1));
        assert_eq!(stats["requests"]["rs_ingest"]["by_status"]["no_response"], json!(1));
    }

    #[test]
    fn a_downed_rs_closes_connections_and_unknown_paths_get_404() {
        let dir = tempfile::tempdir().unwrap();
        let addr = start(&dir, 5, 100);
        let mut control = TcpStream::connect(addr).unwrap();
        exchange(&mut control, "POST", "/control/faults?rs_down=1", "");
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET /rs/ingest/x HTTP/1.1\r\n\r\n").unwrap();
        assert!(http::read_response(&mut BufReader::new(&stream)).is_err());
        assert_eq!(exchange(&mut control, "GET", "/nowhere", "").0, 404);
        assert_eq!(exchange(&mut control, "DELETE", "/control/stats", "").0, 405);
    }
}
