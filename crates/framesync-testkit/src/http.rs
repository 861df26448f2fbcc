//! One small HTTP/1.1 client for the tests: a request per connection (`Connection: close`) over
//! `std::net`, answering the status and the raw body. The tests talk to servers on loopback
//! that they started themselves, so nothing here follows redirects, pools connections or
//! speaks TLS; an answer is taken exactly as the server sent it. [`read_request`] is the other
//! side, for the small servers tests stand up themselves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// Long enough for a `/control/check` over a big range on a busy machine.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A whole answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header of that name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn get(addr: &str, target: &str) -> Response {
    request(addr, "GET", target, b"")
}

pub fn post(addr: &str, target: &str, body: &[u8]) -> Response {
    request(addr, "POST", target, body)
}

/// Sends one request to `addr` (HOST:PORT) and reads the whole answer; panics, naming the
/// request, when the connection fails.
pub fn request(addr: &str, method: &str, target: &str, body: &[u8]) -> Response {
    exchange(addr, method, target, body).unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"))
}

fn exchange(addr: &str, method: &str, target: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_response(&mut BufReader::new(stream))
}

/// Reads a status line, headers, and the body by `Content-Length` when given, else to EOF.
fn read_response(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let status_line = read_line(reader)?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| invalid(format!("not an HTTP status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("not a header: {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.parse());
    let mut body = Vec::new();
    match length {
        Some(Ok(length)) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        Some(Err(_)) => return Err(invalid("a Content-Length that is not a number".into())),
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, headers, body })
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Reads one request from a connection: its request line (trimmed) and its body, by its
/// Content-Length. None when the connection ends before the request line or the body.
pub fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((line.trim().to_owned(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_by_its_content_length_or_to_the_end() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\nrest";
        let response = read_response(&mut &raw[..]).unwrap();
        assert_eq!((response.status, response.header("content-type")), (201, Some("application/json")));
        assert_eq!(response.json(), serde_json::json!({ "a": 1 }));
        let raw = b"HTTP/1.1 500 Internal Server Error\r\n\r\nnot json";
        let response = read_response(&mut &raw[..]).unwrap();
        assert_eq!((response.status, response.text(), response.json()), (500, "not json".into(), Value::Null));
    }

    #[test]
    fn a_connection_closed_before_any_byte_is_an_error() {
        assert_eq!(read_response(&mut &b""[..]).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(read_response(&mut &b"garbage\r\n\r\n"[..]).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }
}
