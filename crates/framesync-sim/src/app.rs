//! The simulator as one HTTP handler: routes each request to the SS, the RS or the control
//! endpoints, plans its faults and latency from its head, carries them out, and counts what
//! happened.

use std::thread;
use std::time::Duration;

use std::io::Read as _;

use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::auth::{Guard, Side};
use crate::capacity::{Capacity, Limits, Overloaded};
use crate::control::{self, Stats};
use crate::data::Generator;
use crate::faults::{Fault, FaultKind, Faults, Garbage, Plan};
use crate::http::{Handler, Outcome, Request, Response};
use crate::query::{self, Mood};
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
    /// How many requests the RS works on at once, and how many may wait.
    pub capacity: Capacity,
    pub stats: Stats,
    /// The credentials each side requires, and the token endpoint.
    pub guard: Guard,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Endpoint {
    SsEvents,
    RsIngest,
    RsLookup,
    RsQuery,
    ControlCheck,
    ControlFaults,
    ControlStats,
    OauthToken,
    WrongMethod,
    NotFound,
}

impl Endpoint {
    fn of(request: &Request) -> Endpoint {
        let known = [
            "/ss/events",
            "/rs/ingest",
            query::PATH,
            "/control/check",
            "/control/faults",
            "/control/stats",
            "/oauth/token",
        ];
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/ss/events") => Endpoint::SsEvents,
            ("POST", "/rs/ingest") => Endpoint::RsIngest,
            ("GET", path) if path.starts_with(LOOKUP_PREFIX) => Endpoint::RsLookup,
            ("GET" | "POST", query::PATH) => Endpoint::RsQuery,
            ("GET", "/control/check") => Endpoint::ControlCheck,
            ("POST", "/control/faults") => Endpoint::ControlFaults,
            ("GET", "/control/stats") => Endpoint::ControlStats,
            ("POST", "/oauth/token") => Endpoint::OauthToken,
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
            Endpoint::RsQuery => "rs_query",
            Endpoint::ControlCheck => "control_check",
            Endpoint::ControlFaults => "control_faults",
            Endpoint::ControlStats => "control_stats",
            Endpoint::OauthToken => "oauth_token",
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
            Endpoint::RsIngest | Endpoint::RsLookup | Endpoint::RsQuery => self.faults.next_rs(),
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
        // The RS's slot is held through its latency and its work, and given back before the
        // answer is written. An overloaded RS answers at once, and the drawn fault is not met.
        let slot = match endpoint {
            Endpoint::RsIngest | Endpoint::RsLookup | Endpoint::RsQuery => {
                match self.capacity.admit(|| self.limits()) {
                    Ok(slot) => Some(slot),
                    Err(overloaded) => return self.overloaded(endpoint, &overloaded),
                }
            }
            _ => None,
        };
        let ss_request = (endpoint == Endpoint::SsEvents).then(|| self.stats.ss_request());
        self.pause(endpoint, plan.delay);
        let outcome = match plan.fault {
            Some((kind, fault)) => {
                self.stats.fault(kind);
                self.faulty(endpoint, request, fault)
            }
            None => Outcome::Respond(self.dispatch(endpoint, request)),
        };
        drop((slot, ss_request));
        let mut outcome = outcome;
        if endpoint == Endpoint::SsEvents
            && let Some(response) = outcome.response_mut()
        {
            response.set_date(self.ss_now_ms());
        }
        let status = outcome.status();
        log::debug!("{} {} -> {status:?}", request.method, request.path);
        self.stats.request(endpoint.name(), status);
        outcome
    }
}

impl App {
    fn limits(&self) -> Limits {
        let settings = self.faults.settings();
        Limits { capacity: settings.rs_capacity, queue: settings.rs_queue }
    }

    /// 503 with `Retry-After: 1`, as a server whose queue is full sheds load.
    fn overloaded(&self, endpoint: Endpoint, overloaded: &Overloaded) -> Outcome {
        let Overloaded { in_service, queued } = overloaded;
        let message = format!("the RS is over capacity: {in_service} requests in service and {queued} queued");
        self.stats.request(endpoint.name(), Some(503));
        Outcome::Respond(Response::error(503, message).with_header("Retry-After", "1"))
    }

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
        let side = match endpoint {
            Endpoint::SsEvents => Some(Side::Ss),
            Endpoint::RsIngest | Endpoint::RsLookup => Some(Side::Rs),
            _ => None,
        };
        if let Some(refusal) = side.and_then(|side| self.guard.refuse(side, request)) {
            return refusal;
        }
        match endpoint {
            Endpoint::SsEvents => self.ss.events(request, self.ss_now_ms()),
            Endpoint::RsIngest => self.ingest(request),
            Endpoint::RsLookup => self.lookup(request),
            Endpoint::RsQuery => self.query(request),
            Endpoint::ControlCheck => self.check(request),
            Endpoint::ControlFaults => self.set_faults(request),
            Endpoint::ControlStats => self.stats_json(),
            Endpoint::OauthToken => self.guard.token(request),
            Endpoint::WrongMethod => Response::error(405, "method not allowed"),
            Endpoint::NotFound => Response::error(404, format!("no such endpoint: {}", request.path)),
        }
    }

    /// Takes a JSON or NDJSON (`Content-Type: application/x-ndjson`) body, gzipped or not
    /// (`Content-Encoding`). A text answer (ClickHouse-like) goes as `text/plain`.
    fn ingest(&self, request: &Request) -> Response {
        let key = request.header("idempotency-key");
        let body = match decoded(request) {
            Ok(body) => body,
            Err(response) => return response,
        };
        let ndjson = request.header("content-type").is_some_and(|t| t.starts_with("application/x-ndjson"));
        match self.rs.ingest_as(key, &body, ndjson, now_ms()) {
            Ok(reply) => {
                let response = match &reply.body {
                    Value::String(text) => Response::new(reply.status, "text/plain", text.clone().into_bytes()),
                    body => Response::json(reply.status, body),
                };
                if reply.replayed { response.with_header("Idempotent-Replayed", "true") } else { response }
            }
            Err(e) => internal_error(e.context("storing records in the RS database")),
        }
    }

    fn lookup(&self, request: &Request) -> Response {
        let encoded = &request.path[LOOKUP_PREFIX.len()..];
        let Ok(uid) = percent_decode_str(encoded).decode_utf8() else {
            return Response::error(400, "the UID in the path is not UTF-8");
        };
        let lies = self.faults.settings().rs_lookup_lies;
        match self.rs.count(&uid).map(|n| if lies { n.max(1) } else { n }) {
            Ok(0) => Response::error(404, format!("no record with UID {uid}")),
            Ok(count) => Response::json(200, &json!({ "uid": uid, "count": count })),
            Err(e) => internal_error(e.context("looking a UID up in the RS database")),
        }
    }

    fn query(&self, request: &Request) -> Response {
        let settings = self.faults.settings();
        let mood = Mood { lies: settings.rs_lookup_lies, unreadable: settings.rs_lookup_unreadable };
        match query::answer(&self.rs, request, mood) {
            Ok(Ok(answer)) => Response::json(200, &answer),
            Ok(Err(message)) => Response::error(400, message),
            Err(e) => internal_error(e.context("looking UIDs up in the RS database")),
        }
    }

    fn check(&self, request: &Request) -> Response {
        let range = match control::check_range(request, &self.generator) {
            Ok(range) => range,
            Err(message) => return Response::error(400, message),
        };
        match self.rs.uid_counts() {
            Ok(stored) => {
                // What the SS has served by now, by its own clock.
                let report = control::compare(&self.generator, range, self.ss_now_ms(), &stored);
                Response::json(200, &json!(report))
            }
            Err(e) => internal_error(e.context("reading the RS database")),
        }
    }

    /// The request and fault counters, and the RS's capacity counters under `rs_capacity`.
    fn stats_json(&self) -> Response {
        let mut stats = self.stats.to_json();
        stats["rs_capacity"] = json!(self.capacity.stats());
        Response::json(200, &stats)
    }

    fn set_faults(&self, request: &Request) -> Response {
        match self.faults.update(|settings| control::apply_fault_query(request, settings)) {
            Ok(settings) => {
                self.capacity.limits_changed();
                Response::json(200, &json!(settings))
            }
            Err(message) => Response::error(400, message),
        }
    }

    /// The SS's clock, `ss_clock_skew_secs` off the real one: what it has and what its `Date` says.
    fn ss_now_ms(&self) -> i64 {
        now_ms() + self.faults.settings().ss_clock_skew_secs * 1000
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

/// The request body, inflated if it came gzipped; an answer for an encoding the RS cannot read.
fn decoded(request: &Request) -> Result<std::borrow::Cow<'_, [u8]>, Response> {
    match request.header("content-encoding").map(str::trim) {
        None | Some("identity") => Ok(request.body.as_slice().into()),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut body = Vec::new();
            match flate2::read::GzDecoder::new(request.body.as_slice()).read_to_end(&mut body) {
                Ok(_) => Ok(body.into()),
                Err(e) => Err(Response::error(400, format!("Content-Encoding: gzip, but the body is not gzip: {e}"))),
            }
        }
        Some(other) => Err(Response::error(415, format!("Content-Encoding {other:?} is not supported; gzip is"))),
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
mod tests;
