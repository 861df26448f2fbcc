//! Credentials the simulated servers may require, and an OAuth2 token endpoint
//! (`POST /oauth/token`, client credentials) whose tokens they may require instead.
//!
//! Each side takes an exact `Authorization` value (`--ss-require-auth "Basic dXNlcjpwYXNz"`), an
//! API key in the query (`--rs-require-key api_key=k3y`), or a live token from the endpoint
//! (`--rs-require-oauth`). A token lives `--oauth-expires-in` and, with `--oauth-token-uses N`,
//! is revoked after it authorized N requests: the next request with it is answered 401, as a
//! server that revoked a token answers. With `--oauth-revoke-after N`, every token live when the
//! servers have authorized N requests in all is revoked at once, as when a client's tokens are
//! revoked mid-run: the requests then in flight with one are answered 401 together. A refused
//! request is answered 401 before anything else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::http::{Request, Response};

#[derive(Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// The SS answers 401 unless the Authorization header is exactly this.
    #[arg(long, value_name = "VALUE")]
    ss_require_auth: Option<String>,
    /// The RS (ingest and lookup) answers 401 unless the Authorization header is exactly this.
    #[arg(long, value_name = "VALUE")]
    rs_require_auth: Option<String>,
    /// The SS answers 401 unless the query holds NAME=VALUE.
    #[arg(long, value_name = "NAME=VALUE", value_parser = pair)]
    ss_require_key: Option<(String, String)>,
    /// The RS answers 401 unless the query holds NAME=VALUE.
    #[arg(long, value_name = "NAME=VALUE", value_parser = pair)]
    rs_require_key: Option<(String, String)>,
    /// The SS answers 401 unless it gets a live bearer token from /oauth/token.
    #[arg(long)]
    ss_require_oauth: bool,
    /// The RS answers 401 unless it gets a live bearer token from /oauth/token.
    #[arg(long)]
    rs_require_oauth: bool,
    /// The one client /oauth/token knows, as ID:SECRET.
    #[arg(long, value_name = "ID:SECRET", default_value = "framesync:sim-secret")]
    oauth_client: String,
    /// How long a token from /oauth/token lives, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    oauth_expires_in: u64,
    /// A token is revoked after it authorized this many requests.
    #[arg(long, value_name = "N")]
    oauth_token_uses: Option<u64>,
    /// Every live token is revoked once the servers have authorized this many requests in all.
    #[arg(long, value_name = "N")]
    oauth_revoke_after: Option<u64>,
}

fn pair(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// One side of the simulator: the SS or the RS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Ss,
    Rs,
}

/// What each side requires, and the tokens the endpoint issued.
#[derive(Default)]
pub struct Guard {
    args: AuthArgs,
    issued: AtomicU64,
    /// Requests a token authorized, on either side.
    authorized: AtomicU64,
    /// Live tokens: when each was issued and how many requests it authorized.
    tokens: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Guard {
    pub fn new(args: AuthArgs) -> Guard {
        Guard { args, ..Guard::default() }
    }

    /// A 401 when `request` lacks what `side` requires; none when it may pass.
    pub fn refuse(&self, side: Side, request: &Request) -> Option<Response> {
        let a = &self.args;
        let (header, key, oauth) = match side {
            Side::Ss => (&a.ss_require_auth, &a.ss_require_key, a.ss_require_oauth),
            Side::Rs => (&a.rs_require_auth, &a.rs_require_key, a.rs_require_oauth),
        };
        let given = request.header("authorization");
        if header.as_deref().is_some_and(|h| given != Some(h)) {
            return Some(unauthorized("missing or wrong Authorization"));
        }
        if let Some((name, value)) = key
            && !request.query.iter().any(|(n, v)| n == name && v == value)
        {
            return Some(unauthorized(&format!("missing or wrong {name}")));
        }
        if oauth {
            let token = given.and_then(|g| g.strip_prefix("Bearer ")).unwrap_or_default();
            if !self.spend(token) {
                return Some(unauthorized("invalid_token"));
            }
        }
        None
    }

    /// Whether `token` is live; counts a use, and revokes it once it has had its uses.
    fn spend(&self, token: &str) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let lifetime = Duration::from_secs(self.args.oauth_expires_in);
        let Some((issued, uses)) = tokens.get_mut(token) else { return false };
        if issued.elapsed() >= lifetime {
            tokens.remove(token);
            return false;
        }
        *uses += 1;
        if self.args.oauth_token_uses.is_some_and(|most| *uses > most) {
            tokens.remove(token);
            return false;
        }
        if self.args.oauth_revoke_after == Some(self.authorized.fetch_add(1, Ordering::SeqCst) + 1) {
            tokens.clear();
        }
        true
    }

    /// `POST /oauth/token`: a token for the known client, its id and secret in a Basic header
    /// or in the form body.
    pub fn token(&self, request: &Request) -> Response {
        let form = form(&request.body);
        let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if field("grant_type") != Some("client_credentials") {
            return Response::json(400, &json!({ "error": "unsupported_grant_type" }));
        }
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&self.args.oauth_client));
        let in_body = format!("{}:{}", field("client_id").unwrap_or_default(), field("client_secret").unwrap_or(""));
        if request.header("authorization") != Some(basic.as_str()) && in_body != self.args.oauth_client {
            let error = json!({ "error": "invalid_client", "error_description": "client authentication failed" });
            return Response::json(401, &error).with_header("WWW-Authenticate", "Basic realm=\"sim\"");
        }
        let token = format!("sim-token-{}", self.issued.fetch_add(1, Ordering::SeqCst) + 1);
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), (Instant::now(), 0));
        let answer = json!({ "access_token": token, "token_type": "Bearer", "expires_in": self.args.oauth_expires_in });
        Response::json(200, &answer).with_header("Cache-Control", "no-store")
    }
}

fn unauthorized(why: &str) -> Response {
    Response::error(401, why).with_header("WWW-Authenticate", "Bearer realm=\"sim\"")
}

/// An `application/x-www-form-urlencoded` body, decoded.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (decode(name), decode(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;

    fn token(guard: &Guard) -> String {
        let body = "grant_type=client_credentials&client_id=framesync&client_secret=sim-secret";
        let head = format!("POST /oauth/token HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let answer = guard.token(&parse_request(head.as_bytes()).unwrap());
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        json["access_token"].as_str().unwrap().to_owned()
    }

    fn ingest(guard: &Guard, token: &str) -> Option<u16> {
        let head = format!("POST /rs/ingest HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
        guard.refuse(Side::Rs, &parse_request(head.as_bytes()).unwrap()).map(|r| r.status)
    }

    #[test]
    fn every_live_token_is_revoked_once_the_servers_authorized_revoke_after_requests() {
        let args = AuthArgs {
            rs_require_oauth: true,
            oauth_client: "framesync:sim-secret".into(),
            oauth_expires_in: 3600,
            oauth_revoke_after: Some(3),
            ..AuthArgs::default()
        };
        let guard = Guard::new(args);
        let (first, second) = (token(&guard), token(&guard));
        assert_eq!([ingest(&guard, &first), ingest(&guard, &second), ingest(&guard, &first)], [None; 3]);
        assert_eq!([ingest(&guard, &first), ingest(&guard, &second)], [Some(401); 2], "both revoked at the 3rd");
        let third = token(&guard);
        assert_eq!((0..5).map(|_| ingest(&guard, &third)).collect::<Vec<_>>(), [None; 5], "revoked once only");
    }
}
