//! A fake HTTP server on loopback that answers every request with the same bytes, to stand for
//! an SS or an RS that answers something framesync must refuse.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A server answering every request with the same canned bytes; counts requests and keeps
/// their request lines and bodies.
pub struct Canned {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Canned {
    pub fn start(response: Vec<u8>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (requests.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((line, body)) = crate::http::read_request(&stream) else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(format!("{line}{}", String::from_utf8_lossy(&body)));
                let _ = stream.write_all(&response);
            }
        });
        Canned { addr, requests, seen }
    }

    pub fn json(status: u16, body: &str) -> Canned {
        Canned::answer(status, &[("Content-Type", "application/json")], body)
    }

    /// An answer with this status, these headers and this body.
    pub fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Canned {
        let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        Canned::start(
            format!(
                "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}
