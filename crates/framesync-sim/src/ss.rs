//! The simulated sending server: `GET /ss/events?from=&to=[&cursor=][&limit=]`, a time-range
//! query over the generated records with keyset pagination.
//!
//! Keyset, not offset: a page starts strictly after the last (timestamp, UID) served, so late
//! records that become visible between two pages never shift a page or get served twice. The
//! other shapes (a `Link` header, offset and page-number paging, NDJSON, compressed bodies, next
//! links on another server) are asked for with query knobs: see `shape`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::data::{Generator, Range, Record};
use crate::http::{Request, Response};

mod shape;

use shape::{Paging, Shape};

/// What stays readable in the `next` URL; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub struct Ss {
    generator: Generator,
    page_size: usize,
}

#[derive(Debug, PartialEq)]
struct Query {
    range: Range,
    /// `from` and `to` as the client spelled them, to be echoed in `next`.
    from: String,
    to: String,
    cursor: Option<Cursor>,
    limit: Option<usize>,
    /// The offset or page number asked for, with offset or page paging.
    offset: Option<usize>,
    page: Option<usize>,
    shape: Shape,
}

/// The last (timestamp, UID) a page served; the next page starts strictly after it.
#[derive(Clone, Debug, PartialEq)]
struct Cursor {
    ts_ms: i64,
    uid: String,
}

impl Ss {
    pub fn new(generator: Generator, page_size: usize) -> Ss {
        Ss { generator, page_size }
    }

    pub fn events(&self, request: &Request, now_ms: i64) -> Response {
        match Query::parse(request) {
            Ok(query) => query.shape.encode(request, self.page(&query, now_ms)),
            Err(message) => Response::error(400, message),
        }
    }

    fn page(&self, query: &Query, now_ms: i64) -> Response {
        let limit = query.limit.unwrap_or(self.page_size).min(self.page_size);
        let shape = &query.shape;
        let (items, next, total) = match shape.paging {
            Paging::Next | Paging::Link => {
                let mut items: Vec<Record> = self.after_cursor(query, now_ms).take(limit + 1).collect();
                let more = items.len() > limit;
                items.truncate(limit);
                let next = items.last().filter(|_| more).map(|last| next_url(query, last));
                (items, next, None)
            }
            Paging::Offset | Paging::Page => {
                let offset = match shape.paging {
                    Paging::Page => query.page.unwrap_or(0).saturating_sub(shape.page_base as usize) * limit,
                    _ => query.offset.unwrap_or(0),
                };
                let offset = if shape.ignore_offset { 0 } else { offset };
                let visible = self.after_cursor(query, now_ms);
                let (mut items, mut total) = (Vec::new(), 0);
                for (i, record) in visible.enumerate() {
                    if i >= offset && items.len() < limit {
                        items.push(record);
                    }
                    total += 1;
                }
                (items, None, Some((total + shape.lie_total).max(0)))
            }
        };
        let mut response = if shape.ndjson {
            let lines: String = items.iter().map(|r| r.to_json().to_string() + "\n").collect();
            Response::new(200, "application/x-ndjson", lines.into_bytes())
        } else {
            let mut body = Map::new();
            body.insert("items".into(), items.iter().map(Record::to_json).collect());
            if let (Paging::Next, Some(next)) = (shape.paging, &next) {
                body.insert("next".into(), next.clone().into());
            }
            if let Some(total) = total {
                body.insert("total".into(), total.into());
            }
            Response::json(200, &Value::Object(body))
        };
        if let (Paging::Link, Some(next)) = (shape.paging, next) {
            // Relative to the page when on this server, to exercise the client's resolution.
            let next = next.strip_prefix("/ss/").unwrap_or(&next).to_owned();
            response = response.with_header("Link", format!("<{next}>; rel=\"next\"; title=\"more, please\""));
        }
        response
    }

    /// Visible records of the range after the cursor, in order. Generation starts at the
    /// cursor's minute and stops at `now`: nothing stamped later can be visible yet.
    fn after_cursor<'a>(&'a self, query: &'a Query, now_ms: i64) -> impl Iterator<Item = Record> + 'a {
        let Range { from_ms, to_ms } = query.range;
        let from_ms = query.cursor.as_ref().map_or(from_ms, |c| c.ts_ms.max(from_ms));
        let to_ms = to_ms.min(now_ms.saturating_add(1)).max(from_ms);
        let after = move |r: &Record| query.cursor.as_ref().is_none_or(|c| r.sort_key() > c.key());
        let records = self.generator.records(Range { from_ms, to_ms });
        records.filter(move |r| r.visible(now_ms)).filter(after)
    }
}

fn next_url(query: &Query, last: &Record) -> String {
    let encode = |s: &str| utf8_percent_encode(s, QUERY_VALUE).to_string();
    let cursor = Cursor { ts_ms: last.ts_ms, uid: last.uid_text.clone() }.encode();
    let origin = query.shape.next_origin.as_deref().unwrap_or("");
    let mut url = format!("{origin}/ss/events?from={}&to={}&cursor={cursor}", encode(&query.from), encode(&query.to));
    if let Some(limit) = query.limit {
        url += &format!("&limit={limit}");
    }
    for (key, value) in &query.shape.carried {
        url += &format!("&{key}={}", encode(value));
    }
    url
}

impl Query {
    fn parse(request: &Request) -> Result<Query, String> {
        let (from, to) = (request.param("from"), request.param("to"));
        let range = Range::parse(from, to)?;
        let cursor = request.param("cursor").map(Cursor::decode).transpose()?;
        let limit = request.param("limit").map(parse_limit).transpose()?;
        let (from, to) = (from.unwrap_or_default().into(), to.unwrap_or_default().into());
        let shape = Shape::parse(request)?;
        let whole = |key: &str| {
            request
                .param(key)
                .map(|v| v.parse::<usize>().map_err(|_| format!("parameter `{key}`: `{v}` is not a whole number")))
                .transpose()
        };
        let (offset, page) = (whole("offset")?, whole("page")?);
        Ok(Query { range, from, to, cursor, limit, offset, page, shape })
    }
}

fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) | Err(_) => Err(format!("parameter `limit`: `{text}` is not a positive integer")),
        Ok(n) => Ok(n),
    }
}

impl Cursor {
    fn key(&self) -> (i64, &str) {
        (self.ts_ms, &self.uid)
    }

    /// Base16 of "{ts}_{uid}": opaque to clients and safe in a URL whatever the UID holds.
    fn encode(&self) -> String {
        let text = format!("{}_{}", self.ts_ms, self.uid);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(hex: &str) -> Result<Cursor, String> {
        let invalid = || format!("parameter `cursor`: `{hex}` is not a cursor from this server");
        let bytes: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
        let text = String::from_utf8(bytes.ok_or_else(invalid)?).map_err(|_| invalid())?;
        let (ts, uid) = text.split_once('_').ok_or_else(invalid)?;
        let ts_ms = ts.parse().map_err(|_| invalid())?;
        Ok(Cursor { ts_ms, uid: uid.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Generator, UidStyle, generator};
    use crate::http::parse_request;

    const NOV_1_2026_MS: i64 = 1_793_491_200_000;
    const LATER: i64 = NOV_1_2026_MS + 3_600_000;

    fn get(ss: &Ss, target: &str, now_ms: i64) -> (u16, Value) {
        let raw = format!("GET {target} HTTP/1.1\r\n\r\n");
        let response = ss.events(&parse_request(raw.as_bytes()).unwrap(), now_ms);
        (response.status, serde_json::from_slice(&response.body).unwrap())
    }

    /// Follows `next` until it is absent; returns the UIDs served, in order.
    fn all_pages(ss: &Ss, first: &str, now_ms: i64) -> Vec<String> {
        let (mut uids, mut target) = (Vec::new(), Some(first.to_string()));
        while let Some(t) = target {
            let (status, body) = get(ss, &t, now_ms);
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().unwrap();
            uids.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_string()));
            target = body["next"].as_str().map(String::from);
        }
        uids
    }

    #[test]
    fn cursors_round_trip_including_unicode_and_underscores() {
        for uid in ["ev-1-2", "ünï-29891520-7-✓", "a_b_c", "", "😀 & = ?"] {
            let cursor = Cursor { ts_ms: NOV_1_2026_MS + 5, uid: uid.into() };
            let encoded = cursor.encode();
            assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(Cursor::decode(&encoded), Ok(cursor));
        }
        for bad in ["zz", "abc", "5f31", "ff"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_cover_the_range_exactly_once_in_order() {
        let unicode = Generator { uid_style: UidStyle::Unicode, ..generator(4, 25) };
        let ss = Ss::new(unicode.clone(), 7);
        let range = Range { from_ms: NOV_1_2026_MS, to_ms: NOV_1_2026_MS + 120_000 };
        let expected: Vec<String> = unicode.records(range).map(|r| r.uid_text).collect();
        let first = "/ss/events?from=2026-11-01T00%3A00%3A00Z&to=1793491320";
        assert_eq!(all_pages(&ss, first, LATER), expected);
        assert_eq!(expected.len(), 50);
    }

    #[test]
    fn limit_caps_a_page_but_never_exceeds_page_size() {
        let ss = Ss::new(generator(1, 10), 4);
        let (_, body) = get(&ss, "/ss/events?from=1793491200&to=1793491260&limit=2", LATER);
        assert_eq!(body["items"].as_array().unwrap().len(), 2);
        assert!(body["next"].as_str().unwrap().ends_with("&limit=2"));
        let (_, body) = get(&ss, "/ss/events?from=1793491200&to=1793491260&limit=50", LATER);
        assert_eq!(body["items"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn the_last_page_has_no_next() {
        let ss = Ss::new(generator(1, 10), 10);
        let (_, body) = get(&ss, "/ss/events?from=1793491200&to=1793491260", LATER);
        assert_eq!(body["items"].as_array().unwrap().len(), 10);
        assert!(body.get("next").is_none());
    }

    #[test]
    fn late_records_appear_once_they_are_visible_without_shifting_pages() {
        let late = Generator { late_fraction: 0.5, max_lateness_ms: 600_000, ..generator(2, 20) };
        let ss = Ss::new(late.clone(), 5);
        let first = "/ss/events?from=1793491200&to=1793491260";
        let now = NOV_1_2026_MS + 60_000;
        let early = all_pages(&ss, first, now);
        let all = all_pages(&ss, first, LATER);
        assert!(early.len() < all.len() && all.len() == 20);
        assert!(early.iter().all(|uid| all.contains(uid)));
    }

    #[test]
    fn records_not_yet_stamped_are_not_served() {
        let ss = Ss::new(generator(1, 10), 100);
        let (_, body) = get(&ss, "/ss/events?from=1793491200&to=1793491260", NOV_1_2026_MS + 30_000);
        let items = body["items"].as_array().unwrap();
        assert!(items.len() < 10);
        assert!(items.iter().all(|r| r["created_at"].as_str().unwrap() < "2026-11-01T00:00:30"));
    }

    #[test]
    fn bad_parameters_get_400_with_a_json_error() {
        let ss = Ss::new(generator(1, 10), 100);
        for target in [
            "/ss/events?to=1793491260",
            "/ss/events?from=soon&to=1793491260",
            "/ss/events?from=1793491260&to=1793491200",
            "/ss/events?from=1793491200&to=1793491260&limit=0",
            "/ss/events?from=1793491200&to=1793491260&cursor=xyz",
        ] {
            let (status, body) = get(&ss, target, LATER);
            assert_eq!(status, 400, "{target}");
            assert!(body["error"].is_string(), "{target}");
        }
    }

    #[test]
    fn offset_and_page_paging_cover_the_range_once_and_state_the_total() {
        let ss = Ss::new(generator(1, 10), 100);
        let range = "/ss/events?from=1793491200&to=1793491260";
        let mut seen = Vec::new();
        for offset in [0, 4, 8] {
            let (_, body) = get(&ss, &format!("{range}&paging=offset&limit=4&offset={offset}"), LATER);
            assert_eq!(body["total"], 10);
            seen.extend(body["items"].as_array().unwrap().iter().map(|r| r["id"].clone()));
        }
        let mut by_page = Vec::new();
        for page in [0, 1, 2] {
            let (_, body) = get(&ss, &format!("{range}&paging=page&page_base=0&limit=4&page={page}"), LATER);
            by_page.extend(body["items"].as_array().unwrap().iter().map(|r| r["id"].clone()));
        }
        assert_eq!(seen.len(), 10);
        assert_eq!(seen, by_page);
        let (_, lying) =
            get(&ss, &format!("{range}&paging=offset&limit=4&lie_total=3&ignore_offset=1&offset=4"), LATER);
        assert_eq!((lying["total"].as_i64(), &lying["items"][0]["id"]), (Some(13), &seen[0]));
    }

    #[test]
    fn next_links_carry_the_knobs_and_may_point_at_another_server() {
        let ss = Ss::new(generator(1, 10), 4);
        let (_, body) = get(&ss, "/ss/events?from=1793491200&to=1793491260&next_origin=http://o:9&format=json", LATER);
        let next = body["next"].as_str().unwrap();
        assert!(
            next.starts_with("http://o:9/ss/events?") && next.contains("&next_origin=http%3A%2F%2Fo%3A9"),
            "{next}"
        );
        let raw = "GET /ss/events?from=1793491200&to=1793491260&format=ndjson HTTP/1.1\r\n\r\n";
        let response = ss.events(&parse_request(raw.as_bytes()).unwrap(), LATER);
        let text = String::from_utf8(response.body).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).unwrap()["id"].is_string()));
    }
}
