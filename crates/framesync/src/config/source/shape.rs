//! The shape of the SS's answers: `[source.pages]` (how a frame's pages are walked and when the
//! walk ends), `source.format` (a JSON document or newline-delimited JSON) and
//! `source.follow_hosts` (the other hosts a next page may be on).

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer};

use super::super::check;
use super::super::toml_error::read_str;

/// How the next page of a frame is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageBy {
    /// A next-page URL, path or cursor at the JSON pointer `source.next`.
    Next,
    /// The `Link: <url>; rel="next"` response header.
    Link,
    /// `offset` and `limit` query parameters, the offset moved by the records each page served.
    Offset,
    /// A page number query parameter, from `first_page` on.
    Page,
    /// One page per frame.
    None,
}

impl PageBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PageBy::Next => "next",
            PageBy::Link => "link",
            PageBy::Offset => "offset",
            PageBy::Page => "page",
            PageBy::None => "none",
        }
    }

    /// Whether framesync numbers the pages itself (offset or page number).
    pub fn counts(self) -> bool {
        matches!(self, PageBy::Offset | PageBy::Page)
    }
}

/// When an offset or page-number walk ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// A page with no records.
    Empty,
    /// A page with fewer than `limit` records.
    Short,
    /// Once the records served reach the total the SS states at `total`.
    Total,
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// One JSON document, the records at `source.records`.
    #[default]
    Json,
    /// One JSON value per non-empty line, each a record.
    Ndjson,
}

/// `[source.pages]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub by: PageBy,
    /// Records asked per page, sent as `limit_param` on every first URL when set.
    pub limit: Option<u64>,
    pub limit_param: String,
    pub offset_param: String,
    pub page_param: String,
    pub first_page: u64,
    pub stop: Stop,
    /// JSON pointer to the total number of records (with `stop = "total"`).
    pub total: Option<String>,
}

impl Paging {
    /// One page, or the next link at `source.next`: the walk as it is without `[source.pages]`.
    pub fn default_for(next: Option<&str>) -> Paging {
        let by = if next.is_some() { PageBy::Next } else { PageBy::None };
        Paging {
            by,
            limit: None,
            limit_param: "limit".into(),
            offset_param: "offset".into(),
            page_param: "page".into(),
            first_page: 1,
            stop: Stop::Empty,
            total: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(in crate::config) struct RawPages {
    by: Option<PageBy>,
    limit: Option<u64>,
    limit_param: Option<String>,
    offset_param: Option<String>,
    page_param: Option<String>,
    first_page: Option<u64>,
    stop: Option<Stop>,
    #[serde(deserialize_with = "pointer")]
    total: Option<String>,
}

fn pointer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    read_str(deserializer, |text| check::pointer(text, false).map(Some))
}

impl RawPages {
    /// Checks the table against `source.next` and `source.format`.
    pub(in crate::config) fn check(self, next: Option<&str>, format: BodyFormat) -> Result<Paging> {
        let mut paging = Paging::default_for(next);
        let by = self.by.unwrap_or(paging.by);
        match (by, next) {
            (PageBy::Next, None) => bail!(
                "source.pages.by: \"next\" reads the next page at source.next, which is not set; add e.g. next = \"/next\", or pick \"link\", \"offset\", \"page\" or \"none\""
            ),
            (PageBy::Link | PageBy::Offset | PageBy::Page | PageBy::None, Some(_)) => bail!(
                "source.pages.by: \"{}\" and source.next are two ways to find the next page; remove source.next or set by = \"next\"",
                by.as_str()
            ),
            _ => {}
        }
        if format == BodyFormat::Ndjson && next.is_some() {
            bail!(
                "source.next: a JSON pointer cannot be read in an NDJSON body (every line is a record); with format = \"ndjson\" use source.pages.by = \"link\", \"offset\" or \"page\""
            );
        }
        paging.by = by;
        if self.limit == Some(0) {
            bail!("source.pages.limit: must be at least 1");
        }
        paging.limit = self.limit;
        if by.counts() && self.limit.is_none() {
            bail!(
                "source.pages.limit: required with by = \"{}\" (the records asked per page), e.g. limit = 100",
                by.as_str()
            );
        }
        for (key, value, slot) in [
            ("limit_param", self.limit_param, &mut paging.limit_param),
            ("offset_param", self.offset_param, &mut paging.offset_param),
            ("page_param", self.page_param, &mut paging.page_param),
        ] {
            if let Some(value) = value {
                if value.is_empty() {
                    bail!("source.pages.{key}: a query parameter needs a name");
                }
                *slot = value;
            }
        }
        if self.first_page.is_some() && by != PageBy::Page {
            bail!("source.pages.first_page: only read with by = \"page\"");
        }
        paging.first_page = self.first_page.unwrap_or(1);
        if self.stop.is_some() && !by.counts() {
            bail!(
                "source.pages.stop: only read with by = \"offset\" or \"page\"; by = \"{}\" ends at the page with no next",
                by.as_str()
            );
        }
        paging.stop = self.stop.unwrap_or(Stop::Empty);
        match (paging.stop, self.total) {
            (Stop::Total, None) => {
                bail!(
                    "source.pages.total: required with stop = \"total\": the JSON pointer to the total, e.g. total = \"/total\""
                )
            }
            (Stop::Total, Some(_)) if format == BodyFormat::Ndjson => bail!(
                "source.pages.total: a JSON pointer cannot be read in an NDJSON body; use stop = \"empty\" or \"short\""
            ),
            (Stop::Empty | Stop::Short, Some(_)) => bail!("source.pages.total: only read with stop = \"total\""),
            (_, total) => paging.total = total,
        }
        Ok(paging)
    }
}

/// `source.follow_hosts`: hosts, with or without a port, lowercased.
pub(in crate::config) fn follow_hosts(hosts: Vec<String>) -> Result<Vec<String>> {
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let bad = host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) || host.contains("://");
            if bad {
                bail!("source.follow_hosts[{i}]: {host:?} is not a host; write a host name such as \"cdn.example.com\" (a port may follow: \"cdn.example.com:8443\")");
            }
            Ok(host.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(source: &str) -> Result<Config> {
        let text = format!(
            "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"http://h/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n{source}\n[sink]\nurl = \"http://h/rs\"\n"
        );
        Config::parse(&text, std::path::Path::new("."), &|_| None)
    }

    #[test]
    fn without_the_table_pages_are_walked_as_source_next_says() {
        let next = parse("next = \"/next\"").unwrap().source;
        assert_eq!(next.pages, Paging::default_for(Some("/next")));
        assert_eq!(next.pages.by, PageBy::Next);
        assert_eq!((next.format, next.follow_hosts.len()), (BodyFormat::Json, 0));
        assert_eq!(parse("").unwrap().source.pages.by, PageBy::None);
    }

    #[test]
    fn each_kind_of_walk_takes_its_keys() {
        let offset = parse("[source.pages]\nby = \"offset\"\nlimit = 50\nstop = \"total\"\ntotal = \"/total\"\noffset_param = \"skip\"").unwrap();
        let pages = offset.source.pages;
        assert_eq!((pages.by, pages.limit, pages.stop), (PageBy::Offset, Some(50), Stop::Total));
        assert_eq!((pages.offset_param.as_str(), pages.total.as_deref()), ("skip", Some("/total")));
        let page = parse("[source.pages]\nby = \"page\"\nlimit = 10\nfirst_page = 0\nstop = \"short\"").unwrap();
        assert_eq!((page.source.pages.first_page, page.source.pages.stop), (0, Stop::Short));
        let ndjson = parse(
            "format = \"ndjson\"\nfollow_hosts = [\"CDN.example.com\", \"h:8443\"]\n[source.pages]\nby = \"link\"",
        )
        .unwrap();
        assert_eq!(ndjson.source.follow_hosts, ["cdn.example.com", "h:8443"]);
    }

    #[test]
    fn bad_shapes_get_one_line_naming_the_key() {
        let cases = [
            ("[source.pages]\nby = \"offset\"", "source.pages.limit: required with by = \"offset\""),
            ("[source.pages]\nby = \"page\"", "source.pages.limit: required with by = \"page\""),
            ("[source.pages]\nby = \"offset\"\nlimit = 0", "source.pages.limit: must be at least 1"),
            ("[source.pages]\nby = \"offset\"\nlimit = 5\nstop = \"total\"", "source.pages.total: required"),
            ("[source.pages]\nby = \"offset\"\nlimit = 5\ntotal = \"/t\"", "source.pages.total: only read with stop"),
            ("[source.pages]\nby = \"offset\"\nlimit = 5\ntotal = \"t\"\nstop = \"total\"", "source.pages.total"),
            ("next = \"/next\"\n[source.pages]\nby = \"link\"", "source.pages.by: \"link\" and source.next"),
            ("[source.pages]\nby = \"next\"", "source.pages.by: \"next\" reads the next page at source.next"),
            ("[source.pages]\nby = \"cursor\"", "source.pages.by"),
            ("[source.pages]\nby = \"link\"\nstop = \"short\"", "source.pages.stop: only read with"),
            ("[source.pages]\nby = \"offset\"\nlimit = 5\nfirst_page = 0", "source.pages.first_page: only read with"),
            ("[source.pages]\nby = \"page\"\nlimit = 5\npage_param = \"\"", "source.pages.page_param"),
            ("[source.pages]\nsize = 5", "source.pages"),
            ("format = \"csv\"", "source.format"),
            ("format = \"ndjson\"\nrecords = \"/items\"", "source.records: must be \"\" with format = \"ndjson\""),
            ("format = \"ndjson\"\nnext = \"/next\"", "source.next: a JSON pointer cannot be read in an NDJSON body"),
            (
                "format = \"ndjson\"\n[source.pages]\nby = \"offset\"\nlimit = 5\nstop = \"total\"\ntotal = \"/t\"",
                "source.pages.total: a JSON pointer cannot be read in an NDJSON body",
            ),
            ("follow_hosts = [\"https://cdn.example\"]", "source.follow_hosts[0]"),
            ("follow_hosts = [\"ok.example\", \"\"]", "source.follow_hosts[1]"),
        ];
        for (source, want) in cases {
            let e = format!("{:#}", parse(source).unwrap_err());
            assert!(e.starts_with(want) && !e.contains('\n'), "{want:?} does not start {e:?}");
        }
    }
}
