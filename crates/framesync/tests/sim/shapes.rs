//! The shapes of a seed's servers beyond the first dialect, drawn from a stream of their own
//! (so the rest of a seed's world is drawn as before): how the SS pages (a `Link` header, an
//! offset or a page number with a stop rule) and writes its bodies (NDJSON), and how it lies
//! about its pages; how the RS answers a batch (per-item results, as Elasticsearch's `_bulk`
//! does; a bad record as ClickHouse's 500 "Code: 27", which an answer rule maps to reject),
//! what bodies it takes, how its lookup is asked (by status, by a JSON pointer, batched) and
//! how both lie.
//!
//! Every lie here is a fault of the fault phase, drawn per answer: a lie that lasted would
//! fail its frames for good, which framesync rightly does loudly, and no calm could drain.

use super::rng::Rng;
use super::scenario::{Paging, RS_HOST};

/// When an offset or page-number walk ends (`source.pages.stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    #[default]
    Empty,
    Short,
    Total,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Empty => "empty",
            Stop::Short => "short",
            Stop::Total => "total",
        }
    }
}

/// How the RS's lookup is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookupBy {
    /// `lookup_url`: 200 present, 404 absent.
    #[default]
    Status,
    /// `[sink.lookup]` with `present`: a count in a 2xx answer (a number, or text as
    /// ClickHouse quotes 64-bit integers).
    Pointer,
    /// `[sink.lookup]` with `found` and `batch_size`: the answer lists the UIDs held, as
    /// objects (`found_uid = "/uid"`) or as the UIDs themselves; asked by GET or by POST.
    Batched { size: usize, post: bool, objects: bool },
}

/// The RS's request bodies in batch mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsBody {
    /// The default: a JSON array.
    #[default]
    Array,
    /// One record a line.
    Ndjson,
    /// One record a line, each after an action line naming its UID (`_bulk`).
    NdjsonAction,
}

#[derive(Debug, Clone, Default)]
pub struct Shapes {
    // ---- the SS
    /// `source.pages.limit` for offset and page-number walks: the SS serves that many a page.
    pub limit: usize,
    pub stop: Stop,
    /// `source.pages.first_page`.
    pub first_page: u64,
    /// `source.format = "ndjson"`.
    pub ndjson: bool,
    /// A `Link` header names its next page by a path (else by an absolute URL), after a
    /// `rel="prev"` link in some seeds.
    pub link_path: bool,
    pub link_prev: bool,
    /// Per page in the fault phase: the SS ignores the offset or page, states a wrong total,
    /// or serves a short page in the middle (never where `stop = "short"`: the config must not
    /// use it with such an SS).
    pub ss_lie_rate: f64,
    // ---- the RS
    /// `[sink.items]`: the RS answers a batch 200 with a result per record.
    pub items: bool,
    /// `sink.items.errors`: `"errors": false` says every item succeeded.
    pub items_errors: bool,
    /// Per record of a per-item answer in the fault phase: 429, take it later.
    pub item_retry_rate: f64,
    /// A bad record answers 500 "Code: 27 ..." and an answer rule says it means reject.
    pub code27: bool,
    pub rs_body: RsBody,
    pub lookup_by: LookupBy,
    /// Per answer in the fault phase: a per-item list of the wrong length or items without a
    /// status; a lookup answer without its pointer, or listing a UID not asked for.
    pub rs_lie_rate: f64,
}

impl Shapes {
    /// Draws the shapes, and may change the paging drawn before for one of the new ones.
    pub fn draw(seed: u64, paging: &mut Paging, items_pointer: &mut bool, batch: Option<usize>) -> Self {
        let mut rng = Rng::stream(seed, 5);
        if rng.chance(0.5) {
            *paging = rng.pick(&[Paging::Link, Paging::Offset, Paging::Offset, Paging::Page, Paging::Page]);
        }
        let counted = matches!(paging, Paging::Offset | Paging::Page);
        let ndjson = matches!(paging, Paging::None | Paging::Link | Paging::Offset | Paging::Page) && rng.chance(0.3);
        let stop = if ndjson {
            rng.pick(&[Stop::Empty, Stop::Short])
        } else {
            rng.pick(&[Stop::Empty, Stop::Short, Stop::Total])
        };
        // The records at /items, where a total is stated beside them or the shape needs it.
        if ndjson {
            *items_pointer = false;
        } else if counted && stop == Stop::Total {
            *items_pointer = true;
        } else if *paging == Paging::Link {
            *items_pointer = rng.chance(0.5);
        }
        let batched = batch.is_some_and(|b| b >= 2);
        let items = batched && rng.chance(0.4);
        let lookup_by = match rng.below(4) {
            0 => LookupBy::Pointer,
            1 => LookupBy::Batched { size: rng.range(2, 5) as usize, post: rng.chance(0.5), objects: rng.chance(0.5) },
            _ => LookupBy::Status,
        };
        Self {
            limit: rng.pick(&[1, 2, 2, 3, 4]),
            stop,
            first_page: rng.below(2),
            ndjson,
            link_path: rng.chance(0.5),
            link_prev: rng.chance(0.5),
            ss_lie_rate: if counted && rng.chance(0.6) { rng.pick(&[0.01, 0.03, 0.08]) } else { 0.0 },
            items,
            items_errors: rng.chance(0.5),
            item_retry_rate: if items { rng.pick(&[0.0, 0.02, 0.1]) } else { 0.0 },
            code27: !items && rng.chance(0.3),
            rs_body: if batched {
                rng.pick(&[RsBody::Array, RsBody::Ndjson, RsBody::NdjsonAction])
            } else {
                RsBody::Array
            },
            lookup_by,
            rs_lie_rate: if rng.chance(0.5) { rng.pick(&[0.01, 0.05]) } else { 0.0 },
        }
    }

    /// `[source]` keys and tables, after the source's own.
    pub fn source_toml(&self, paging: Paging) -> String {
        let mut t = String::new();
        if self.ndjson {
            t += "format = \"ndjson\"\n";
        }
        match paging {
            Paging::Link => t += "[source.pages]\nby = \"link\"\n",
            Paging::Offset | Paging::Page => {
                let by = if paging == Paging::Offset { "offset" } else { "page" };
                t += &format!(
                    "[source.pages]\nby = \"{by}\"\nlimit = {}\nstop = \"{}\"\n",
                    self.limit,
                    self.stop.name()
                );
                if paging == Paging::Page {
                    t += &format!("first_page = {}\n", self.first_page);
                }
                if self.stop == Stop::Total {
                    t += "total = \"/total\"\n";
                }
            }
            _ => {}
        }
        t
    }

    /// `[sink]` keys, before any of its tables.
    pub fn sink_keys(&self, batch: Option<usize>, lookup: bool) -> String {
        let mut t = String::new();
        if batch.is_some() {
            match self.rs_body {
                RsBody::Array => {}
                RsBody::Ndjson => t += "body = \"ndjson\"\n",
                RsBody::NdjsonAction => t += "body = \"ndjson\"\nndjson_action = '{\"index\":{\"_id\":{uid:json}}}'\n",
            }
        }
        if lookup && self.lookup_by == LookupBy::Status {
            t += &format!("lookup_url = \"http://{RS_HOST}/v1/ingest/{{uid}}\"\n");
        }
        t
    }

    /// `[sink]` tables, after every `[sink]` key.
    pub fn sink_tables(&self, lookup: bool) -> String {
        let mut t = String::new();
        if self.items {
            t += "[sink.items]\nlist = \"/items\"\nstatus = \"/*/status\"\nreason = \"/*/error/reason\"\n";
            if self.items_errors {
                t += "errors = \"/errors\"\n";
            }
        }
        if self.code27 {
            t += "[[sink.answers]]\nstatus = [500]\nbody_contains = \"Code: 27\"\nmeans = \"reject\"\n";
        }
        if !lookup {
            return t;
        }
        let url = format!("[sink.lookup]\nurl = \"http://{RS_HOST}/v1/lookup\"\n");
        match self.lookup_by {
            LookupBy::Status => {}
            LookupBy::Pointer => {
                t += &format!("{url}present = \"/data/0/n\"\n[sink.lookup.query]\nuid = \"{{uid}}\"\n")
            }
            LookupBy::Batched { size, post, objects } => {
                t += &format!("{url}batch_size = {size}\nfound = \"/data\"\n");
                if objects {
                    t += "found_uid = \"/uid\"\n";
                }
                if post {
                    t += "method = \"POST\"\nbody = '{\"uids\": {uids:json}}'\n";
                } else {
                    t += "[sink.lookup.batch_query]\nids = \"{uids:json}\"\n";
                }
            }
        }
        t
    }

    /// The shapes, for a seed's one-line description.
    pub fn describe(&self, paging: Paging) -> String {
        let counted = match paging {
            Paging::Offset | Paging::Page => format!(
                " limit {} stop {}{}",
                self.limit,
                self.stop.name(),
                if paging == Paging::Page { format!(" first_page {}", self.first_page) } else { String::new() }
            ),
            Paging::Link => format!(" link by {}", if self.link_path { "path" } else { "url" }),
            _ => String::new(),
        };
        format!(
            "ss body {}{counted} ss lies {} | rs body {:?} items {} (errors {}, item 429s {}) code27 {} lookup by {:?} rs lies {}",
            if self.ndjson { "ndjson" } else { "json" },
            self.ss_lie_rate,
            self.rs_body,
            self.items,
            self.items_errors,
            self.item_retry_rate,
            self.code27,
            self.lookup_by,
            self.rs_lie_rate,
        )
    }
}
