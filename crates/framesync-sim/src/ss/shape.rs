//! How the SS shapes its answers, chosen per request by query knobs so one simulator serves
//! every shape a test needs. Each knob is carried into the next-page links the SS writes.
//!
//! - `paging`: `next` (default: the next page's path in the body at `/next`), `link` (the same
//!   link, relative to the page, in a `Link: <…>; rel="next"` header), `offset` (`offset` and
//!   `limit` parameters; the body states the range's `total`) or `page` (`page` and `limit`;
//!   `total` too).
//! - `page_base`: the number of the first page with `paging=page` (default 1).
//! - `format`: `json` (default: `{"items": […]}`) or `ndjson` (one record per line).
//! - `encoding`: `gzip`, `deflate` (zlib) or `raw_deflate` (deflate without its zlib wrapper,
//!   as some servers send), applied only when the request's `Accept-Encoding` allows it.
//! - `next_origin`: `http://HOST:PORT`: next links point at that server instead (another
//!   simulator with the same seed serves the same records there).
//! - `lie_total`: added to the stated total (an SS whose count disagrees with its pages).
//! - `ignore_offset=1`: `offset` and `page` are read as the first page (an SS that ignores them).

use std::io::Write;

use crate::http::{Request, Response};

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Paging {
    #[default]
    Next,
    Link,
    Offset,
    Page,
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
    Deflate,
    RawDeflate,
}

/// The knobs of one request.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Shape {
    pub paging: Paging,
    pub page_base: u64,
    pub ndjson: bool,
    pub encoding: Encoding,
    pub next_origin: Option<String>,
    pub lie_total: i64,
    pub ignore_offset: bool,
    /// The knobs as the request gave them, to carry into next links.
    pub carried: Vec<(String, String)>,
}

impl Shape {
    pub fn parse(request: &Request) -> Result<Shape, String> {
        let bad = |key: &str, value: &str| format!("parameter `{key}`: `{value}` is not one this SS knows");
        let mut shape = Shape { page_base: 1, ..Shape::default() };
        for (key, value) in &request.query {
            let value = value.as_str();
            match key.as_str() {
                "paging" => {
                    shape.paging = match value {
                        "next" => Paging::Next,
                        "link" => Paging::Link,
                        "offset" => Paging::Offset,
                        "page" => Paging::Page,
                        _ => return Err(bad(key, value)),
                    }
                }
                "page_base" => shape.page_base = value.parse().map_err(|_| bad(key, value))?,
                "format" => {
                    shape.ndjson = match value {
                        "json" => false,
                        "ndjson" => true,
                        _ => return Err(bad(key, value)),
                    }
                }
                "encoding" => {
                    shape.encoding = match value {
                        "gzip" => Encoding::Gzip,
                        "deflate" => Encoding::Deflate,
                        "raw_deflate" => Encoding::RawDeflate,
                        _ => return Err(bad(key, value)),
                    }
                }
                "next_origin" => shape.next_origin = Some(value.trim_end_matches('/').to_owned()),
                "lie_total" => shape.lie_total = value.parse().map_err(|_| bad(key, value))?,
                "ignore_offset" => shape.ignore_offset = value == "1",
                _ => continue,
            }
            shape.carried.push((key.clone(), value.to_owned()));
        }
        Ok(shape)
    }

    /// The body compressed as asked, when the client accepts it.
    pub fn encode(&self, request: &Request, response: Response) -> Response {
        let accepts = |name: &str| {
            request.header("accept-encoding").unwrap_or("").split(',').any(|e| e.trim().eq_ignore_ascii_case(name))
        };
        let level = flate2::Compression::default();
        let (name, body) = match self.encoding {
            Encoding::Identity => return response,
            Encoding::Gzip if accepts("gzip") => {
                ("gzip", compress(flate2::write::GzEncoder::new(Vec::new(), level), &response.body))
            }
            Encoding::Deflate if accepts("deflate") => {
                ("deflate", compress(flate2::write::ZlibEncoder::new(Vec::new(), level), &response.body))
            }
            Encoding::RawDeflate if accepts("deflate") => {
                ("deflate", compress(flate2::write::DeflateEncoder::new(Vec::new(), level), &response.body))
            }
            _ => return response,
        };
        let mut response = response;
        response.body = body;
        response.with_header("Content-Encoding", name)
    }
}

trait Finish: Write {
    fn done(self) -> std::io::Result<Vec<u8>>;
}

impl Finish for flate2::write::GzEncoder<Vec<u8>> {
    fn done(self) -> std::io::Result<Vec<u8>> {
        self.finish()
    }
}

impl Finish for flate2::write::ZlibEncoder<Vec<u8>> {
    fn done(self) -> std::io::Result<Vec<u8>> {
        self.finish()
    }
}

impl Finish for flate2::write::DeflateEncoder<Vec<u8>> {
    fn done(self) -> std::io::Result<Vec<u8>> {
        self.finish()
    }
}

/// Compressing into memory cannot fail.
fn compress(mut encoder: impl Finish, body: &[u8]) -> Vec<u8> {
    encoder.write_all(body).and_then(|()| encoder.done()).expect("compressing in memory")
}
