//! `[source.auth]` and `[sink.auth]` against the simulator requiring credentials: basic auth, an
//! API key in the query, and OAuth2 client credentials from the simulator's token endpoint —
//! delivered when right, refused loudly when wrong, and the secret in no output nor the ledger.

mod common;

use std::process::Output;
use std::time::Instant;

use common::*;

const CLIENT_SECRET: &str = "sim-secret";

fn run(p: &Pipeline, args: &[&str], env: &[(&str, &str)]) -> Output {
    p.command(args).envs(env.iter().copied()).output().expect("framesync runs")
}

/// A pipeline over the last few minutes, with these auth tables.
fn pipeline(sim: &Sim, source_auth: &str, sink_auth: &str, sink_extra: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let source = if source_auth.is_empty() { String::new() } else { format!("[source.auth]\n{source_auth}") };
    let sink = format!(
        "{sink_extra}\n{}",
        if sink_auth.is_empty() { String::new() } else { format!("[sink.auth]\n{sink_auth}") }
    );
    Pipeline::new(sim, dir, aligned_minutes_ago(4), &source, &sink, "")
}

fn oauth2(sim: &Sim, secret_var: &str) -> String {
    format!(
        "kind = \"oauth2\"\ntoken_url = \"{}/oauth/token\"\nclient_id = \"framesync\"\nclient_secret = \"${{{secret_var}}}\"\nscope = \"events\"",
        sim.base()
    )
}

/// `secret` is in none of `outputs` and in no file of the ledger.
fn assert_nowhere(secret: &str, outputs: &[Output], p: &Pipeline) {
    let all: String = outputs.iter().map(text).collect();
    assert!(!all.contains(secret), "a message holds {secret}:\n{all}");
    p.assert_not_in_ledger(secret);
}

#[test]
fn oauth2_on_both_sides_delivers_everything_and_refreshes_each_token_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--records-per-minute", "20", "--ss-require-oauth", "--rs-require-oauth", "--oauth-expires-in", "2"];
    let sim = Sim::start(dir.path(), &flags);
    // Paced to outlive a 2 s token several times over.
    let p = pipeline(&sim, &oauth2(&sim, "SS_SECRET"), &oauth2(&sim, "RS_SECRET"), "max_rps = 15");
    let env = [("SS_SECRET", CLIENT_SECRET), ("RS_SECRET", CLIENT_SECRET)];

    let check = run(&p, &["check"], &env);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    for side in ["source.auth", "sink.auth"] {
        assert!(
            text(&check).contains(&format!("{side}: ok, OAuth2 token fetched, expires in 2 s")),
            "{}",
            text(&check)
        );
    }
    let fetched_by_check = sim.requests("oauth_token");

    let started = Instant::now();
    let out = run(&p, &["run"], &env);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = p.assert_exactly_once(&sim);
    assert!(expected >= 40, "{expected} records");
    assert!(took.as_secs_f64() > 3.0, "the run must outlive a token to test its refresh: {took:?}");
    let fetched = sim.requests("oauth_token") - fetched_by_check;
    assert!(fetched >= 4, "one token per side would have expired mid-run; {fetched} fetched in {took:?}");
    assert_eq!(sim.answered("oauth_token", "200"), sim.requests("oauth_token"));
    for endpoint in ["ss_events", "rs_ingest"] {
        assert_eq!(sim.answered(endpoint, "401"), 0, "{endpoint} saw a stale token: {:#}", sim.stats());
    }
    assert_nowhere(CLIENT_SECRET, &[check, out], &p);
}

/// One request in flight (`sink.ordered`): each 401 is then one revoked token. With requests in
/// flight together, several carry the same revoked token and one fetch serves their retries.
#[test]
fn a_revoked_token_is_fetched_again_once_and_the_refused_request_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "10", "--rs-require-oauth", "--oauth-token-uses", "5"]);
    let p = pipeline(&sim, "", &oauth2(&sim, "RS_SECRET"), "ordered = true");
    let out = run(&p, &["run"], &[("RS_SECRET", CLIENT_SECRET)]);
    assert_eq!(out.status.code(), Some(0), "every 401 was retried with a new token: {}", text(&out));
    p.assert_exactly_once(&sim);
    let refused = sim.answered("rs_ingest", "401");
    assert!(refused >= 3, "each token is revoked after 5 records: {:#}", sim.stats());
    assert_eq!(sim.requests("oauth_token"), refused + 1, "one fetch at the start, one per revoked token");
}

/// Pins a race: all sixteen requests in flight with a revoked token are refused together, and
/// each dropped the token kept, fresh ones included, so one revocation cost up to sixteen fetches.
#[test]
fn a_revocation_met_by_sixteen_requests_in_flight_costs_one_token_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let flags =
        ["--records-per-minute", "60", "--rs-latency", "20ms", "--rs-require-oauth", "--oauth-revoke-after", "40"];
    let sim = Sim::start(dir.path(), &flags);
    let p = pipeline(&sim, "", &oauth2(&sim, "RS_SECRET"), "concurrency = 16\nadaptive = false");
    let out = run(&p, &["run"], &[("RS_SECRET", CLIENT_SECRET)]);
    assert_eq!(out.status.code(), Some(0), "every 401 was retried with the fresh token: {}", text(&out));
    assert!(p.assert_exactly_once(&sim) > 40, "the revocation came mid-push");
    let refused = sim.answered("rs_ingest", "401");
    assert!(refused >= 1, "requests met the revocation: {:#}", sim.stats());
    let fetched = sim.requests("oauth_token");
    assert_eq!(fetched, 2, "one token at the start, one after the revocation ({refused} requests refused)");
}

/// The same with frames pulled at once: the SS's client renews its token as the RS's does.
#[test]
fn a_revocation_met_by_frames_pulled_at_once_costs_one_token_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let flags =
        ["--records-per-minute", "10", "--ss-latency", "20ms", "--ss-require-oauth", "--oauth-revoke-after", "4"];
    let sim = Sim::start(dir.path(), &flags);
    let dir = tempfile::tempdir().unwrap();
    let source = format!("concurrency = 4\n[source.auth]\n{}", oauth2(&sim, "SS_SECRET"));
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(12), &source, "", "");
    let out = run(&p, &["run"], &[("SS_SECRET", CLIENT_SECRET)]);
    assert_eq!(out.status.code(), Some(0), "every 401 was retried with the fresh token: {}", text(&out));
    p.assert_exactly_once(&sim);
    let refused = sim.answered("ss_events", "401");
    assert!(refused >= 1, "requests met the revocation: {:#}", sim.stats());
    let fetched = sim.requests("oauth_token");
    assert_eq!(fetched, 2, "one token at the start, one after the revocation ({refused} requests refused)");
}

#[test]
fn a_wrong_client_secret_fails_loudly_naming_token_url_and_is_in_no_output_nor_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "3", "--rs-require-oauth"]);
    let p = pipeline(&sim, "", &oauth2(&sim, "RS_SECRET"), "");
    let wrong = "wr0ng-client-s3cret";
    let env = [("RS_SECRET", wrong), ("RUST_LOG", "debug")];
    let outputs = vec![run(&p, &["run"], &env), run(&p, &["check"], &env), run(&p, &["status"], &env)];
    let (out, check) = (&outputs[0], &outputs[1]);
    assert_ne!(out.status.code(), Some(0), "{}", text(out));
    let token_url = format!("sink.auth.token_url: POST {}/oauth/token: HTTP 401: invalid_client", sim.base());
    assert!(text(out).contains(&token_url), "{}", text(out));
    assert_eq!(check.status.code(), Some(1), "{}", text(check));
    assert!(text(check).contains(&format!("sink.auth: FAILED: {token_url}")), "{}", text(check));
    assert_eq!(sim.stored(), 0);
    assert_eq!(sim.requests("rs_ingest"), 0, "nothing is sent without a token");
    assert_nowhere(wrong, &outputs, &p);
}

#[test]
fn basic_auth_reaches_both_servers_and_a_wrong_password_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    // base64("user:p@ss word")
    let header = "Basic dXNlcjpwQHNzIHdvcmQ=";
    let sim = Sim::start(
        dir.path(),
        &["--records-per-minute", "5", "--ss-require-auth", header, "--rs-require-auth", header],
    );
    let basic = "kind = \"basic\"\nuser = \"user\"\npassword = \"${API_PASSWORD}\"";
    let p =
        pipeline(&sim, basic, basic, "lookup_url = \"{base}/rs/ingest/{uid}\"".replace("{base}", &sim.base()).as_str());
    let right = run(&p, &["run"], &[("API_PASSWORD", "p@ss word")]);
    assert_eq!(right.status.code(), Some(0), "{}", text(&right));
    p.assert_exactly_once(&sim);
    let check = run(&p, &["check"], &[("API_PASSWORD", "p@ss word")]);
    assert_eq!(check.status.code(), Some(0), "the HEAD and the lookup carry the header too: {}", text(&check));

    let wrong = "not-the-passw0rd";
    let later = pipeline(&sim, basic, basic, "");
    let refused = run(&later, &["run"], &[("API_PASSWORD", wrong), ("RUST_LOG", "debug")]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(text(&refused).contains("HTTP 401"), "{}", text(&refused));
    assert_eq!(later.query::<i64>("SELECT COUNT(*) FROM frames WHERE state = 'delivered'"), 0);
    assert_nowhere(wrong, &[refused], &later);
}

#[test]
fn an_api_key_in_the_query_reaches_both_servers_and_a_wrong_one_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--records-per-minute", "5", "--ss-require-key", "api_key=ss k3y&=", "--rs-require-key", "key=rs-k3y"];
    let sim = Sim::start(dir.path(), &flags);
    let ss = "kind = \"query\"\nparam = \"api_key\"\nkey = \"${SS_KEY}\"";
    let rs = "kind = \"query\"\nparam = \"key\"\nkey = \"${RS_KEY}\"";
    let p = pipeline(&sim, ss, rs, "");
    let right = run(&p, &["run"], &[("SS_KEY", "ss k3y&="), ("RS_KEY", "rs-k3y")]);
    assert_eq!(right.status.code(), Some(0), "the key is percent-encoded: {}", text(&right));
    p.assert_exactly_once(&sim);

    let later = pipeline(&sim, ss, rs, "");
    let wrong = "wr0ng-ss-key";
    let refused = run(&later, &["run"], &[("SS_KEY", wrong), ("RS_KEY", "rs-k3y"), ("RUST_LOG", "debug")]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(text(&refused).contains("HTTP 401"), "{}", text(&refused));
    assert_nowhere(wrong, &[refused], &later);
}
