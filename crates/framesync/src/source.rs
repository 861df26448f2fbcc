//! The sending server (SS) client: one GET per page of a frame, following the next-page link
//! or cursor until it is absent, turning the pages into records to stage. Parsing is pure
//! (`parse_page`, `collect`) so it is tested and fuzzed without sockets.

use std::collections::HashSet;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use serde_json::Value;

use crate::auth::Auth;
use crate::config::{SourceConfig, TimeFormat};
use crate::frames::{Epoch, Frame};
use crate::http;
use crate::model::{DeadLetter, StagedRecord};
use crate::record;
use crate::servers::Pacer;
use crate::template::{QUERY_VALUE, Query, Vars};

/// One page of a frame as the SS served it: its records in order (repeats kept: the ledger's
/// staging keeps a UID once across the whole frame), the records that cannot be staged, and
/// what the answer said beside them.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<StagedRecord>,
    /// Records that cannot be staged (no usable UID): dead-lettered with the frame.
    pub invalid: Vec<DeadLetter>,
    /// Records stamped outside the frame (or with no readable timestamp): kept.
    pub out_of_frame: i64,
    /// The SS's clock, from its `Date` header, when it sent one.
    pub server_date: Option<Epoch>,
    /// How long the page took to arrive.
    pub took: Duration,
}

/// What a walk through a frame's pages learnt beside the records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Walked {
    pub pages: usize,
    pub out_of_frame: i64,
    /// The SS's clock, from the first `Date` header of the walk.
    pub server_date: Option<Epoch>,
    /// The slowest page.
    pub slowest: Duration,
}

impl Walked {
    /// Counts a page in.
    pub fn add(&mut self, page: &Page) {
        self.pages += 1;
        self.out_of_frame += page.out_of_frame;
        self.server_date = self.server_date.or(page.server_date);
        self.slowest = self.slowest.max(page.took);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The SS asked for quiet (429 or 503): stop pulling for this run.
    #[error("{message}")]
    Busy { message: String, retry_after: Option<Duration> },
    /// The SS refused the request (a 4xx other than 408, 425 and 429): it will not change by
    /// itself — history the SS no longer keeps, a query it does not take. Retried with backoff;
    /// a re-check the SS keeps refusing is given up.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// Anything else: the frame is retried later with backoff.
    #[error("{0}")]
    Failed(String),
    /// The caller stopped the walk between pages (the run is out of time).
    #[error("stopped between pages")]
    Stopped,
}

/// A frame's pages, in order, fetched as they are asked for; an error ends them.
pub type Pages<'a> = Box<dyn Iterator<Item = Result<Page, PullError>> + 'a>;

/// The SS: a frame's pages. A trait so the run loop is tested without a server.
pub trait Source {
    fn pages(&self, frame: Frame) -> Pages<'_>;
}

pub struct HttpSource {
    agent: ureq::Agent,
    auth: Auth,
    config: SourceConfig,
    pacer: Pacer,
}

impl HttpSource {
    pub fn new(config: &SourceConfig) -> Self {
        Self::with_agent(config, http::agent(config.timeout, &config.transport))
    }

    /// With an agent of the caller's (the simulation's in-process transport).
    pub fn with_agent(config: &SourceConfig, agent: ureq::Agent) -> Self {
        let auth = Auth::new(config.auth.as_ref(), &agent);
        Self { agent, auth, config: config.clone(), pacer: Pacer::new(config.max_rps) }
    }

    fn get(&self, url: &str) -> Result<(String, Option<Epoch>), PullError> {
        let shown = url;
        let send = || {
            self.pacer.wait();
            let mut request = self.agent.get(url).header("Accept", "application/json");
            for (name, value) in &self.config.headers {
                request = request.header(name, value);
            }
            self.auth.apply(request)?.call().map_err(|e| PullError::Failed(format!("GET {shown}: {}", http::why(&e))))
        };
        let mut response = send()?;
        if response.status() == 401 && self.auth.renew() {
            response = send()?;
        }
        let status = response.status().as_u16();
        let date = http::date_header(&response);
        let retry_after = http::retry_after(&response);
        let location = http::location(&response);
        let body = response.body_mut().with_config().limit(self.config.max_bytes).read_to_string();
        let body = match body {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(limit)) => {
                return Err(PullError::Failed(format!(
                    "GET {shown}: the response is larger than source.max_bytes ({limit} bytes); raise it or ask the SS for smaller pages"
                )));
            }
            Err(e) => {
                return Err(PullError::Failed(format!("GET {shown}: reading the body: {e}")));
            }
        };
        match status {
            200..=299 => Ok((body, date)),
            300..=399 => Err(PullError::Failed(format!(
                "GET {shown}: HTTP {status}, a redirect to {location}: framesync never follows a redirect; put the final URL in source.url"
            ))),
            429 | 503 => Err(PullError::Busy {
                message: format!("GET {shown}: HTTP {status} (the SS is busy){}", http::retry_note(retry_after)),
                retry_after,
            }),
            400..=499 if ![408, 425].contains(&status) => Err(PullError::Refused {
                status,
                message: format!("GET {shown}: HTTP {status}: {}", http::excerpt(&body)),
            }),
            _ => Err(PullError::Failed(format!("GET {shown}: HTTP {status}: {}", http::excerpt(&body)))),
        }
    }
}

impl Source for HttpSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        let first = frame_url(&self.config.url, &self.config.query, self.config.time_format, frame);
        Box::new(PageWalk {
            source: self,
            frame,
            url: Some(first.clone()),
            first,
            seen: HashSet::new(),
            pages: 0,
            total: 0,
        })
    }
}

/// A walk through a frame's pages: GETs the next page when asked for it, following the
/// next-page link or cursor on the SS's own server until there is none.
struct PageWalk<'a> {
    source: &'a HttpSource,
    frame: Frame,
    first: String,
    /// The next page to GET; none when the walk is over (the last page, or an error).
    url: Option<String>,
    seen: HashSet<String>,
    pages: usize,
    total: usize,
}

impl Iterator for PageWalk<'_> {
    type Item = Result<Page, PullError>;

    fn next(&mut self) -> Option<Self::Item> {
        let url = self.url.take()?;
        if self.pages > 0 {
            crate::hooks::kill_point("mid-pull");
        }
        Some(self.fetch(&url))
    }
}

impl PageWalk<'_> {
    /// GETs one page and works out the next; an error ends the walk.
    fn fetch(&mut self, url: &str) -> Result<Page, PullError> {
        let (source, frame) = (self.source, self.frame);
        let config = &source.config;
        let started = std::time::Instant::now();
        let (body, server_date) = source.get(url)?;
        let took = started.elapsed();
        let parsed = parse_page(&body, config).map_err(|e| PullError::Failed(format!("GET {}: {e}", url)))?;
        drop(body);
        self.total += parsed.records.len();
        if self.total > config.max_records {
            return Err(PullError::Failed(format!(
                "frame {frame} has more than source.max_records ({}) records; raise the limit or use smaller frames",
                config.max_records
            )));
        }
        self.pages += 1;
        if let Some(next) = parsed.next {
            let url = next_url(&self.first, &next, &config.cursor_param);
            if !same_origin(&url, &self.first) {
                return Err(PullError::Failed(format!(
                    "frame {frame}: the SS's next page is on another server ({}); framesync sends the SS's headers only to source.url's own server",
                    origin(&url)
                )));
            }
            if !self.seen.insert(url.clone()) {
                return Err(PullError::Failed(format!(
                    "frame {frame}: the SS sent the same next page twice (a pagination loop)"
                )));
            }
            if self.pages >= config.max_pages {
                return Err(PullError::Failed(format!(
                    "frame {frame} has more than source.max_pages ({}) pages",
                    config.max_pages
                )));
            }
            self.url = Some(url);
        }
        let mut page = collect(frame, parsed.records, config);
        page.server_date = server_date;
        page.took = took;
        Ok(page)
    }
}

/// Fills `{from}`, `{to}` and `{last}` into the URL template, URL-encoded, and adds the query
/// parameters. `{last}` is the frame's last millisecond, for SS APIs whose ranges are
/// inclusive; epoch seconds cannot express it, so there it is `to - 1` s (and `check` warns).
pub fn frame_url(template: &str, query: &Query, format: TimeFormat, frame: Frame) -> String {
    let (from, to) = (frame.start, frame.end());
    let (from, to, last) = match format {
        TimeFormat::Rfc3339 => {
            (crate::frames::rfc3339(from), crate::frames::rfc3339(to), crate::frames::rfc3339_ms(to * 1000 - 1))
        }
        TimeFormat::EpochS => (from.to_string(), to.to_string(), (to - 1).to_string()),
        TimeFormat::EpochMs => ((from * 1000).to_string(), (to * 1000).to_string(), (to * 1000 - 1).to_string()),
    };
    let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
    let url = template.replace("{from}", &enc(&from)).replace("{to}", &enc(&to)).replace("{last}", &enc(&last));
    query.apply(&url, &Vars { from: &from, to: &to, last: &last, ..Vars::default() })
}

/// The URL of the next page: an absolute URL, a path on the same server, or a cursor added
/// to the frame's first URL.
pub fn next_url(first: &str, next: &str, cursor_param: &str) -> String {
    if next.starts_with("http://") || next.starts_with("https://") {
        return next.to_owned();
    }
    if next.starts_with('/') {
        return format!("{}{next}", origin(first));
    }
    let joiner = if first.contains('?') { '&' } else { '?' };
    format!("{first}{joiner}{cursor_param}={}", utf8_percent_encode(next, QUERY_VALUE))
}

/// Whether two URLs have the same scheme, host and port: the SS's headers (its token) go only
/// to its own server, so a next page elsewhere is refused.
pub fn same_origin(a: &str, b: &str) -> bool {
    let parts = |url: &str| {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some((scheme, host, port))
    };
    matches!((parts(a), parts(b)), (Some(a), Some(b)) if a == b)
}

fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A page's body, parsed: its records and the next link or cursor.
#[derive(Debug, PartialEq)]
pub struct PageBody {
    pub records: Vec<Value>,
    pub next: Option<String>,
}

/// Parses a page body: the records array at `records`, and the next link or cursor at `next`.
pub fn parse_page(body: &str, config: &SourceConfig) -> Result<PageBody, String> {
    let doc: Value = serde_json::from_str(body).map_err(|e| {
        if e.is_eof() {
            format!("the body ends early ({e}): a truncated response")
        } else {
            format!("the body is not JSON ({e}): {}", http::excerpt(body))
        }
    })?;
    let records = match doc.pointer(&config.records) {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(format!("{} is {}, not an array of records", where_(&config.records), record::kind(other)));
        }
        None => return Err(format!("the body has no records array at {}", where_(&config.records))),
    };
    let next = match config.next.as_deref().and_then(|p| doc.pointer(p)) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "the next page at {} is {}, not a URL or cursor",
                config.next.as_deref().unwrap_or(""),
                record::kind(other)
            ));
        }
    };
    Ok(PageBody { records, next })
}

fn where_(pointer: &str) -> String {
    if pointer.is_empty() { "the body".into() } else { format!("{pointer:?}") }
}

/// Turns a page's records into records to stage: UIDs read, records stamped outside the frame
/// counted, records without a usable UID set aside. Repeats are kept: the ledger's staging
/// keeps each UID once per frame.
pub fn collect(frame: Frame, records: impl IntoIterator<Item = Value>, config: &SourceConfig) -> Page {
    let mut page = Page::default();
    for value in records {
        let body = value.to_string();
        let uid = match record::uid(&value, &config.uid) {
            Ok(uid) => uid,
            Err(why) => {
                let why = why.to_string();
                page.invalid.push(DeadLetter::invalid(format!("invalid:{}", record::content_hash(&value)), why, body));
                continue;
            }
        };
        let ts_ms = timestamp(&value, config);
        if !ts_ms.is_some_and(|t| frame.contains_ms(t)) && config.timestamp.is_some() {
            page.out_of_frame += 1;
        }
        page.records.push(StagedRecord { uid, ts_ms, body });
    }
    page
}

fn timestamp(value: &Value, config: &SourceConfig) -> Option<i64> {
    let field = value.pointer(config.timestamp.as_deref()?)?;
    record::time_ms(field, config.timestamp_format).ok()
}

#[cfg(test)]
mod tests {
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
        assert_eq!(page, PageBody { records: vec![json!({"id": 1})], next: Some("/p2".into()) });
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
}

/// Hostile SS answers: whatever the bytes, parsing returns records or an error, never panics.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::config::Config;
    use crate::frames::FrameSize;
    use proptest::prelude::*;

    fn config() -> SourceConfig {
        let text = "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h/e?from={from}&to={to}\"\nrecords = \"/items\"\nuid = \"/id\"\ntimestamp = \"/t\"\nnext = \"/next\"\n[sink]\nurl = \"http://h/rs\"\n";
        Config::parse(text, std::path::Path::new("."), &|_| None).unwrap().source
    }

    /// Any JSON value, nested a few levels, with awkward strings and numbers.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC*".prop_map(Value::String),
            "[\\x00-\\x1f\\r\\n\"\\\\ü✓]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("id".to_string()),
                        Just("items".to_string()),
                        Just("next".to_string()),
                        Just("t".to_string()),
                        "[a-z]{1,3}".prop_map(String::from)
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_page(&String::from_utf8_lossy(&bytes), &config());
        }

        #[test]
        fn arbitrary_json_never_panics_the_parser_or_the_collector(doc in json()) {
            let config = config();
            let body = doc.to_string();
            if let Ok(page) = parse_page(&body, &config) {
                let frame = FrameSize::new(60).unwrap().frame_at(0);
                let pulled = collect(frame, page.records.clone(), &config);
                prop_assert_eq!(pulled.records.len() + pulled.invalid.len(), page.records.len());
                for record in &pulled.records {
                    prop_assert!(!record.uid.is_empty());
                }
            }
        }

        #[test]
        fn truncated_json_is_an_error_not_a_panic(doc in json(), cut in 0usize..200) {
            let body = serde_json::json!({"items": [doc]}).to_string();
            let cut = body.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(body.len());
            if cut < body.len() {
                prop_assert!(parse_page(&body[..cut], &config()).is_err());
            }
        }
    }
}
