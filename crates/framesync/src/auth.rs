//! Credentials on every request to a server: what `[source.auth]` or `[sink.auth]` configures,
//! added where a request is built ([`Auth::apply`]).
//!
//! OAuth2 (client credentials, RFC 6749 §4.4): the token is fetched on first use, kept in
//! memory only (never in the ledger, a message or the log), and fetched again before it expires
//! — `expires_in` less the smaller of 30 s and half its lifetime, counted from when the token was
//! asked for. A 401 from the server drops it ([`Auth::send_renewing`]) and the request is
//! retried once with another; a second 401 is the server's answer. Requests in flight together
//! that carried a revoked token are refused together: only the first 401 to arrive drops it, the
//! others find the token another retry already fetched, so one revocation costs one fetch.
//!
//! The token request goes through the agent of the server it authenticates to, so it has that
//! server's timeouts and TLS settings, and like every request it never follows a redirect.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::config::{AuthConfig, AuthStyle, OAuth2Config};
use crate::http;
use crate::template::encode;

/// The most taken off a token's lifetime before it is fetched again.
const MOST_MARGIN: Duration = Duration::from_secs(30);
/// The most of a token endpoint's answer that is read.
const MOST_TOKEN_BYTES: u64 = 64 * 1024;

/// Why credentials could not be had: a token endpoint that refused or could not be reached.
/// Messages name the config key and the URL, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    /// The credentials or the endpoint are wrong (a 4xx, an answer that is not a token): trying
    /// again will not help. Otherwise (unreachable, a timeout, 429, 5xx) it may.
    pub permanent: bool,
    /// The token endpoint's status, when it answered.
    pub status: Option<u16>,
}

/// The credentials of one server.
pub struct Auth {
    scheme: Scheme,
}

enum Scheme {
    None,
    /// The whole `Authorization` value.
    Header(String),
    /// The parameter's name and value, percent-encoded.
    Query(String, String),
    OAuth2(Box<OAuth2>),
}

struct OAuth2 {
    config: OAuth2Config,
    agent: ureq::Agent,
    token: Mutex<Option<Token>>,
    /// Tokens fetched so far: the next one's generation.
    fetched: AtomicU64,
}

struct Token {
    access: String,
    /// Which fetch this token came from, to tell it from a later one without comparing secrets.
    generation: u64,
    /// When to fetch another; none when the endpoint gave no lifetime (kept until a 401).
    refresh_at: Option<Instant>,
}

/// A token as the endpoint gave it.
#[derive(Debug, PartialEq, Eq)]
pub struct Granted {
    pub access: String,
    pub expires_in: Option<Duration>,
}

impl Auth {
    /// No credentials beyond the configured headers.
    pub fn none() -> Auth {
        Auth { scheme: Scheme::None }
    }

    /// The credentials `config` describes; an OAuth2 token is asked for through `agent`.
    pub fn new(config: Option<&AuthConfig>, agent: &ureq::Agent) -> Auth {
        let scheme = match config {
            None => Scheme::None,
            Some(AuthConfig::Bearer { token }) => Scheme::Header(format!("Bearer {}", token.expose())),
            Some(AuthConfig::Basic { user, password }) => {
                Scheme::Header(basic(&format!("{}:{}", user.expose(), password.expose())))
            }
            Some(AuthConfig::Query { param, key }) => Scheme::Query(encode(param), encode(key.expose())),
            Some(AuthConfig::OAuth2(config)) => Scheme::OAuth2(Box::new(OAuth2 {
                config: config.clone(),
                agent: agent.clone(),
                token: Mutex::new(None),
                fetched: AtomicU64::new(0),
            })),
        };
        Auth { scheme }
    }

    /// `request` with the credentials added; with OAuth2, a token is fetched first when there
    /// is none or it is about to expire.
    pub fn apply<B>(&self, request: ureq::RequestBuilder<B>) -> Result<ureq::RequestBuilder<B>, AuthError> {
        Ok(self.applied(request)?.0)
    }

    /// [`Auth::apply`], and the generation of the OAuth2 token the request carries.
    fn applied<B>(
        &self,
        request: ureq::RequestBuilder<B>,
    ) -> Result<(ureq::RequestBuilder<B>, Option<u64>), AuthError> {
        Ok(match &self.scheme {
            Scheme::None => (request, None),
            Scheme::Header(value) => (request.header("Authorization", value), None),
            Scheme::Query(name, value) => (request.query_raw(name, value), None),
            Scheme::OAuth2(oauth) => {
                let (access, generation) = oauth.current()?;
                (request.header("Authorization", format!("Bearer {access}")), Some(generation))
            }
        })
    }

    /// After a 401 to a request that carried the OAuth2 token of generation `carried`: whether
    /// the request is worth one retry. That token is dropped (the server revoked it, or it
    /// expired early) unless a newer one replaced it already, so the retry carries a fresh one
    /// either way; any other credentials would be sent again as they were.
    fn renew(&self, carried: Option<u64>) -> bool {
        match (&self.scheme, carried) {
            (Scheme::OAuth2(oauth), Some(generation)) => {
                oauth.forget(generation);
                true
            }
            _ => false,
        }
    }

    /// The answer to the request `send` makes, its credentials added by the [`Attempt`] it is
    /// given; after a 401 to an OAuth2 token, the answer to a second one (carrying a fresh
    /// token), whatever it is.
    pub fn send_renewing<E>(
        &self,
        send: impl Fn(&Attempt) -> Result<ureq::http::Response<ureq::Body>, E>,
    ) -> Result<ureq::http::Response<ureq::Body>, E> {
        let attempt = Attempt { auth: self, carried: Cell::new(None) };
        let response = send(&attempt)?;
        if response.status() == 401 && self.renew(attempt.carried.get()) {
            return send(&attempt);
        }
        Ok(response)
    }

    /// With OAuth2, fetches a token now (for `check`) and keeps it; none for other kinds.
    pub fn fetch_now(&self) -> Option<Result<Granted, AuthError>> {
        let Scheme::OAuth2(oauth) = &self.scheme else { return None };
        Some(oauth.fetch().map(|(token, granted)| {
            *oauth.slot() = Some(token);
            granted
        }))
    }
}

/// One request of [`Auth::send_renewing`]: adds the credentials and remembers which token they
/// held, so that a 401 drops that token and never a newer one.
pub struct Attempt<'a> {
    auth: &'a Auth,
    carried: Cell<Option<u64>>,
}

impl Attempt<'_> {
    /// [`Auth::apply`], remembering the token the request carries.
    pub fn apply<B>(&self, request: ureq::RequestBuilder<B>) -> Result<ureq::RequestBuilder<B>, AuthError> {
        let (request, carried) = self.auth.applied(request)?;
        self.carried.set(carried);
        Ok(request)
    }
}

impl OAuth2 {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token to send and its generation: the one kept, or a new one. The lock is held
    /// while fetching, so threads that need a token at once wait for one fetch.
    fn current(&self) -> Result<(String, u64), AuthError> {
        let mut slot = self.slot();
        let stale = |t: &Token| t.refresh_at.is_some_and(|at| Instant::now() >= at);
        if slot.as_ref().is_none_or(stale) {
            *slot = Some(self.fetch()?.0);
        }
        Ok(slot.as_ref().map(|t| (t.access.clone(), t.generation)).unwrap_or_default())
    }

    /// Drops the token kept if it is of generation `carried`: a 401 to an older token leaves
    /// the newer one another request's retry fetched since.
    fn forget(&self, carried: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|t| t.generation == carried) {
            *slot = None;
        }
    }

    fn fetch(&self) -> Result<(Token, Granted), AuthError> {
        let config = &self.config;
        let asked = Instant::now();
        let answer = self.post().map_err(|e| AuthError {
            message: format!("{}.token_url: POST {}: {e}", config.section, config.token_url),
            permanent: false,
            status: None,
        })?;
        let granted = read_token(config, answer)?;
        crate::redact::install_one(&granted.access);
        let refresh_at = granted.expires_in.map(|lifetime| asked + lifetime - (lifetime / 2).min(MOST_MARGIN));
        log::debug!(
            "{}: OAuth2 token fetched from {}, {}",
            config.section,
            config.token_url,
            lifetime_note(granted.expires_in)
        );
        let generation = self.fetched.fetch_add(1, Ordering::Relaxed) + 1;
        Ok((Token { access: granted.access.clone(), generation, refresh_at }, granted))
    }

    /// The token request: `grant_type=client_credentials`, the client's id and secret as the
    /// config's `auth_style` says.
    fn post(&self) -> Result<TokenAnswer, ureq::Error> {
        let config = &self.config;
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(config.scope.as_deref().map(|s| ("scope", s)));
        form.extend(config.audience.as_deref().map(|a| ("audience", a)));
        let mut request = self
            .agent
            .post(&config.token_url)
            .header("Accept", "application/json")
            .header("Content-Type", "application/x-www-form-urlencoded");
        match config.auth_style {
            AuthStyle::Basic => {
                let pair = format!("{}:{}", encode(config.client_id.expose()), encode(config.client_secret.expose()));
                request = request.header("Authorization", basic(&pair));
            }
            AuthStyle::Body => {
                form.push(("client_id", config.client_id.expose()));
                form.push(("client_secret", config.client_secret.expose()));
            }
        }
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let mut response = request.send(body.join("&"))?;
        let status = response.status().as_u16();
        let location = http::location(&response);
        let body = response.body_mut().with_config().limit(MOST_TOKEN_BYTES).read_to_string()?;
        Ok(TokenAnswer { status, body, location })
    }
}

/// What a token endpoint answered.
pub struct TokenAnswer {
    pub status: u16,
    pub body: String,
    pub location: String,
}

/// Reads a token endpoint's answer: a bearer token and its lifetime, or why there is none.
pub fn read_token(config: &OAuth2Config, answer: TokenAnswer) -> Result<Granted, AuthError> {
    let (section, url, status) = (config.section, &config.token_url, answer.status);
    let fail = |permanent: bool, why: String| AuthError {
        message: format!("{section}.token_url: POST {url}: {why}"),
        permanent,
        status: Some(status),
    };
    let json: Option<Value> = serde_json::from_str(&answer.body).ok();
    match status {
        200..=299 => {}
        300..=399 => {
            return Err(fail(
                true,
                format!(
                    "HTTP {status}, a redirect to {}: framesync never follows a redirect; put the final URL in {section}.token_url",
                    answer.location
                ),
            ));
        }
        408 | 425 | 429 | 500..=599 => {
            return Err(fail(false, format!("HTTP {status}: {}", http::excerpt(&answer.body))));
        }
        _ => {
            let error = json.as_ref().and_then(|j| j.get("error")).and_then(Value::as_str);
            let description = json.as_ref().and_then(|j| j.get("error_description")).and_then(Value::as_str);
            let said = match (error, description) {
                (Some(e), Some(d)) => format!("{e} ({})", http::excerpt(d)),
                (Some(e), None) => e.to_owned(),
                _ => http::excerpt(&answer.body),
            };
            let hint = match error {
                Some("invalid_client") | None if [400, 401].contains(&status) => {
                    format!("; check {section}.client_id, {section}.client_secret and {section}.auth_style")
                }
                Some("invalid_scope") => format!("; check {section}.scope"),
                _ => String::new(),
            };
            return Err(fail(true, format!("HTTP {status}: {said}{hint}")));
        }
    }
    let Some(json) = json else {
        return Err(fail(true, format!("HTTP {status}, an answer that is not JSON: {}", http::excerpt(&answer.body))));
    };
    let access = match json.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token.clone(),
        _ => return Err(fail(true, format!("HTTP {status}, but the answer holds no access_token"))),
    };
    match json.get("token_type") {
        None => {}
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(fail(
                true,
                format!("token_type is {other}, not \"bearer\": framesync sends bearer tokens only"),
            ));
        }
    }
    let expires_in = match json.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|s| (0.0..1e9).contains(&s)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().parse::<u32>().is_ok() => s.trim().parse::<f64>().ok(),
        Some(other) => return Err(fail(true, format!("expires_in is {other}, not a number of seconds"))),
    };
    Ok(Granted { access, expires_in: expires_in.map(Duration::from_secs_f64) })
}

/// "expires in 3600 s", for messages.
pub fn lifetime_note(expires_in: Option<Duration>) -> String {
    match expires_in {
        Some(lifetime) => format!("expires in {} s", lifetime.as_secs()),
        None => "no expiry given (kept until the server refuses it)".into(),
    }
}

fn basic(pair: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

#[cfg(test)]
mod tests;
