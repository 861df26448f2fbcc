//! The simulated network and everything on it: simulated time, the model SS and RS, the dice
//! that decide each request's fault, the periods the RS (or SS) is in, the fault counters and
//! the trace. One `Net` per seed, shared (behind a mutex, on one thread) by the transport,
//! framesync's clock and the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::clock::Time;
use super::records::Catalog;
use super::rng::Rng;
use super::rs::Rs;
use super::scenario::{Period, RS_HOST, SS_HOST, Scenario};
use super::ss::Ss;
use super::trace::Trace;

/// The network of one seed.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Net>>);

impl Shared {
    pub fn new(net: Net) -> Self {
        Self(Arc::new(Mutex::new(net)))
    }

    /// The network; an in-process kill never leaves it locked, and a poisoned lock is no
    /// reason to stop a simulation that reports what went wrong.
    pub fn lock(&self) -> MutexGuard<'_, Net> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub struct Net {
    pub scenario: Arc<Scenario>,
    pub time: Time,
    pub catalog: Catalog,
    pub ss: Ss,
    pub rs: Rs,
    /// Fault dice: one stream for every request.
    pub dice: Rng,
    /// Transient faults, lost answers and in-flight deaths happen only in the fault phase.
    pub faults_on: bool,
    /// Periods in force (RS down, redirecting, ...; the SS down).
    pub periods: BTreeSet<Period>,
    /// While down, the RS refuses connections (else a load balancer answers 503).
    pub rs_down_refuses: bool,
    /// Injected faults by kind, for the summary.
    pub faults: BTreeMap<&'static str, u64>,
    /// The cron run under way (walks are tagged with it).
    pub run: usize,
    pub trace: Trace,
}

impl Net {
    pub fn new(scenario: Arc<Scenario>, catalog: Catalog, trace: Trace) -> Self {
        Self {
            time: Time::new(scenario.start),
            ss: Ss::default(),
            rs: Rs::default(),
            dice: Rng::stream(scenario.seed, 2),
            faults_on: true,
            periods: BTreeSet::new(),
            rs_down_refuses: true,
            faults: BTreeMap::new(),
            run: 0,
            catalog,
            scenario,
            trace,
        }
    }

    pub fn count(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    pub fn trace(&mut self, line: impl FnOnce() -> String) {
        self.trace.line(line);
    }

    /// Whether a connection to `host` is accepted (not while its server is down).
    pub fn accepts(&mut self, host: &str) -> bool {
        let down = match host {
            SS_HOST => self.periods.contains(&Period::SsDown).then_some("ss-refused"),
            RS_HOST => (self.rs_down_refuses && self.periods.contains(&Period::Down)).then_some("rs-refused"),
            _ => Some("unknown-host"),
        };
        if let Some(kind) = down {
            self.count(kind);
            self.trace(|| format!("    connect {host}: refused"));
        }
        down.is_none()
    }

    /// Routes a complete request to its server.
    pub fn handle(&mut self, host: &str, request: Request) -> Reply {
        let reply = match host {
            SS_HOST => super::ss::handle(self, &request),
            _ => super::rs::handle(self, &request),
        };
        self.trace(|| format!("    {} {}{} -> {}", request.method, host, request.target, reply.summary()));
        reply
    }
}

/// A request as the model servers see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The request in `bytes`, once its head and Content-Length body are complete.
    pub fn parse(bytes: &[u8]) -> Option<Request> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize =
            headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let body = bytes.get(end + 4..end + 4 + length)?;
        Some(Request { method, target, headers, body: String::from_utf8_lossy(body).into_owned() })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').filter_map(|pair| pair.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| decode(v))
    }
}

pub fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// What a model server does with a request.
#[derive(Debug)]
pub enum Reply {
    /// These bytes come back (a whole answer, or a truncated one).
    Bytes(Vec<u8>),
    /// The connection resets: no answer.
    Reset,
    /// No answer before the client gives up (the time has passed).
    Timeout,
    /// The request was processed, then this process died before the answer.
    DieInFlight,
}

impl Reply {
    fn summary(&self) -> String {
        match self {
            Reply::Bytes(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let status = text.split(' ').nth(1).unwrap_or("?").to_owned();
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let short: String = body.chars().take(160).collect();
                format!("{status} {short}")
            }
            Reply::Reset => "connection reset".into(),
            Reply::Timeout => "timeout".into(),
            Reply::DieInFlight => "processed, then the process died in flight".into(),
        }
    }
}

/// An HTTP answer's bytes, with its Content-Length.
pub fn answer(status: u16, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += &format!("content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    text.into_bytes()
}

pub fn json(status: u16, body: &str) -> Reply {
    Reply::Bytes(answer(status, &[("content-type", "application/json".into())], body))
}

pub fn html(status: u16) -> Reply {
    let page = "<!doctype html><html><body><h1>Down for maintenance</h1></body></html>";
    Reply::Bytes(answer(status, &[("content-type", "text/html".into())], page))
}

pub fn retry_after(status: u16, seconds: i64) -> Reply {
    let headers = [("content-type", "text/plain".into()), ("retry-after", seconds.to_string())];
    Reply::Bytes(answer(status, &headers, "busy, try later"))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
