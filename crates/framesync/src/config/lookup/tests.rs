//! `sink.lookup_url` and `[sink.lookup]`: the forms, their defaults, and errors naming the key.

use std::path::Path;

use crate::config::{Config, LookupMethod, Presence};
use crate::template::Vars;

fn env(name: &str) -> Option<String> {
    (name == "RS_TOKEN").then(|| "rs-secret-456".into())
}

/// A config whose `[sink]` ends with `sink_tail` (keys, then tables).
fn parse(sink_tail: &str) -> anyhow::Result<Config> {
    let text = format!(
        r#"
ledger = "orders.db"
[frames]
start = "2026-11-01T00:00:00Z"
[source]
url = "http://127.0.0.1:1/ss?from={{from}}&to={{to}}"
uid = "/id"
[sink]
url = "http://127.0.0.1:1/rs"
{sink_tail}
"#
    );
    Config::parse(&text, Path::new("/etc/framesync"), &env)
}

fn error(sink_tail: &str) -> String {
    format!("{:#}", parse(sink_tail).expect_err("the config should be refused"))
}

#[test]
fn lookup_url_keeps_its_meaning_a_get_whose_status_says_present() {
    let config = parse("lookup_url = \"http://127.0.0.1:1/rs/{uid}\"").unwrap();
    let lookup = config.sink.lookup.unwrap();
    assert_eq!((lookup.key, lookup.url.as_str()), ("sink.lookup_url", "http://127.0.0.1:1/rs/{uid}"));
    assert_eq!((lookup.presence, lookup.method, lookup.batch_size), (Presence::Status, LookupMethod::Get, 1));
    assert!(parse("").unwrap().sink.lookup.is_none(), "no lookup unless one is given");
}

#[test]
fn a_lookup_by_query_reads_present_at_a_pointer() {
    let config = parse(
        r#"
[sink.lookup]
url = "http://127.0.0.1:1/ch?token=${RS_TOKEN}"
present = "/data/0/n"
[sink.lookup.query]
query = "SELECT count() AS n FROM t WHERE uid = unhex('{uid:hex}') FORMAT JSON"
"#,
    )
    .unwrap();
    let lookup = config.sink.lookup.unwrap();
    assert_eq!(lookup.presence, Presence::Pointer("/data/0/n".into()));
    let url = lookup.query.apply(&lookup.url, &Vars { uid: "a'b", ..Vars::default() });
    assert_eq!(
        url,
        "http://127.0.0.1:1/ch?token=rs-secret-456&query=SELECT%20count%28%29%20AS%20n%20FROM%20t%20WHERE%20uid%20%3D%20unhex%28%27612762%27%29%20FORMAT%20JSON"
    );
    assert!(config.secrets.scrub(&url).contains("token=***"));
}

#[test]
fn a_batched_lookup_lists_the_uids_present() {
    let config = parse(
        r#"
[sink.lookup]
url = "http://127.0.0.1:1/ch"
batch_size = 200
found = "/data"
found_uid = "/uid"
[sink.lookup.query]
default_format = "JSON"
[sink.lookup.batch_query]
query = "SELECT uid FROM t WHERE has(arrayMap(x -> unhex(x), splitByChar(',', '{uids:hex}')), uid)"
"#,
    )
    .unwrap();
    let lookup = config.sink.lookup.unwrap();
    assert!(lookup.is_batched());
    assert_eq!(lookup.batch_size, 200);
    assert_eq!(lookup.presence, Presence::Found { list: "/data".into(), uid: "/uid".into() });
    let post = parse(
        r#"
[sink.lookup]
url = "http://127.0.0.1:1/_mget"
method = "POST"
body = '{"ids": {uids:json}}'
found = "/found"
"#,
    )
    .unwrap();
    let lookup = post.sink.lookup.unwrap();
    assert_eq!((lookup.method, lookup.content_type.as_str()), (LookupMethod::Post, "application/json"));
    let body = lookup.body.unwrap().render(&Vars { uids: &["a\"", "b,c"], ..Vars::default() });
    assert_eq!(body, r#"{"ids": ["a\"","b,c"]}"#);
}

#[test]
fn bad_lookups_are_refused_naming_the_key() {
    let url = "url = \"http://127.0.0.1:1/rs/{uid}\"";
    for (tail, named) in [
        (format!("lookup_url = \"http://127.0.0.1:1/rs/{{uid}}\"\n[sink.lookup]\n{url}"), "sink.lookup_url and [sink.lookup]"),
        ("[sink.lookup]\npresent = \"/n\"".into(), "sink.lookup.url: missing"),
        ("[sink.lookup]\nurl = \"http://127.0.0.1:1/rs\"".into(), "no {uid} in sink.lookup.url"),
        (format!("[sink.lookup]\n{url}\npresent = \"n\""), "sink.lookup.present: \"n\" is not a JSON pointer"),
        (format!("[sink.lookup]\n{url}\nbatch_size = 50"), "sink.lookup.batch_size: 50 needs a batched lookup"),
        (format!("[sink.lookup]\n{url}\nbatch_size = 0"), "sink.lookup.batch_size: 0 is out of range"),
        (format!("[sink.lookup]\n{url}\nfound_uid = \"/uid\""), "sink.lookup.found_uid: only with sink.lookup.found"),
        (format!("[sink.lookup]\n{url}\nbody = \"{{uid}}\""), "sink.lookup.body: a GET has no body"),
        (format!("[sink.lookup]\n{url}\nmethod = \"POST\""), "sink.lookup.body: missing"),
        (format!("[sink.lookup]\n{url}\nmethod = \"PUT\""), "method"),
        (format!("[sink.lookup]\n{url}\ncontent_type = \"a\\nb\""), "sink.lookup.content_type"),
        (format!("[sink.lookup]\n{url}\n[sink.lookup.batch_query]\nq = \"{{uids:json}}\""), "sink.lookup.batch_query: only for a batched lookup"),
        (format!("[sink.lookup]\n{url}\nfound = \"/data\""), "sink.lookup.url: unknown placeholder {uid}"),
        ("[sink.lookup]\nurl = \"http://127.0.0.1:1/rs\"\nfound = \"/data\"".into(), "no {uids:json} or {uids:hex}"),
        (
            "[sink.lookup]\nurl = \"http://127.0.0.1:1/rs\"\nfound = \"/data\"\n[sink.lookup.batch_query]\nq = \"{uids}\"".into(),
            "sink.lookup.batch_query.q: {uids} needs a filter",
        ),
        (
            "[sink.lookup]\nurl = \"http://127.0.0.1:1/rs\"\nfound = \"/data\"\npresent = \"/n\"\n[sink.lookup.batch_query]\nq = \"{uids:json}\"".into(),
            "sink.lookup.present: a batched lookup",
        ),
        (
            "[sink.lookup]\nurl = \"http://127.0.0.1:1/rs\"\n[sink.lookup.query]\nq = \"uid = '{uid}'\"".into(),
            "sink.lookup.query.q: {uid} between quotes",
        ),
        (format!("[sink.lookup]\n{url}\nbatch = 5"), "batch"),
    ] {
        let error = error(&tail);
        assert!(error.contains(named), "{tail}\n→ {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}
