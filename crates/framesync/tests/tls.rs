//! TLS and proxies end to end: the real `framesync` against a TLS front of the simulator on
//! loopback, with a CA made in the test, and through a `CONNECT` proxy on loopback.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use common::*;
use framesync_testkit::ConnectProxy;
use framesync_testkit::tls::{Options, Pki, Server};

const PROXY_VARS: [&str; 8] =
    ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"];

struct Setup {
    sim: Sim,
    pki: Pki,
    front: Server,
}

fn setup(options: Options) -> (Setup, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "4", "--page-size", "3", "--seed", "31"]);
    let pki = Pki::new(dir.path());
    let front = Server::start(&pki, &sim.addr, options);
    (Setup { sim, pki, front }, dir)
}

/// A pipeline whose SS and RS are `base`, with these lines in `[source.tls]` and `[sink.tls]`.
fn pipeline(s: &Setup, dir: tempfile::TempDir, base: &str, tls: &str) -> Pipeline {
    let source = format!("url = \"{base}/ss/events?from={{from}}&to={{to}}\"\n[source.tls]\n{tls}");
    let sink = format!("url = \"{base}/rs/ingest\"\n[sink.tls]\n{tls}");
    Pipeline::new(&s.sim, dir, aligned_minutes_ago(4), &source, &sink, "")
}

fn ca(s: &Setup) -> String {
    format!("ca = {:?}", s.pki.ca.display().to_string())
}

/// `framesync <args>` with no proxy from the test's own environment, and with `env`.
fn framesync(p: &Pipeline, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command: Command = p.command(args);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn a_pull_and_a_push_over_https_with_the_test_ca_deliver_every_record_once() {
    let (s, dir) = setup(Options::default());
    let p = pipeline(&s, dir, &s.front.base(), &ca(&s));
    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = framesync(&p, &["run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    p.assert_exactly_once(&s.sim);
    assert!(s.front.handshakes.load(Ordering::SeqCst) >= 2, "both the SS and the RS were reached over TLS");
}

#[test]
fn without_the_ca_the_server_is_refused_as_not_trusted_and_the_message_names_tls_ca() {
    let (s, dir) = setup(Options::default());
    let p = pipeline(&s, dir, &s.front.base(), "");
    let out = framesync(&p, &["run"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("certificate is not trusted") && said.contains("source.tls.ca"), "{said}");
    assert_eq!(s.sim.stored(), 0);

    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    let sink_line = said.lines().find(|l| l.starts_with("sink:")).unwrap_or_default();
    assert!(
        sink_line.contains("FAILED") && sink_line.contains("not trusted") && sink_line.contains("sink.tls.ca"),
        "{said}"
    );
}

#[test]
fn the_operating_systems_store_is_trusted_with_system_roots() {
    let (s, dir) = setup(Options::default());
    let p = pipeline(&s, dir, &s.front.base(), "system_roots = true");
    // rustls-native-certs reads SSL_CERT_FILE in place of the OS store: the test CA stands for it.
    let ca = s.pki.ca.display().to_string();
    let out = framesync(&p, &["check"], &[("SSL_CERT_FILE", &ca)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_server_that_requires_a_client_certificate_refuses_none_and_accepts_the_configured_one() {
    let (s, dir) = setup(Options { client_auth: true, ..Options::default() });
    let p = pipeline(&s, dir, &s.front.base(), &ca(&s));
    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("client certificate") && said.contains("source.tls.client_cert"), "{said}");

    let client = format!(
        "{}\nclient_cert = {:?}\nclient_key = {:?}",
        ca(&s),
        s.pki.client_cert.display().to_string(),
        s.pki.client_key.display().to_string()
    );
    let p = pipeline(&s, tempfile::tempdir().unwrap(), &s.front.base(), &client);
    let out = framesync(&p, &["run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    p.assert_exactly_once(&s.sim);
}

#[test]
fn min_version_1_3_fails_against_a_tls_1_2_server_and_works_against_1_3() {
    let (s, dir) = setup(Options { tls12_only: true, ..Options::default() });
    let tls13 = format!("{}\nmin_version = \"1.3\"", ca(&s));
    let p = pipeline(&s, dir, &s.front.base(), &tls13);
    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no TLS version") && said.contains("source.tls.min_version"), "{said}");
    // The same server is fine with the default (1.2 and above).
    let p = pipeline(&s, tempfile::tempdir().unwrap(), &s.front.base(), &ca(&s));
    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A server that speaks 1.3 takes min_version = "1.3".
    let modern = Server::start(&s.pki, &s.sim.addr, Options::default());
    let p = pipeline(&s, tempfile::tempdir().unwrap(), &modern.base(), &tls13);
    let out = framesync(&p, &["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn requests_go_through_the_proxy_the_environment_names_unless_no_proxy_names_the_host() {
    let (s, dir) = setup(Options::default());
    let proxy = ConnectProxy::start();
    // https URLs: HTTPS_PROXY, the tunnel carries TLS to the front.
    let p = pipeline(&s, dir, &s.front.base(), &ca(&s));
    let out = framesync(&p, &["run"], &[("HTTPS_PROXY", &proxy.url()), ("HTTP_PROXY", "http://127.0.0.1:9")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    p.assert_exactly_once(&s.sim);
    let tunnels = proxy.tunnels.load(Ordering::SeqCst);
    assert!(tunnels >= 2, "the SS and the RS were reached through the proxy: {tunnels}");
    assert!(proxy.seen.lock().unwrap().iter().all(|l| l.starts_with(&format!("CONNECT {} ", s.front.addr))));

    // http URLs: HTTP_PROXY.
    let plain = pipeline(&s, tempfile::tempdir().unwrap(), &s.sim.base(), "");
    let out = framesync(&plain, &["check"], &[("HTTP_PROXY", &proxy.url()), ("HTTPS_PROXY", "http://127.0.0.1:9")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(proxy.tunnels.load(Ordering::SeqCst) > tunnels, "http URLs go through HTTP_PROXY");

    // NO_PROXY: straight to the server.
    let before = proxy.tunnels.load(Ordering::SeqCst);
    let env = [("HTTPS_PROXY", proxy.url()), ("NO_PROXY", "localhost, 127.0.0.1".into())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = framesync(&p, &["check"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), before, "NO_PROXY bypasses the proxy");
}

#[test]
fn a_proxy_that_fails_is_named_by_host_and_port_never_by_its_credentials() {
    let (s, dir) = setup(Options::default());
    let p = pipeline(&s, dir, &s.front.base(), &ca(&s));
    // Down: nothing listens on the port any more.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = framesync(&p, &["check"], &[("HTTPS_PROXY", &format!("http://me:hunter2@{down}"))]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("the proxy {down} (from HTTPS_PROXY) failed: connection refused")), "{said}");
    assert!(!said.contains("hunter2"), "{said}");

    // Refusing the tunnel: 407.
    let proxy = ConnectProxy::refusing(407);
    let out = framesync(&p, &["run"], &[("https_proxy", &format!("http://me:hunter2@{}", proxy.addr))]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("the proxy {} (from https_proxy) failed", proxy.addr)), "{said}");
    assert!(said.contains("407 Proxy Authentication Required"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    assert!(proxy.seen.lock().unwrap()[0].contains("Proxy-Authorization: Basic"), "the credentials went to the proxy");
}

#[test]
fn a_socks_proxy_is_a_config_error_naming_the_variable() {
    let (s, dir) = setup(Options::default());
    let p = pipeline(&s, dir, &s.front.base(), &ca(&s));
    let out = framesync(&p, &["check"], &[("ALL_PROXY", "socks5://127.0.0.1:1080")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ALL_PROXY: a SOCKS5 proxy"), "{}", text(&out));
}
