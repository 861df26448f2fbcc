//! Requests in flight to the RS (`sink.concurrency`, `sink.ordered`), end to end: every record
//! once at the RS with faults and with kills mid-wave; one request at a time when ordered; and
//! an answer that stops the pushes of a run stops new requests but keeps every acknowledgement
//! the RS gave the others in flight.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use framesync_testkit::http::read_request;

/// An RS on loopback that takes each request on a thread of its own, holds it a while, and
/// counts the requests in flight at once. The `refuse`-th request (from 1) is answered 503
/// with Retry-After; the others 201, their records stored.
struct GaugeRs {
    addr: String,
    most_in_flight: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stored: Arc<Mutex<Vec<String>>>,
}

impl GaugeRs {
    fn start(hold: Duration, refuse: Option<usize>) -> GaugeRs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (most, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stored: Arc<Mutex<Vec<String>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let rs = GaugeRs {
            addr,
            most_in_flight: Arc::clone(&most),
            requests: Arc::clone(&requests),
            stored: Arc::clone(&stored),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (most, requests, stored, in_flight) =
                    (most.clone(), requests.clone(), stored.clone(), in_flight.clone());
                std::thread::spawn(move || {
                    let Some((_, body)) = read_request(&stream) else { return };
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let nth = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    std::thread::sleep(hold);
                    let answer = if Some(nth) == refuse {
                        "HTTP/1.1 503 Busy\r\nRetry-After: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    } else {
                        let record: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        stored.lock().unwrap().push(record["id"].as_str().unwrap().to_owned());
                        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = stream.write_all(answer.as_bytes());
                });
            }
        });
        rs
    }

    fn url(&self) -> String {
        format!("url = \"http://{}/ingest\"", self.addr)
    }
}

#[test]
fn sixteen_requests_in_flight_against_a_faulty_rs_store_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let faults = ["--rs-5xx-rate", "0.05", "--rs-drop-response-rate", "0.05", "--rs-reset-rate", "0.03"];
    let flags = [&["--records-per-minute", "30", "--seed", "13"][..], &faults].concat();
    let sim = Sim::start(dir.path(), &flags);
    let p = Pipeline::new(&sim, dir, aligned_minutes_ago(6), "", "concurrency = 16", "");
    p.run_until_complete(30);
    assert!(p.assert_exactly_once(&sim) >= 100);
    assert!(sim.stats()["faults"]["rs_dropped_responses"].as_i64().unwrap() > 0, "answers were lost: {}", sim.stats());
}

#[test]
fn sink_ordered_keeps_one_request_in_flight() {
    for (sink, most) in [("ordered = true\nconcurrency = 8", 1..=1), ("concurrency = 8", 2..=8)] {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(dir.path(), &["--records-per-minute", "20", "--seed", "5"]);
        let rs = GaugeRs::start(Duration::from_millis(20), None);
        let p = Pipeline::new(&sim, dir, aligned_minutes_ago(3), "", &format!("{}\n{sink}", rs.url()), "");
        let out = p.framesync(&["run"]);
        assert_eq!(out.status.code(), Some(0), "{sink}: {}", stderr(&out));
        let seen = rs.most_in_flight.load(Ordering::SeqCst);
        assert!(most.contains(&seen), "{sink}: at most {seen} in flight");
        let mut stored = rs.stored.lock().unwrap().clone();
        let count = stored.len();
        stored.sort();
        stored.dedup();
        assert_eq!((stored.len(), count as i64), (count, p.query::<i64>("SELECT COUNT(*) FROM delivered")));
    }
}

#[test]
fn a_retry_after_to_one_request_of_a_wave_stops_new_requests_and_keeps_the_others_acks() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--records-per-minute", "40", "--seed", "8"]);
    let rs = GaugeRs::start(Duration::from_millis(20), Some(3));
    let p = Pipeline::new(
        &sim,
        dir,
        aligned_minutes_ago(3),
        "",
        &format!("{}\nconcurrency = 8\nadaptive = false", rs.url()),
        "",
    );
    let out = p.framesync(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 503"), "{}", stderr(&out));
    // Eight start. The RS refuses the third to reach it, which may be any of the eight: each
    // answer before it in the order formed, once acted on, lets one more start (a window of
    // eight answers not yet acted on), so up to seven more; none starts after the 503 is.
    let requests = rs.requests.load(Ordering::SeqCst);
    assert!((8..=15).contains(&requests), "{requests} requests: at most the limit past the last answer acted on");
    let stored = rs.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), requests - 1);
    let delivered: i64 = p.query("SELECT COUNT(*) FROM delivered");
    assert_eq!(delivered, requests as i64 - 1, "every acknowledgement in flight is recorded");
    for uid in &stored {
        let n: i64 = p.query(&format!("SELECT COUNT(*) FROM delivered WHERE uid = '{uid}'"));
        assert_eq!(n, 1, "{uid}");
    }
    let quiet: i64 = p.query("SELECT COUNT(*) FROM servers WHERE name = 'sink' AND quiet_until IS NOT NULL");
    assert_eq!(quiet, 1, "the RS's Retry-After is remembered");
}

#[test]
fn a_kill_mid_wave_loses_and_doubles_nothing() {
    for (point, lookup) in [
        ("after-mark-sending:2", false),
        ("mid-wave:2", false),
        ("mid-wave:3", true),
        ("after-ack:20", false),
        ("after-ack:20", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = vec!["--records-per-minute", "40", "--seed", "17"];
        if lookup {
            flags.push("--rs-ignore-keys");
        }
        let sim = Sim::start(dir.path(), &flags);
        let mut sink = "concurrency = 16\nack_group = 10\nack_group_time = \"1h\"".to_string();
        if lookup {
            sink += &format!("\nlookup_url = \"{}/rs/ingest/{{uid}}\"", sim.base());
        }
        let p = Pipeline::new(&sim, dir, aligned_minutes_ago(4), "", &sink, "");
        let killed = p.command(&["run"]).env("FRAMESYNC_TEST_KILL_AT", point).output().unwrap();
        assert_eq!(killed.status.code(), None, "{point}: killed: {}", stderr(&killed));
        assert!(sim.stored() > 0, "{point}: requests of the wave reached the RS");
        p.run_until_complete(5);
        p.assert_exactly_once(&sim);
    }
}

#[test]
fn the_adaptive_limit_delivers_everything_once_to_an_rs_of_small_capacity_and_status_shows_where_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &["--records-per-minute", "60", "--seed", "12", "--rs-latency", "5ms", "--rs-capacity", "4", "--rs-queue", "2"],
    );
    let metrics = dir.path().join("framesync.prom");
    let run = format!("metrics_file = {:?}", metrics.display().to_string());
    let p = Pipeline::new(&sim, tempfile::tempdir().unwrap(), aligned_minutes_ago(6), "", "concurrency = 32", &run);
    p.run_until_complete_pausing(20, Duration::from_millis(1100));
    p.assert_exactly_once(&sim);
    let limit: i64 = p.query("SELECT in_flight_limit FROM servers WHERE name = 'sink'");
    assert!((1..=32).contains(&limit), "{limit}");
    let status = p.status_text();
    let line =
        format!("sink:      {limit} request{} in flight when the last push ended", if limit == 1 { "" } else { "s" });
    assert!(status.contains(&line), "{status}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains(&format!("framesync_sink_in_flight_limit{{pipeline=\"ledger\"}} {limit}")), "{text}");
}
