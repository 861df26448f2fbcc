//! The in-process HTTP transport under the real ureq clients: a connector that opens a
//! "connection" to a model server, and a transport that collects the request's bytes and,
//! once the head and its Content-Length body are complete, calls the model synchronously and
//! hands its answer back to ureq — or resets, times out, or dies in flight as the model says.
//! One thread, no sockets, no DNS: the resolver answers a dummy address.

use std::io;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport};

use super::net::{Reply, Request, Shared};

/// The agent a client of one simulated process uses.
pub fn agent(shared: &Shared, timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::with_parts(framesync::http::config(timeout), SimConnector(shared.clone()), SimResolver)
}

/// Every host resolves to one dummy address: the connector routes by the URI's host.
#[derive(Debug)]
struct SimResolver;

impl Resolver for SimResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(std::net::SocketAddr::from(([192, 0, 2, 1], 80)));
        Ok(addrs)
    }
}

#[derive(Debug)]
struct SimConnector(Shared);

impl Connector for SimConnector {
    type Out = SimTransport;

    fn connect(&self, details: &ConnectionDetails, _chained: Option<()>) -> Result<Option<SimTransport>, ureq::Error> {
        let host = details.uri.host().unwrap_or_default().to_owned();
        if !self.0.lock().accepts(&host) {
            return Err(ureq::Error::Io(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")));
        }
        Ok(Some(SimTransport {
            shared: self.0.clone(),
            host,
            buffers: LazyBuffers::new(16 * 1024, 16 * 1024),
            written: Vec::new(),
            answer: None,
            read: 0,
        }))
    }
}

/// What the model answered, as the client will read it.
#[derive(Debug)]
enum Answer {
    /// These bytes, then the end of the connection.
    Bytes(Vec<u8>),
    /// No answer: the connection resets.
    Reset,
    /// No answer before the client's timeout.
    Timeout,
}

#[derive(Debug)]
pub struct SimTransport {
    shared: Shared,
    host: String,
    buffers: LazyBuffers,
    /// The request's bytes so far.
    written: Vec<u8>,
    answer: Option<Answer>,
    /// Bytes of the answer handed to ureq so far.
    read: usize,
}

impl SimTransport {
    /// Calls the model once the request is complete. An in-flight death unwinds from here,
    /// after the model has processed the request, with the shared state unlocked.
    fn deliver(&mut self) {
        let Some(request) = Request::parse(&self.written) else { return };
        self.written.clear();
        let reply = self.shared.lock().handle(&self.host, request);
        self.answer = Some(match reply {
            Reply::Bytes(bytes) => Answer::Bytes(bytes),
            Reply::Reset => Answer::Reset,
            Reply::Timeout => Answer::Timeout,
            Reply::DieInFlight => framesync::hooks::inprocess::die("in-flight"),
        });
        self.read = 0;
    }
}

impl Transport for SimTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, _timeout: NextTimeout) -> Result<(), ureq::Error> {
        let output = &self.buffers.output()[..amount];
        self.written.extend_from_slice(output);
        self.deliver();
        Ok(())
    }

    fn await_input(&mut self, _timeout: NextTimeout) -> Result<bool, ureq::Error> {
        match &self.answer {
            None => Err(ureq::Error::Io(io::Error::new(io::ErrorKind::ConnectionReset, "no request was sent"))),
            Some(Answer::Reset) => {
                Err(ureq::Error::Io(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")))
            }
            Some(Answer::Timeout) => Err(ureq::Error::Timeout(ureq::Timeout::RecvResponse)),
            Some(Answer::Bytes(bytes)) => {
                let rest = &bytes[self.read..];
                let room = self.buffers.input_append_buf();
                let n = rest.len().min(room.len());
                room[..n].copy_from_slice(&rest[..n]);
                self.buffers.input_appended(n);
                self.read += n;
                Ok(n > 0)
            }
        }
    }

    fn is_open(&mut self) -> bool {
        false
    }
}
