//! A minimal HTTP/1.1 server (and a one-shot GET client) on `std::net`.
//!
//! Hand-rolled on purpose: the simulator must misbehave at the byte level — reset a connection
//! before reading its body, process a request and close the socket without answering, truncate
//! or dribble bodies — and server crates hide exactly those moments. It speaks origin-form
//! targets, keep-alive and `Content-Length` bodies; chunked request bodies are refused.
//!
//! A request head is only peeked at until the handler has planned the request: to reset, the
//! server drops the socket with the head still unread, and Linux answers a close with unread
//! bytes in the receive buffer with a TCP RST — for a bodiless GET too, which std's lack of
//! `SO_LINGER` would otherwise make impossible.

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
/// The piece of a dribbled body written at a time.
pub const DRIBBLE_BYTES: usize = 16;

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
    /// The instant its `Date` header tells (epoch milliseconds); the real clock's when unset.
    date_ms: Option<i64>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body, date_ms: None }
    }

    pub fn json(status: u16, value: &Value) -> Response {
        Response::new(status, "application/json", value.to_string().into_bytes())
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &json!({ "error": message.into() }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Its `Date` header tells `ms` (epoch milliseconds) rather than the real clock's time.
    pub fn set_date(&mut self, ms: i64) {
        self.date_ms = Some(ms);
    }
}

/// What a handler does with a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    /// Close the socket without writing a byte.
    Close,
    /// Write the head, with the full Content-Length, and the first half of the body; then close.
    Truncate(Response),
    /// Write the head, then the body `DRIBBLE_BYTES` at a time with this pause before each piece.
    Dribble(Response, Duration),
}

impl Outcome {
    /// The response its `Date` header goes with, if there is one to write.
    pub fn response_mut(&mut self) -> Option<&mut Response> {
        match self {
            Outcome::Respond(r) | Outcome::Truncate(r) | Outcome::Dribble(r, _) => Some(r),
            Outcome::Close => None,
        }
    }

    /// The status the client is sent, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Respond(r) | Outcome::Truncate(r) | Outcome::Dribble(r, _) => Some(r.status),
            Outcome::Close => None,
        }
    }
}

pub trait Handler: Send + Sync + 'static {
    /// What the handler decided about a request from its head, carried to `handle`.
    type Plan;
    /// Seen after the head, before the body: `None` resets the connection then and there.
    fn plan(&self, head: &Request) -> Option<Self::Plan>;
    fn handle(&self, request: &Request, plan: Self::Plan) -> Outcome;
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
    let mut scratch = vec![0; MAX_HEAD_BYTES as usize];
    loop {
        let (request, plan) = match next_request(&stream, &mut scratch, handler) {
            Ok(Some(next)) => next,
            // `None` is a reset: returning drops the socket with the head unread.
            Ok(None) | Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Reject(status, message)) => {
                return write_response(&mut &stream, &Response::error(status, message), false);
            }
        };
        let keep_alive = request.keep_alive();
        let outcome = handler.handle(&request, plan);
        if !carry_out(&stream, outcome, keep_alive)? {
            return Ok(());
        }
    }
}

/// Peeks at the next request's head, asks the handler for a plan, and only then consumes the
/// head and reads the body. `None` when the plan is a reset; the head is then still unread.
fn next_request<H: Handler>(
    stream: &TcpStream,
    scratch: &mut [u8],
    handler: &H,
) -> Result<Option<(Request, H::Plan)>, ReadError> {
    let (mut request, head_len) = peek_head(stream, scratch)?;
    let length = match body_length(&request) {
        Ok(length) => length,
        Err(e) => {
            // Consumed, so that closing after the rejection is a FIN that lets the answer through.
            consume(stream, scratch, head_len)?;
            return Err(e);
        }
    };
    let Some(plan) = handler.plan(&request) else {
        return Ok(None);
    };
    consume(stream, scratch, head_len)?;
    request.body = vec![0; length];
    let mut reader = stream;
    reader.read_exact(&mut request.body)?;
    Ok(Some((request, plan)))
}

/// Peeks until a whole request head is in view and parses it; returns it with the number of
/// peeked bytes that are still unread head. Only the earlier pieces of a head that arrives in
/// several are consumed here, so at least the head's last byte is always left unread.
fn peek_head(stream: &TcpStream, scratch: &mut [u8]) -> Result<(Request, usize), ReadError> {
    let mut earlier = Vec::new();
    loop {
        let n = stream.peek(scratch)?;
        if n == 0 {
            // Blank lines alone are the end of keep-alive; anything else is a head cut short.
            let blank = earlier.iter().all(|b| matches!(b, b'\r' | b'\n'));
            return Err(if blank { ReadError::Closed } else { bad("truncated request head") });
        }
        let end = if earlier.is_empty() {
            head_end(&scratch[..n])
        } else {
            head_end(&[&earlier[..], &scratch[..n]].concat()).map(|end| end - earlier.len())
        };
        if let Some(end) = end {
            earlier.extend_from_slice(&scratch[..end]);
            let parsed = read_head(&mut &earlier[..]);
            if parsed.is_err() {
                consume(stream, scratch, end)?;
            }
            return parsed.map(|request| (request, end));
        }
        consume(stream, scratch, n)?;
        earlier.extend_from_slice(&scratch[..n]);
        if earlier.len() as u64 >= MAX_HEAD_BYTES {
            return Err(ReadError::Reject(431, "request head too large".into()));
        }
    }
}

/// Where a head ends: just past the first blank line that follows a non-blank one (blank lines
/// before the request line are skipped, RFC 9112 §2.2).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let (mut line_start, mut seen_request_line) = (0, false);
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let blank = matches!(&bytes[line_start..i], b"" | b"\r");
        if blank && seen_request_line {
            return Some(i + 1);
        }
        seen_request_line |= !blank;
        line_start = i + 1;
    }
    None
}

/// Reads and discards `n` bytes the server has already peeked at.
fn consume(stream: &TcpStream, scratch: &mut [u8], n: usize) -> io::Result<()> {
    let mut reader = stream;
    reader.read_exact(&mut scratch[..n])
}

/// Writes what the handler decided; `false` when the connection must close afterwards.
fn carry_out(stream: &TcpStream, outcome: Outcome, keep_alive: bool) -> io::Result<bool> {
    let mut writer = stream;
    match outcome {
        Outcome::Respond(response) => write_response(&mut writer, &response, keep_alive)?,
        Outcome::Close => return Ok(false),
        Outcome::Truncate(response) => {
            writer.write_all(&head(&response, keep_alive))?;
            writer.write_all(&response.body[..response.body.len() / 2])?;
            return Ok(false);
        }
        Outcome::Dribble(response, pause) => {
            // Each piece leaves when written, not when Nagle's algorithm lets it.
            stream.set_nodelay(true)?;
            writer.write_all(&head(&response, keep_alive))?;
            for piece in response.body.chunks(DRIBBLE_BYTES) {
                thread::sleep(pause);
                writer.write_all(piece)?;
            }
        }
    }
    Ok(keep_alive)
}

#[cfg(test)]
pub fn parse_request(mut bytes: &[u8]) -> Result<Request, ReadError> {
    let mut request = read_head(&mut bytes)?;
    request.body = vec![0; body_length(&request)?];
    bytes.read_exact(&mut request.body)?;
    Ok(request)
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

/// The body's length as the head declares it, checked before anything else happens.
fn body_length(request: &Request) -> Result<usize, ReadError> {
    if request.header("transfer-encoding").is_some() {
        let message = "chunked request bodies are not supported: send Content-Length";
        return Err(ReadError::Reject(411, message.into()));
    }
    let length = content_length(request.headers_named("content-length"))?;
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Reject(413, "request body too large".into()));
    }
    Ok(length)
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
    let mut bytes = head(response, keep_alive);
    bytes.extend_from_slice(&response.body);
    writer.write_all(&bytes)?;
    writer.flush()
}

/// The status line and headers, with the Content-Length of the whole body.
fn head(response: &Response, keep_alive: bool) -> Vec<u8> {
    let status = response.status;
    let date_ms = response.date_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let date = chrono::DateTime::from_timestamp_millis(date_ms).unwrap_or_default().format("%a, %d %b %Y %H:%M:%S GMT");
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!("HTTP/1.1 {status} {}\r\nDate: {date}\r\n", reason(status));
    head += &format!("Content-Length: {}\r\nConnection: {connection}\r\n", response.body.len());
    for (name, value) in &response.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    head.into_bytes()
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
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
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
mod tests;
