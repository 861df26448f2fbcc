use super::*;
use crate::config::Config;
use crate::frames::{FrameSize, parse_time};
use serde_json::json;

fn config(records: &str, uid: &str, next: Option<&str>) -> SourceConfig {
    let text = format!(
        "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h:1/e?from={{from}}&to={{to}}\"\nrecords = \"{records}\"\nuid = \"{uid}\"\ntimestamp = \"/t\"\n{}\n[sink]\nurl = \"http://h:1/rs\"\n",
        next.map(|n| format!("next = \"{n}\"")).unwrap_or_default()
    );
    Config::parse(&text, std::path::Path::new("."), &|_| None).unwrap().source
}

fn frame(text: &str) -> Frame {
    FrameSize::new(60).unwrap().frame_at(parse_time(text).unwrap())
}

#[test]
fn frame_urls_fill_every_placeholder_in_every_format() {
    let f = frame("2026-11-01T12:00:00Z");
    let t = "http://h/e?from={from}&to={to}&last={last}";
    assert_eq!(
        frame_url(t, &Query::default(), TimeFormat::Rfc3339, f),
        "http://h/e?from=2026-11-01T12%3A00%3A00Z&to=2026-11-01T12%3A01%3A00Z&last=2026-11-01T12%3A00%3A59.999Z"
    );
    assert_eq!(
        frame_url(t, &Query::default(), TimeFormat::EpochS, f),
        "http://h/e?from=1793534400&to=1793534460&last=1793534459"
    );
    assert_eq!(
        frame_url(t, &Query::default(), TimeFormat::EpochMs, f),
        "http://h/e?from=1793534400000&to=1793534460000&last=1793534459999"
    );
}

#[test]
fn query_parameters_carry_the_frame_encoded_whole() {
    let f = frame("2026-11-01T12:00:00Z");
    let all = [crate::template::Var::From, crate::template::Var::To];
    let sql = "SELECT * FROM t WHERE ts >= '{from}' AND ts < '{to}' FORMAT JSON";
    let query = Query::new(vec![("query".into(), crate::template::Template::parse(sql, &all).unwrap())]);
    let url = frame_url("http://h:8123/?database=db", &query, TimeFormat::EpochS, f);
    assert_eq!(
        url,
        "http://h:8123/?database=db&query=SELECT%20%2A%20FROM%20t%20WHERE%20ts%20%3E%3D%20%271793534400%27%20AND%20ts%20%3C%20%271793534460%27%20FORMAT%20JSON"
    );
}

/// Regression: `{last}` in rfc3339 was `to - 1 s` (12:00:59Z), so an SS with inclusive bounds
/// and millisecond stamps never served a record stamped 12:00:59.500, and the frame was
/// marked delivered without it.
#[test]
fn last_reaches_the_frames_last_millisecond() {
    let f = frame("2026-11-01T12:00:00Z");
    let last = |format| {
        let url = frame_url("{last}", &Query::default(), format, f);
        percent_encoding::percent_decode_str(&url).decode_utf8().unwrap().into_owned()
    };
    let stamped = parse_time("2026-11-01T12:00:59Z").unwrap() * 1000 + 500;
    let rfc = chrono::DateTime::parse_from_rfc3339(&last(TimeFormat::Rfc3339)).unwrap().timestamp_millis();
    let ms: i64 = last(TimeFormat::EpochMs).parse().unwrap();
    for last_ms in [rfc, ms] {
        assert!(f.contains_ms(last_ms) && stamped <= last_ms, "{last_ms} ends the frame's range early");
        assert!(!f.contains_ms(last_ms + 1), "{last_ms} is not the frame's last millisecond");
    }
}

#[test]
fn next_pages_are_urls_paths_or_cursors() {
    let first = "http://h:8/e?from=1&to=2";
    assert_eq!(next_url(first, "https://x/y", "cursor"), "https://x/y");
    assert_eq!(next_url(first, "/e?page=2", "cursor"), "http://h:8/e?page=2");
    assert_eq!(next_url(first, "abc+/=", "c"), "http://h:8/e?from=1&to=2&c=abc%2B%2F%3D");
    assert_eq!(next_url("http://h/e", "7", "page"), "http://h/e?page=7");
}

/// Pins a leak: an absolute next URL on another host received the SS's headers (its token).
#[test]
fn only_next_pages_on_the_ss_own_server_are_followed() {
    let first = "http://ss.example:8080/e?from=1";
    assert!(same_origin(first, "http://SS.example:8080/e?page=2"));
    assert!(same_origin("https://ss.example/e", "https://ss.example:443/x"));
    assert!(!same_origin(first, "http://evil.example:8080/e?page=2"));
    assert!(!same_origin(first, "https://ss.example:8080/e"));
    assert!(!same_origin(first, "http://ss.example:8081/e"));
    assert!(!same_origin(first, "http://ss.example:8080@evil.example/e"));
    assert!(!same_origin(first, "not a url"));
}

#[test]
fn pages_give_their_records_and_next_link() {
    let c = config("/items", "/id", Some("/next"));
    let page = parse_page(r#"{"items":[{"id":1}],"next":"/p2"}"#, &c).unwrap();
    assert_eq!(page, PageBody { records: vec![json!({"id": 1})], next: Some("/p2".into()), total: None });
    let last = parse_page(r#"{"items":[],"next":null}"#, &c).unwrap();
    assert_eq!(last.next, None);
    let bare = config("", "/id", None);
    assert_eq!(parse_page(r#"[{"id":1},{"id":2}]"#, &bare).unwrap().records.len(), 2);
}

#[test]
fn bad_pages_say_what_is_wrong() {
    let c = config("/items", "/id", Some("/next"));
    let cases = [
        ("<html>oops</html>", "not JSON"),
        (r#"{"items":[{"id":1}"#, "truncated"),
        (r#"{"data":[]}"#, "no records array at \"/items\""),
        (r#"{"items":{"id":1}}"#, "an object, not an array"),
        (r#"{"items":[],"next":{"a":1}}"#, "not a URL or cursor"),
    ];
    for (body, want) in cases {
        let e = parse_page(body, &c).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn collecting_reads_uids_counts_stamps_outside_the_frame_and_sets_aside_records_without_uid() {
    let c = config("/items", "/id", None);
    let f = frame("1970-01-01T00:00:00Z");
    let pulled = collect(
        f,
        vec![
            json!({"id": "a", "t": 1}),
            json!({"id": "a", "t": 1}),
            json!({"id": 7, "t": 2}),
            json!({"t": 3}),
            json!({"id": "ünï-✓", "t": 120}),
        ],
        &c,
    );
    let uids: Vec<_> = pulled.records.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(uids, ["a", "a", "7", "ünï-✓"], "repeats are the staging's to find, across pages");
    assert_eq!(pulled.out_of_frame, 1, "t=120s is outside 00:00..00:01");
    assert_eq!(pulled.invalid.len(), 1);
    assert!(pulled.invalid[0].detail.contains("no UID at /id"));
    assert_eq!(pulled.records[0].ts_ms, Some(1000));
}

#[test]
fn hashed_uids_identify_records_by_content() {
    let c = config("", "hash", None);
    let pulled = collect(frame("1970-01-01T00:00:00Z"), vec![json!({"a": 1, "t": 1}), json!({"t": 1, "a": 1})], &c);
    assert_eq!(pulled.records[0].uid, pulled.records[1].uid, "the same content is the same record");
    assert_eq!(pulled.records[0].uid.len(), 64);
}

fn shaped(extra: &str) -> SourceConfig {
    let text = format!(
        "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h:1/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n{extra}\n[sink]\nurl = \"http://h:1/rs\"\n"
    );
    Config::parse(&text, std::path::Path::new("."), &|_| None).unwrap().source
}

#[test]
fn link_headers_give_the_next_link_whatever_their_order_quoting_and_case() {
    let next = |headers: &[&str]| link_next(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    assert_eq!(next(&[r#"<https://h/e?page=2>; rel="next""#]), Some("https://h/e?page=2".into()));
    assert_eq!(next(&[r#"</e?p=1>; rel="first", </e?p=3>; rel=next; title="a, b; c""#]), Some("/e?p=3".into()));
    assert_eq!(next(&[r#"</a>; rel="prev next""#]), Some("/a".into()), "one of several relation types");
    assert_eq!(next(&[r#"</a>; REL="Next""#]), Some("/a".into()), "names and types ignore case");
    assert_eq!(next(&[r#"</p>; title="say \"next\""; rel="prev", </n>; rel="next""#]), Some("/n".into()));
    assert_eq!(next(&[r#"</x>; rel="next"; anchor="/other""#]), None, "a link about another resource");
    assert_eq!(next(&[r#"</prev>; rel="prev""#, r#"</n2>; rel="next""#]), Some("/n2".into()), "several headers");
    assert_eq!(next(&[r#"</last>; rel="last""#]), None, "no next: the last page");
    assert_eq!(next(&[]), None);
    assert_eq!(next(&["<a,b>;rel=next"]), Some("a,b".into()), "a comma inside the target");
    for bad in ["https://h/e; rel=next", "<https://h/e; rel=next", r#"</a>; rel="next"#, "</a> junk"] {
        assert!(link_next(&[bad.to_string()]).unwrap_err().contains("cannot be read"), "{bad}");
    }
}

#[test]
fn relative_links_resolve_against_the_page_they_came_from() {
    let base = "http://h:8/api/v1/events?from=1&page=1#top";
    assert_eq!(resolve(base, "https://x/y"), "https://x/y");
    assert_eq!(resolve(base, "//cdn:9/z"), "http://cdn:9/z");
    assert_eq!(resolve(base, "/e?p=2"), "http://h:8/e?p=2");
    assert_eq!(resolve(base, "?page=2"), "http://h:8/api/v1/events?page=2");
    assert_eq!(resolve(base, "events?page=2"), "http://h:8/api/v1/events?page=2");
    assert_eq!(resolve(base, "../v2/e"), "http://h:8/api/v2/e");
    assert_eq!(resolve(base, "./x/../y#frag"), "http://h:8/api/v1/y");
    assert_eq!(resolve("http://h", "e?p=2"), "http://h/e?p=2");
    assert_eq!(resolve("http://h/a/b", "../../../c"), "http://h/c");
}

#[test]
fn stop_rules_end_a_walk_at_an_empty_page_a_short_page_or_the_total() {
    use crate::config::Stop;
    assert_eq!(after_page(Stop::Empty, Some(10), true, 3, 13, None), After::More);
    assert_eq!(after_page(Stop::Empty, Some(10), true, 0, 13, None), After::Last);
    assert_eq!(after_page(Stop::Short, Some(10), true, 10, 20, None), After::More);
    assert_eq!(after_page(Stop::Short, Some(10), true, 9, 19, None), After::Last);
    assert_eq!(after_page(Stop::Short, Some(10), true, 0, 10, None), After::Last);
    // An SS not yet seen filling a page may cap pages below the limit: a short page is not the
    // end until an empty one follows.
    assert_eq!(after_page(Stop::Short, Some(10), false, 4, 4, None), After::More);
    assert_eq!(after_page(Stop::Short, Some(10), false, 0, 4, None), After::Last);
    assert_eq!(after_page(Stop::Total, Some(10), true, 10, 10, Some(25)), After::More);
    assert_eq!(after_page(Stop::Total, Some(10), true, 3, 13, Some(25)), After::More, "a short page is not the end");
    assert_eq!(after_page(Stop::Total, Some(10), true, 5, 25, Some(25)), After::Last);
    assert_eq!(after_page(Stop::Total, Some(10), true, 0, 0, Some(0)), After::Last);
    let over = after_page(Stop::Total, Some(10), true, 10, 30, Some(25));
    assert!(matches!(&over, After::Wrong(w) if w.contains("total of 25 records but served 30")), "{over:?}");
    let short = after_page(Stop::Total, Some(10), true, 0, 20, Some(25));
    assert!(matches!(&short, After::Wrong(w) if w.contains("served only 20 before an empty page")), "{short:?}");
}

#[test]
fn ndjson_bodies_are_one_record_per_line() {
    let c = shaped("format = \"ndjson\"\n[source.pages]\nby = \"link\"");
    let page = parse_page("{\"id\":1}\n\n{\"id\":2}\r\n  \n{\"id\":3}\n", &c).unwrap();
    assert_eq!(page.records, vec![json!({"id": 1}), json!({"id": 2}), json!({"id": 3})]);
    assert_eq!(parse_page("{\"id\":1}", &c).unwrap().records.len(), 1, "a complete last line needs no newline");
    assert!(parse_page("", &c).unwrap().records.is_empty());
    let cases = [
        ("{\"id\":1}\n{\"id\":2", "last line (2) is cut off"),
        ("{\"id\":1}\n{\"id\"2}\n", "not NDJSON: line 2"),
        ("[{\"id\":1},{\"id\":2}]\n", "line 1 is an array"),
        ("{\n  \"items\": []\n}\n", "not NDJSON: line 1"),
        ("<!DOCTYPE html><html>", "HTML"),
    ];
    for (body, want) in cases {
        let e = parse_page(body, &c).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn totals_are_read_at_their_pointer() {
    let c = shaped(
        "records = \"/items\"\n[source.pages]\nby = \"offset\"\nlimit = 10\nstop = \"total\"\ntotal = \"/meta/total\"",
    );
    assert_eq!(parse_page(r#"{"items":[],"meta":{"total":42}}"#, &c).unwrap().total, Some(42));
    assert_eq!(parse_page(r#"{"items":[],"meta":{"total":"42"}}"#, &c).unwrap().total, Some(42));
    for (body, want) in
        [(r#"{"items":[]}"#, "no total at \"/meta/total\""), (r#"{"items":[],"meta":{"total":-1}}"#, "not a number")]
    {
        let e = parse_page(body, &c).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn deflate_is_read_with_or_without_its_zlib_wrapper_and_gzip_too() {
    use flate2::Compression;
    use std::io::Write;
    let text = br#"{"items":[{"id":1}]}"#;
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(text).unwrap();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
    raw.write_all(text).unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    gzip.write_all(text).unwrap();
    assert_eq!(decode(zlib.finish().unwrap(), Some("deflate"), 1000).unwrap(), text);
    assert_eq!(decode(raw.finish().unwrap(), Some("Deflate "), 1000).unwrap(), text);
    assert_eq!(decode(gzip.finish().unwrap(), Some("x-gzip"), 1000).unwrap(), text);
    assert_eq!(decode(text.to_vec(), None, 1000).unwrap(), text);
    assert_eq!(decode(text.to_vec(), Some("br"), 1000), Err(DecodeError::Unknown("br".into())));
    assert!(matches!(decode(b"not deflate at all".to_vec(), Some("deflate"), 1000), Err(DecodeError::Corrupt(_))));
}

/// A deflate bomb: a few kilobytes that inflate to far more than `max_bytes` must stop at the
/// limit, not fill memory.
#[test]
fn a_deflate_bomb_stops_at_max_bytes() {
    use std::io::Write;
    let mut bomb = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..64 {
        bomb.write_all(&[0; 1 << 20]).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 100_000);
    assert_eq!(decode(bomb.clone(), Some("deflate"), 1 << 20), Err(DecodeError::TooLarge));
    assert_eq!(decode(bomb, Some("deflate"), 64 << 20).unwrap().len(), 64 << 20, "exactly the limit is fine");
}

#[test]
fn follow_hosts_name_a_host_or_a_host_and_port() {
    let hosts = vec!["cdn.example".to_string(), "127.0.0.1:9000".to_string()];
    assert!(followed_host("https://CDN.example/x", &hosts));
    assert!(followed_host("http://cdn.example:8080/x", &hosts));
    assert!(followed_host("http://127.0.0.1:9000/x", &hosts));
    assert!(!followed_host("http://127.0.0.1:9001/x", &hosts));
    assert!(!followed_host("http://evil.example/x?cdn.example", &hosts));
    assert!(!followed_host("http://cdn.example@evil.example/x", &hosts));
}
