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

/// Echoes the body; resets any request for `/reset`.
struct Echo;

impl Handler for Echo {
    type Plan = ();
    fn plan(&self, head: &Request) -> Option<()> {
        (head.path != "/reset").then_some(())
    }
    fn handle(&self, request: &Request, _: ()) -> Outcome {
        Outcome::Respond(Response::new(200, "text/plain", request.body.clone()))
    }
}

fn echo_server() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || serve(listener, Arc::new(Echo)));
    TcpStream::connect(addr).unwrap()
}

/// Writes each piece apart, so that the server peeks at a head that is not all there yet.
fn write_in_pieces(stream: &mut TcpStream, pieces: &[&str]) {
    for piece in pieces {
        stream.write_all(piece.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_head_in_pieces_is_served_and_can_still_be_reset() {
    let mut stream = echo_server();
    write_in_pieces(&mut stream, &["\r\nPOST /echo HTTP/1.1\r\nContent-Le", "ngth: 3\r\n\r", "\nabc"]);
    let answer = read_response(&mut BufReader::new(&stream)).unwrap();
    assert_eq!(answer, (200, b"abc".to_vec()));
    write_in_pieces(&mut stream, &["GET /reset HTTP/1.1\r\n", "\r\n"]);
    let mut buf = [0; 16];
    assert_eq!((&stream).read(&mut buf).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn a_head_over_64k_gets_431_over_the_socket() {
    let mut stream = echo_server();
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
    stream.write_all(huge.as_bytes()).unwrap();
    assert_eq!(read_response(&mut BufReader::new(&stream)).unwrap().0, 431);
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

#[test]
fn a_response_dated_by_another_clock_says_so_in_its_one_date_header() {
    let mut bytes = Vec::new();
    let mut response = Response::error(200, "ok");
    response.set_date(1_793_534_400_000 - 180_000);
    write_response(&mut bytes, &response, false).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("\r\nDate: Sun, 01 Nov 2026 11:57:00 GMT\r\n"), "{text}");
    assert_eq!(text.matches("Date: ").count(), 1, "{text}");
}
