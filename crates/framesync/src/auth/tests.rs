use std::io::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar};

use super::*;
use crate::config::Secret;

fn config() -> OAuth2Config {
    OAuth2Config {
        section: "sink.auth",
        token_url: "http://127.0.0.1:9/token".into(),
        client_id: Secret::new("fs"),
        client_secret: Secret::new("s3cret-value"),
        scope: None,
        audience: None,
        auth_style: AuthStyle::Basic,
    }
}

fn read(status: u16, body: &str) -> Result<Granted, AuthError> {
    read_token(&config(), TokenAnswer { status, body: body.into(), location: "https://login.example.com/".into() })
}

fn error(status: u16, body: &str) -> AuthError {
    let e = read(status, body).expect_err("no token");
    assert!(e.message.starts_with("sink.auth.token_url: POST http://127.0.0.1:9/token: "), "{}", e.message);
    assert!(!e.message.contains("s3cret-value"), "{}", e.message);
    e
}

#[test]
fn a_bearer_token_and_its_lifetime_are_read() {
    let granted = read(200, r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#).unwrap();
    assert_eq!(granted, Granted { access: "at-1".into(), expires_in: Some(Duration::from_secs(3600)) });
    let no_type = read(200, r#"{"access_token":"at-2","expires_in":"60"}"#).unwrap();
    assert_eq!(no_type.expires_in, Some(Duration::from_secs(60)), "a lifetime as text is read too");
    assert_eq!(read(200, r#"{"access_token":"at-3","token_type":"bearer"}"#).unwrap().expires_in, None);
}

#[test]
fn every_answer_that_is_not_a_bearer_token_is_a_one_line_error_naming_token_url() {
    let refused = error(401, r#"{"error":"invalid_client","error_description":"bad secret"}"#);
    assert!(refused.permanent && refused.status == Some(401));
    assert!(refused.message.contains("HTTP 401: invalid_client (bad secret); check sink.auth.client_id"), "{refused}");
    assert!(error(400, r#"{"error":"invalid_client"}"#).message.contains("invalid_client; check"));
    assert!(error(400, r#"{"error":"invalid_scope"}"#).message.contains("check sink.auth.scope"));
    let redirect = error(302, "");
    assert!(redirect.permanent && redirect.message.contains("never follows a redirect"), "{redirect}");
    assert!(redirect.message.contains("https://login.example.com/"), "{redirect}");
    for status in [429, 500, 503] {
        assert!(!error(status, "busy").permanent, "{status} may pass");
    }
    assert!(error(200, "<html>login</html>").message.contains("not JSON"));
    assert!(error(200, r#"{"token_type":"bearer"}"#).message.contains("no access_token"));
    assert!(error(200, r#"{"access_token":"","token_type":"bearer"}"#).message.contains("no access_token"));
    let mac = error(200, r#"{"access_token":"at-4","token_type":"mac"}"#);
    assert!(mac.message.contains("token_type is \"mac\", not \"bearer\""), "{mac}");
    assert!(!mac.message.contains("at-4"), "the token is never in a message: {mac}");
    assert!(error(200, r#"{"access_token":"at-5","expires_in":-1}"#).message.contains("expires_in"));
    for e in [error(401, "\n{\"error\":\n\"invalid_client\"}\n"), error(500, "a\nb")] {
        assert!(!e.message.contains('\n'), "{e}");
    }
}

#[test]
fn auth_errors_map_to_what_each_client_does_with_a_refusal() {
    use crate::sink::Verdict;
    use crate::source::PullError;
    let refused = error(401, r#"{"error":"invalid_client"}"#);
    assert!(matches!(PullError::from(refused.clone()), PullError::Refused { status: 401, .. }));
    assert!(matches!(Verdict::from(refused), Verdict::Broken { .. }));
    let busy = error(503, "");
    assert!(matches!(PullError::from(busy.clone()), PullError::Failed(_)));
    assert!(matches!(Verdict::from(busy), Verdict::RetryLater { .. }));
}

#[test]
fn a_token_endpoint_out_of_reach_is_an_error_that_may_pass() {
    let agent = crate::http::agent(Duration::from_secs(2), &crate::config::Transport::plain("sink.tls"));
    let auth = Auth::new(Some(&AuthConfig::OAuth2(config())), &agent);
    let e = auth.fetch_now().expect("oauth2 fetches").expect_err("nothing listens on port 9");
    assert!(!e.permanent && e.message.starts_with("sink.auth.token_url: POST http://127.0.0.1:9/token: "), "{e}");
    assert!(Auth::none().fetch_now().is_none());
    assert!(!Auth::none().renew(None), "no retry without a token to renew");
}

#[test]
fn static_credentials_are_added_to_each_request() {
    let agent = crate::http::agent(Duration::from_secs(2), &crate::config::Transport::plain("sink.tls"));
    let basic = AuthConfig::Basic { user: Secret::new("user"), password: Secret::new("pass") };
    let request = Auth::new(Some(&basic), &agent).apply(agent.get("http://h/x")).unwrap();
    assert_eq!(request.headers_ref().unwrap()["authorization"], "Basic dXNlcjpwYXNz");
    let bearer = AuthConfig::Bearer { token: Secret::new("t0k") };
    let request = Auth::new(Some(&bearer), &agent).apply(agent.get("http://h/x")).unwrap();
    assert_eq!(request.headers_ref().unwrap()["authorization"], "Bearer t0k");
}

/// A token endpoint on loopback that answers `tok-1`, `tok-2`, … (an hour's lifetime each) and
/// counts the tokens it issued.
fn token_endpoint() -> (OAuth2Config, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let issued = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&issued);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if framesync_testkit::http::read_request(&stream).is_none() {
                continue;
            }
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#);
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close";
            let _ = write!(stream, "{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    (OAuth2Config { token_url: url, ..config() }, issued)
}

fn answer(status: u16) -> ureq::http::Response<ureq::Body> {
    ureq::http::Response::builder().status(status).body(ureq::Body::builder().data(Vec::new())).unwrap()
}

fn bearer<B>(request: &ureq::RequestBuilder<B>) -> String {
    request.headers_ref().unwrap()["authorization"].to_str().unwrap().to_owned()
}

/// Pins a race: every request in flight with a revoked token gets its 401, and each dropped
/// whatever token was kept — the fresh one another request's retry had just fetched too — so
/// one revocation cost a fetch per request in flight.
#[test]
fn one_revocation_costs_one_token_fetch_however_many_requests_carried_the_revoked_token() {
    const IN_FLIGHT: usize = 16;
    let (config, issued) = token_endpoint();
    let agent = crate::http::agent(Duration::from_secs(5), &crate::config::Transport::plain("sink.tls"));
    let auth = Auth::new(Some(&AuthConfig::OAuth2(config)), &agent);
    auth.fetch_now().unwrap().unwrap();
    let all_sent = Barrier::new(IN_FLIGHT);
    // How many retries the server has answered: the revoked token's 401s go out one by one,
    // each after the retry of the one before went through with a fresh token.
    let (retried, turn) = (Mutex::new(Vec::new()), Condvar::new());
    std::thread::scope(|s| {
        for i in 0..IN_FLIGHT {
            let (auth, agent, all_sent, retried, turn) = (&auth, &agent, &all_sent, &retried, &turn);
            s.spawn(move || {
                let response = auth.send_renewing(|attempt| {
                    let token = bearer(&attempt.apply(agent.get("http://h/x"))?);
                    if token == "Bearer tok-1" {
                        all_sent.wait();
                        let mut done = retried.lock().unwrap();
                        while done.len() < i {
                            done = turn.wait(done).unwrap();
                        }
                        return Ok(answer(401));
                    }
                    retried.lock().unwrap().push(token);
                    turn.notify_all();
                    Ok::<_, AuthError>(answer(200))
                });
                assert_eq!(response.unwrap().status(), 200);
            });
        }
    });
    let fetched = issued.load(Ordering::SeqCst) - 1;
    assert_eq!(fetched, 1, "one revocation, {IN_FLIGHT} requests refused: {fetched} tokens fetched");
    assert_eq!(retried.into_inner().unwrap(), vec!["Bearer tok-2"; IN_FLIGHT], "every retry carries the fresh token");
}

#[test]
fn a_second_401_with_a_fresh_token_is_the_servers_answer() {
    let (config, issued) = token_endpoint();
    let agent = crate::http::agent(Duration::from_secs(5), &crate::config::Transport::plain("sink.tls"));
    let auth = Auth::new(Some(&AuthConfig::OAuth2(config)), &agent);
    let carried = Mutex::new(Vec::new());
    let response = auth.send_renewing(|attempt| {
        carried.lock().unwrap().push(bearer(&attempt.apply(agent.get("http://h/x"))?));
        Ok::<_, AuthError>(answer(401))
    });
    assert_eq!(response.unwrap().status(), 401);
    assert_eq!(carried.into_inner().unwrap(), ["Bearer tok-1", "Bearer tok-2"], "one retry, with a fresh token");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}
