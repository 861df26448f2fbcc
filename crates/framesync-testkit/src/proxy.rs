//! An HTTP proxy on loopback for tests: it answers `CONNECT host:port` and then passes bytes
//! both ways, counting the tunnels it opened; or it refuses every `CONNECT` with one status.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A `CONNECT` proxy; `seen` keeps each request line and its `Proxy-Authorization` value.
pub struct ConnectProxy {
    pub addr: String,
    pub tunnels: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// A proxy that opens every tunnel asked for.
    pub fn start() -> ConnectProxy {
        Self::answering(None)
    }

    /// A proxy that answers every `CONNECT` with `status` (e.g. 407) and opens nothing.
    pub fn refusing(status: u16) -> ConnectProxy {
        Self::answering(Some(status))
    }

    fn answering(refusal: Option<u16>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (tunnels.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (count, log) = (count.clone(), log.clone());
                std::thread::spawn(move || tunnel(stream, refusal, &count, &log));
            }
        });
        ConnectProxy { addr, tunnels, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn tunnel(mut client: TcpStream, refusal: Option<u16>, count: &AtomicUsize, log: &Mutex<Vec<String>>) {
    let Ok(reader) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut auth = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if header.to_ascii_lowercase().starts_with("proxy-authorization:") {
            auth = header.trim().to_owned();
        }
    }
    log.lock().unwrap().push(format!("{} {auth}", line.trim()).trim().to_owned());
    let target = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    if let Some(status) = refusal {
        let _ = write!(client, "HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let Ok(upstream) = TcpStream::connect(&target) else {
        let _ = write!(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
        return;
    }
    let (Ok(mut up_write), Ok(mut up_read)) = (upstream.try_clone(), upstream.try_clone()) else { return };
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client);
        let _ = client.shutdown(Shutdown::Both);
    });
    // What the reader buffered past the CONNECT's headers belongs to the tunnel.
    let _ = up_write.write_all(reader.buffer());
    let mut rest = reader.into_inner();
    let _ = std::io::copy(&mut rest, &mut up_write);
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = down.join();
}
