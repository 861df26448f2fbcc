//! A minimal HTTP/1.1 server (and a one-shot GET client) on `std::net`.
//!
//! Hand-rolled on purpose: the simulator must misbehave at the byte level — process a request and
//! close the socket without answering, close a connection before reading its body, later truncate
//! or dribble bodies — and server crates hide exactly those moments. It speaks origin-form
//! targets, keep-alive and `Content-Length` bodies; chunked request bodies are refused.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Idle keep-alive connections are closed after this, so abandoned clients don't pin threads.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path as sent, still percent-encoded: a route decodes its own segments.
    pub path: String,
    /// Query parameters, percent-decoded (`+` stays `+`: clients encode a space as `%20`).
    pub query: Vec<(String, String)>,
    http10: bool,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let named = |(n, _): &&(String, String)| n.eq_ignore_ascii_case(name);
        self.headers.iter().find(named).map(|(_, v)| v.as_str())
    }

    fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        let named = move |(n, _): &&(String, String)| n.eq_ignore_ascii_case(name);
        self.headers.iter().filter(named).map(|(_, v)| v.as_str())
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told `keep-alive`.
    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        let says = |token: &str| connection.split(',').any(|t| t.trim() == token);
        if self.http10 { says("keep-alive") } else { !says("close") }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Response {
        let body = value.to_string().into_bytes();
        let headers = vec![("Content-Type".into(), "application/json".into())];
        Response { status, headers, body }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &json!({ "error": message.into() }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What a handler does with a request: answer it, or close the socket without a word.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    Close,
}

pub trait Handler: Send + Sync + 'static {
    /// Seen after the head, before the body: `true` closes the connection then and there.
    fn refuse(&self, _head: &Request) -> bool {
        false
    }
    fn handle(&self, request: &Request) -> Outcome;
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between requests: the normal end of keep-alive.
    Closed,
    Io(io::Error),
    /// Answer with this status and message, then close.
    Reject(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Closed => io::ErrorKind::UnexpectedEof.into(),
            ReadError::Io(e) => e,
            ReadError::Reject(_, message) => io::Error::new(io::ErrorKind::InvalidData, message),
        }
    }
}

fn bad(message: &str) -> ReadError {
    ReadError::Reject(400, message.into())
}

/// Accepts connections forever, one thread each.
pub fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let handler = Arc::clone(&handler);
                thread::spawn(move || {
                    if let Err(e) = serve_connection(stream, &*handler) {
                        log::debug!("connection from {peer}: {e}");
                    }
                });
            }
            // Typically out of file descriptors: back off instead of spinning.
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_connection<H: Handler>(stream: TcpStream, handler: &H) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let request = match read_request(&mut reader, |head| handler.refuse(head)) {
            Ok(Some(request)) => request,
            Ok(None) | Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Reject(status, message)) => {
                return write_response(&mut writer, &Response::error(status, message), false);
            }
        };
        let keep_alive = request.keep_alive();
        match handler.handle(&request) {
            Outcome::Close => return Ok(()),
            Outcome::Respond(response) => write_response(&mut writer, &response, keep_alive)?,
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads one request; `None` when `refuse` turned it away after its head.
fn read_request<R: BufRead>(reader: &mut R, refuse: impl Fn(&Request) -> bool) -> Result<Option<Request>, ReadError> {
    let mut request = read_head(reader)?;
    if refuse(&request) {
        return Ok(None);
    }
    request.body = read_body(reader, &request)?;
    Ok(Some(request))
}

#[cfg(test)]
pub fn parse_request(mut bytes: &[u8]) -> Result<Request, ReadError> {
    read_request(&mut bytes, |_| false).map(|r| r.expect("never refused"))
}

fn read_head<R: BufRead>(reader: &mut R) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    // RFC 9112 §2.2: a server should ignore empty lines before the request line.
    let first = loop {
        match read_line(reader, &mut budget)? {
            None => return Err(ReadError::Closed),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut request = parse_request_line(&first)?;
    loop {
        let line = read_line(reader, &mut budget)?.ok_or_else(|| bad("truncated request head"))?;
        if line.is_empty() {
            return Ok(request);
        }
        request.headers.push(parse_header(&line)?);
    }
}

/// One CRLF- (or LF-) terminated line, within what is left of the head's byte budget.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut u64) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(*budget).read_until(b'\n', &mut line)?;
    *budget -= n as u64;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        let too_large = ReadError::Reject(431, "request head too large".into());
        return Err(if *budget == 0 { too_large } else { bad("truncated request head") });
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    // Header values are opaque bytes (RFC 9110 §5.5): a non-UTF-8 line is read as Latin-1 so
    // that an odd Idempotency-Key is still a key, not a 400.
    let latin1 = |e: std::string::FromUtf8Error| e.into_bytes().iter().map(|&b| char::from(b)).collect();
    Ok(Some(String::from_utf8(line).unwrap_or_else(latin1)))
}

fn parse_request_line(line: &str) -> Result<Request, ReadError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("malformed method"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad("unsupported HTTP version")),
    };
    let (path, query) = parse_target(target)?;
    let (method, headers, body) = (method.to_string(), Vec::new(), Vec::new());
    Ok(Request { method, path, query, http10, headers, body })
}

fn parse_target(target: &str) -> Result<(String, Vec<(String, String)>), ReadError> {
    if !target.starts_with('/') {
        return Err(bad("request target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|s| s.into_owned());
    let pair = |p: &str| -> Result<(String, String), std::str::Utf8Error> {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        Ok((decode(k)?, decode(v)?))
    };
    let query: Result<Vec<_>, _> = query.split('&').filter(|p| !p.is_empty()).map(pair).collect();
    let query = query.map_err(|_| bad("query is not UTF-8"))?;
    Ok((path.to_string(), query))
}

fn parse_header(line: &str) -> Result<(String, String), ReadError> {
    let (name, value) = line.split_once(':').ok_or_else(|| bad("malformed header"))?;
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(bad("malformed header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

fn read_body<R: BufRead>(reader: &mut R, request: &Request) -> Result<Vec<u8>, ReadError> {
    if request.header("transfer-encoding").is_some() {
        let message = "chunked request bodies are not supported: send Content-Length";
        return Err(ReadError::Reject(411, message.into()));
    }
    let length = content_length(request.headers_named("content-length"))?;
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Reject(413, "request body too large".into()));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// No header means no body; repeated headers must agree (RFC 9112 §6.3).
fn content_length<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<usize, ReadError> {
    let Some(first) = values.next() else {
        return Ok(0);
    };
    if values.any(|v| v != first) {
        return Err(bad("conflicting Content-Length headers"));
    }
    first.parse().map_err(|_| bad("malformed Content-Length"))
}

fn write_response<W: Write>(writer: &mut W, response: &Response, keep_alive: bool) -> io::Result<()> {
    let status = response.status;
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!("HTTP/1.1 {status} {}\r\nDate: {date}\r\n", reason(status));
    head += &format!("Content-Length: {}\r\nConnection: {connection}\r\n", response.body.len());
    for (name, value) in &response.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&response.body);
    writer.write_all(&bytes)?;
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A one-shot `GET` with `Connection: close`; returns the status and body.
pub fn get(addr: &str, target: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    read_response(&mut BufReader::new(stream))
}

/// Reads one response: by `Content-Length` when given (so keep-alive works), else to EOF.
pub fn read_response<R: BufRead>(reader: &mut R) -> io::Result<(u16, Vec<u8>)> {
    let mut budget = MAX_HEAD_BYTES;
    let status_line = read_line(reader, &mut budget)?.ok_or(ReadError::Closed)?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| io::Error::from(bad("malformed status line")))?;
    let mut headers = Vec::new();
    while let Some(line) = read_line(reader, &mut budget)?.filter(|l| !l.is_empty()) {
        headers.push(parse_header(&line)?);
    }
    let lengths = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let mut body = Vec::new();
    match lengths.map(|(_, v)| v.as_str()).next() {
        Some(v) => body.resize(content_length(std::iter::once(v))?, 0),
        None => return reader.read_to_end(&mut body).map(|_| (status, body)),
    }
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected_status(bytes: &[u8]) -> u16 {
        match parse_request(bytes) {
            Err(ReadError::Reject(status, _)) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_parsed_from_bytes() {
        let raw = b"POST /rs/ingest?a=1&b=x%20y&c=%E2%9C%93+ HTTP/1.1\r\nHost: h\r\n\
                    idempotency-key: ev-1\r\nContent-Length: 4\r\n\r\nbody";
        let request = parse_request(raw).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/rs/ingest");
        assert_eq!(request.param("b"), Some("x y"));
        assert_eq!(request.param("c"), Some("✓+"));
        assert_eq!(request.header("Idempotency-Key"), Some("ev-1"));
        assert_eq!(request.body, b"body");
        assert!(request.keep_alive());
    }

    #[test]
    fn connection_close_and_http10_end_keep_alive() {
        let close = parse_request(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!close.keep_alive());
        let old = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!old.keep_alive());
        let old_kept = parse_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(old_kept.unwrap().keep_alive());
    }

    #[test]
    fn malformed_requests_get_400() {
        assert_eq!(rejected_status(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(rejected_status(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(rejected_status(b"GET / HTTP/2\r\n\r\n"), 400);
        assert_eq!(rejected_status(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(rejected_status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(rejected_status(b"GET / HTTP/1.1\r\nHost: h\r\n"), 400);
        let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(rejected_status(conflicting), 400);
    }

    #[test]
    fn chunked_request_bodies_are_refused_with_411() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
        assert_eq!(rejected_status(raw), 411);
    }

    #[test]
    fn raw_utf8_and_latin1_header_values_are_kept() {
        let request = parse_request("GET / HTTP/1.1\r\nK: ünï-✓\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(request.header("k"), Some("ünï-✓"));
        let request = parse_request(b"GET / HTTP/1.1\r\nK: caf\xe9\r\n\r\n").unwrap();
        assert_eq!(request.header("k"), Some("café"));
    }

    #[test]
    fn a_closed_connection_between_requests_is_not_an_error() {
        assert!(matches!(parse_request(b""), Err(ReadError::Closed)));
    }

    #[test]
    fn a_response_round_trips_through_the_client_reader() {
        let mut bytes = Vec::new();
        let response = Response::error(429, "slow down").with_header("Retry-After", "1");
        write_response(&mut bytes, &response, true).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\nDate: "));
        assert!(text.contains(" GMT\r\n") && text.contains("Connection: keep-alive\r\n"));
        let (status, body) = read_response(&mut &bytes[..]).unwrap();
        assert_eq!(status, 429);
        assert_eq!(body, br#"{"error":"slow down"}"#);
    }
}
