//! The sending server (SS) client: one GET per page of a frame, walking the pages the way
//! `[source.pages]` says (a next link or cursor in the body, the `Link` header, an offset or a
//! page number) until the last, turning them into records to stage. Bodies are decoded and
//! parsed in `body`, next pages found in `pages`; both are pure, so they are tested and fuzzed
//! without sockets.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::auth::{Attempt, Auth, AuthError};
use crate::config::{BodyFormat, PageBy, SourceConfig, TimeFormat};
use crate::frames::{Epoch, Frame};
use crate::http;
use crate::model::{DeadLetter, StagedRecord};
use crate::record;
use crate::servers::Pacer;
use crate::template::{Query, Vars, encode, with_param};

mod body;
mod pages;

pub use body::{DecodeError, PageBody, decode, parse_page};
pub use pages::{After, after_page, followed_host, link_next, next_url, resolve, same_origin};

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

impl From<AuthError> for PullError {
    /// Credentials the token endpoint refuses are the SS refusing the request; an endpoint out
    /// of reach fails the frame, to be retried later.
    fn from(e: AuthError) -> Self {
        match e.permanent {
            true => PullError::Refused { status: e.status.unwrap_or(401), message: e.message },
            false => PullError::Failed(e.message),
        }
    }
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
    /// The SS served a page of `source.pages.limit` records: it fills its pages, so a short
    /// one is the last (see [`after_page`]).
    fills_pages: AtomicBool,
}

impl HttpSource {
    pub fn new(config: &SourceConfig) -> Self {
        Self::with_agent(config, http::agent(config.timeout, &config.transport))
    }

    /// With an agent of the caller's (the simulation's in-process transport).
    pub fn with_agent(config: &SourceConfig, agent: ureq::Agent) -> Self {
        let auth = Auth::new(config.auth.as_ref(), &agent);
        Self {
            agent,
            auth,
            config: config.clone(),
            pacer: Pacer::new(config.max_rps),
            fills_pages: AtomicBool::new(false),
        }
    }

    /// GETs one page. `trusted` says whether the URL is on the SS's own server: only then
    /// does the request carry `source.headers` and `source.auth` (its credentials).
    fn get(&self, url: &str, trusted: bool) -> Result<Answer, PullError> {
        let shown = url;
        let accept = match self.config.format {
            BodyFormat::Json => "application/json",
            BodyFormat::Ndjson => "application/x-ndjson, application/jsonl, application/json;q=0.5",
        };
        let send = |attempt: Option<&Attempt>| {
            self.pacer.wait();
            let mut request = self.agent.get(url).header("Accept", accept).header("Accept-Encoding", "gzip, deflate");
            if let Some(attempt) = attempt {
                request = attempt.apply(http::with_headers(request, &self.config.headers))?;
            }
            request.call().map_err(|e| PullError::Failed(format!("GET {shown}: {}", http::why(&e))))
        };
        let mut response = if trusted { self.auth.send_renewing(|attempt| send(Some(attempt)))? } else { send(None)? };
        let status = response.status().as_u16();
        let date = http::date_header(&response);
        let retry_after = http::retry_after(&response);
        let location = http::location(&response);
        let links = response
            .headers()
            .get_all("link")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let encoding =
            response.headers().get("content-encoding").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let max_bytes = self.config.max_bytes;
        let too_large = || {
            PullError::Failed(format!(
                "GET {shown}: the response is larger than source.max_bytes ({max_bytes} bytes) once decompressed; raise it or ask the SS for smaller pages"
            ))
        };
        let bytes = match response.body_mut().with_config().limit(max_bytes).read_to_vec() {
            Ok(bytes) => bytes,
            Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large()),
            Err(e) => return Err(PullError::Failed(format!("GET {shown}: reading the body: {e}"))),
        };
        let body = match decode(bytes, encoding.as_deref(), max_bytes) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| "the body is not UTF-8 text".to_owned()),
            Err(DecodeError::TooLarge) => return Err(too_large()),
            Err(DecodeError::Unknown(e)) => Err(format!(
                "the body is encoded as {e:?} (Content-Encoding), which framesync did not ask for (it accepts gzip and deflate)"
            )),
            Err(DecodeError::Corrupt(e)) => {
                Err(format!("the {} body cannot be decompressed: {e}", encoding.unwrap_or_default()))
            }
        };
        match status {
            200..=299 => match body {
                Ok(body) => Ok(Answer { body, date, links }),
                Err(why) => Err(PullError::Failed(format!("GET {shown}: {why}"))),
            },
            300..=399 => Err(PullError::Failed(format!(
                "GET {shown}: HTTP {status}, a redirect to {location}: framesync never follows a redirect; put the final URL in source.url"
            ))),
            429 | 503 => Err(PullError::Busy {
                message: format!("GET {shown}: HTTP {status} (the SS is busy){}", http::retry_note(retry_after)),
                retry_after,
            }),
            400..=499 if ![408, 425].contains(&status) => Err(PullError::Refused {
                status,
                message: format!("GET {shown}: HTTP {status}: {}", http::excerpt(&body.unwrap_or_else(|e| e))),
            }),
            _ => Err(PullError::Failed(format!(
                "GET {shown}: HTTP {status}: {}",
                http::excerpt(&body.unwrap_or_else(|e| e))
            ))),
        }
    }
}

/// One page's answer: its body (decoded), its `Date` and its `Link` headers.
struct Answer {
    body: String,
    date: Option<Epoch>,
    links: Vec<String>,
}

impl Source for HttpSource {
    fn pages(&self, frame: Frame) -> Pages<'_> {
        let config = &self.config;
        let mut first = frame_url(&config.url, &config.query, config.time_format, frame);
        if let Some(limit) = config.pages.limit {
            first = with_param(&first, &config.pages.limit_param, &limit.to_string());
        }
        let mut walk = PageWalk {
            source: self,
            frame,
            url: None,
            first,
            seen: HashSet::new(),
            uids: HashSet::new(),
            pages: 0,
            total: 0,
            offset: 0,
            page: config.pages.first_page,
        };
        walk.url = Some(match config.pages.by {
            PageBy::Offset | PageBy::Page => (walk.counted_url(), true),
            _ => (walk.first.clone(), true),
        });
        Box::new(walk)
    }
}

/// A walk through a frame's pages: GETs the next page when asked for it, until the last.
///
/// Every kind of walk is bounded: by `source.max_pages` and `source.max_records`, and a next
/// URL seen twice is a pagination loop. An offset or page-number walk also needs the SS to
/// move on: a page whose records (non-empty) were all served before in this walk means the
/// SS ignores the offset or page parameter (or keeps shifting its data by a whole page), so
/// the frame fails there, instead of GETting the same page until `max_pages`. Failing is the
/// safe side: the frame is retried later and nothing is marked delivered; going on would
/// be harmless for the ledger (the staging keeps a UID once) but could never end well, and
/// stopping quietly could leave records the SS never got to serve.
struct PageWalk<'a> {
    source: &'a HttpSource,
    frame: Frame,
    /// The frame's first URL (`[source.query]` and the limit added), that offsets, page
    /// numbers and cursors are added to.
    first: String,
    /// The next page to GET, and whether it is on the SS's own server; none when the walk is
    /// over (the last page, or an error).
    url: Option<(String, bool)>,
    seen: HashSet<String>,
    /// The UIDs served so far, for offset and page-number walks.
    uids: HashSet<String>,
    pages: usize,
    /// Records served so far, repeats included.
    total: usize,
    offset: u64,
    page: u64,
}

impl Iterator for PageWalk<'_> {
    type Item = Result<Page, PullError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (url, trusted) = self.url.take()?;
        if self.pages > 0 {
            crate::hooks::kill_point("mid-pull");
        }
        Some(self.fetch(&url, trusted))
    }
}

impl PageWalk<'_> {
    /// GETs one page and works out the next; an error ends the walk.
    fn fetch(&mut self, url: &str, trusted: bool) -> Result<Page, PullError> {
        let (source, frame) = (self.source, self.frame);
        let config = &source.config;
        let started = std::time::Instant::now();
        let answer = source.get(url, trusted)?;
        let took = started.elapsed();
        let failed = |e: String| PullError::Failed(format!("GET {url}: {e}"));
        let parsed = parse_page(&answer.body, config).map_err(failed)?;
        drop(answer.body);
        let served = parsed.records.len();
        self.total += served;
        if self.total > config.max_records {
            return Err(PullError::Failed(format!(
                "the frame has more than source.max_records ({}) records; raise the limit or use smaller frames",
                config.max_records
            )));
        }
        self.pages += 1;
        let mut page = collect(frame, parsed.records, config);
        page.server_date = answer.date;
        page.took = took;
        let next = match config.pages.by {
            PageBy::Next => parsed.next.map(|next| next_url(&self.first, &next, &config.cursor_param)),
            PageBy::Link => link_next(&answer.links).map_err(failed)?.map(|next| resolve(url, &next)),
            PageBy::Offset | PageBy::Page => self.counted_next(&page, served, parsed.total)?,
            PageBy::None => None,
        };
        if let Some(next) = next {
            self.follow(next)?;
        }
        Ok(page)
    }

    /// Checks the next page's URL (its server, a loop, the page limit) and sets it.
    fn follow(&mut self, url: String) -> Result<(), PullError> {
        let config = &self.source.config;
        let trusted = same_origin(&url, &self.first);
        if !trusted && !followed_host(&url, &config.follow_hosts) {
            return Err(PullError::Failed(format!(
                "the SS's next page is on another server ({}); framesync sends the SS's headers only to source.url's own server, and follows other servers only when source.follow_hosts lists them",
                pages::origin(&url)
            )));
        }
        if !self.seen.insert(url.clone()) {
            return Err(PullError::Failed("the SS sent the same next page twice (a pagination loop)".into()));
        }
        if self.pages >= config.max_pages {
            return Err(PullError::Failed(format!(
                "the frame has more than source.max_pages ({}) pages",
                config.max_pages
            )));
        }
        self.url = Some((url, trusted));
        Ok(())
    }

    /// The next offset or page number, or none when the stop rule ends the walk here.
    fn counted_next(&mut self, page: &Page, served: usize, total: Option<u64>) -> Result<Option<String>, PullError> {
        let paging = &self.source.config.pages;
        let uids = page.records.iter().map(|r| &r.uid).chain(page.invalid.iter().map(|d| &d.uid));
        let fresh = uids.filter(|uid| self.uids.insert((*uid).clone())).count();
        if served > 0 && fresh == 0 {
            let param = if paging.by == PageBy::Offset { &paging.offset_param } else { &paging.page_param };
            return Err(PullError::Failed(format!(
                "the page at {param}={} served only records served before in this walk: the SS seems to ignore the {param} parameter (source.pages.{}_param)",
                self.counter(),
                paging.by.as_str()
            )));
        }
        if paging.limit.is_some_and(|limit| served as u64 >= limit) {
            self.source.fills_pages.store(true, Ordering::Relaxed);
        }
        let fills = self.source.fills_pages.load(Ordering::Relaxed);
        match after_page(paging.stop, paging.limit, fills, served, self.total as u64, total) {
            After::More => {}
            After::Last => return Ok(None),
            After::Wrong(why) => return Err(PullError::Failed(why)),
        }
        match paging.by {
            PageBy::Offset => self.offset += served as u64,
            _ => self.page += 1,
        }
        Ok(Some(self.counted_url()))
    }

    fn counter(&self) -> u64 {
        if self.source.config.pages.by == PageBy::Offset { self.offset } else { self.page }
    }

    /// The frame's first URL with the current offset or page number.
    fn counted_url(&self) -> String {
        let paging = &self.source.config.pages;
        let param = if paging.by == PageBy::Offset { &paging.offset_param } else { &paging.page_param };
        with_param(&self.first, param, &self.counter().to_string())
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
    let url =
        template.replace("{from}", &encode(&from)).replace("{to}", &encode(&to)).replace("{last}", &encode(&last));
    query.apply(&url, &Vars { from: &from, to: &to, last: &last, ..Vars::default() })
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
mod fuzz;
#[cfg(test)]
mod tests;
