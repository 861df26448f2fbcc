//! What both HTTP clients share: one agent per server (connections are reused across
//! requests, hosts resolved once, TLS and the proxy as configured), and reading `Retry-After`,
//! `Date` and short excerpts of bodies for messages.

pub mod proxy;
pub mod tls;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::DateTime;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, NextTimeout, TcpConnector};

use self::proxy::NamedProxy;
use self::tls::TlsConnector;
use crate::config::Transport;
use crate::frames::Epoch;

/// How long a host's resolved addresses are reused.
const RESOLVED_FOR: Duration = Duration::from_secs(30);

/// An agent that never follows a redirect: every client gets a 3xx as the answer. A POST
/// followed through a redirect may be re-sent as a GET, and a 2xx reached that way is no
/// acknowledgement from the URL the config names. It speaks TLS as `transport` says, and goes
/// through the proxy the environment named when the config was read (and through no other).
pub fn agent(timeout: Duration, transport: &Transport) -> ureq::Agent {
    let config = builder(timeout).proxy(transport.proxy.as_ref().map(|p| p.proxy.clone())).build();
    let connector =
        ().chain(NamedProxy::new(transport.proxy.clone()))
            .chain(TcpConnector::default())
            .chain(TlsConnector::new(transport.tls.clone(), transport.why));
    ureq::Agent::with_parts(config, connector, CachingResolver::default())
}

/// The agent settings every client uses: every status is an answer to classify, not an error,
/// and a redirect is never followed — a 3xx is the answer (a POST redirected to a login page
/// must not count as delivered). No proxy: [`agent`] sets the one the config read.
pub fn config(timeout: Duration) -> ureq::config::Config {
    builder(timeout).proxy(None).build()
}

fn builder(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .no_delay(true)
        .user_agent(concat!("framesync/", env!("CARGO_PKG_VERSION")))
}

/// `request` with the configured headers (`source.headers`, `sink.headers`) added.
pub fn with_headers<B>(request: ureq::RequestBuilder<B>, headers: &[(String, String)]) -> ureq::RequestBuilder<B> {
    headers.iter().fold(request, |request, (name, value)| request.header(name, value))
}

/// A connection failure that framesync words itself (a TLS handshake, a proxy), carried
/// through ureq as [`ureq::Error::Other`].
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<Failure> for ureq::Error {
    fn from(failure: Failure) -> Self {
        ureq::Error::Other(Box::new(failure))
    }
}

/// A request's error for a message: framesync's own wording where it has one.
pub fn why(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Other(inner) if inner.is::<Failure>() => inner.to_string(),
        e => e.to_string(),
    }
}

/// ureq resolves the host before every request, even one that reuses a pooled connection,
/// and with a timeout set it resolves on a new thread: a thread per request. This resolves
/// each host once and reuses the answer for `RESOLVED_FOR`.
#[derive(Debug, Default)]
struct CachingResolver {
    resolver: DefaultResolver,
    resolved: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!("{}://{}", uri.scheme_str().unwrap_or(""), uri.authority().map_or("", |a| a.as_str()));
        let fresh = |at: &Instant| at.elapsed() < RESOLVED_FOR;
        if let Some((_, addrs)) =
            self.resolved.lock().unwrap_or_else(|e| e.into_inner()).get(&key).filter(|(at, _)| fresh(at))
        {
            return Ok(addrs.clone());
        }
        let addrs = self.resolver.resolve(uri, config, timeout)?;
        self.resolved.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// `Retry-After` as seconds or an HTTP date. A date is read against the server's own `Date`
/// header when it sent one (both come from the same clock), else against this machine's.
pub fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.timestamp();
    let now = date_header(response).unwrap_or_else(|| chrono::Utc::now().timestamp());
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// Where a 3xx points, for messages.
pub fn location<B>(response: &ureq::http::Response<B>) -> String {
    match response.headers().get("location").map(|v| v.to_str()) {
        Some(Ok(location)) => location.to_owned(),
        Some(Err(_)) => "a Location that is not text".into(),
        None => "nowhere (no Location header)".into(),
    }
}

pub fn date_header<B>(response: &ureq::http::Response<B>) -> Option<Epoch> {
    let value = response.headers().get("date")?.to_str().ok()?;
    DateTime::parse_from_rfc2822(value).ok().map(|d| d.timestamp())
}

pub fn retry_note(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", Retry-After {}s", d.as_secs())).unwrap_or_default()
}

/// The start of a body, on one line, for error messages and dead letters.
pub fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let one_line: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str, value: &str) -> ureq::http::Response<()> {
        ureq::http::Response::builder().header(name, value).body(()).unwrap()
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&response("Retry-After", "30")), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&response("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")), Some(Duration::ZERO));
        assert_eq!(retry_after(&response("Retry-After", "soon")), None);
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(" a\nb\r\n"), "a b");
        let long = "ü".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), 201);
    }
}
