//! Where a frame's next page is: a next link or cursor from the body, the `Link` header
//! (RFC 8288), or an offset or page number framesync counts itself; and which servers a next
//! page may be fetched from.

use crate::config::Stop;
use crate::plural::plural;
use crate::template::with_param;

/// What an offset or page-number walk does after a page.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Ask for the next page.
    More,
    /// This was the last page.
    Last,
    /// The SS's answers disagree with one another: the frame fails, saying why.
    Wrong(String),
}

/// The stop rule, after a page that served `served` records, `so_far` in the whole walk
/// (repeats included), and stated `total` when the rule reads one. A total the pages do not
/// add up to fails the frame: stopping short of it would lose records, going past it means the
/// SS's count cannot be trusted to end the walk.
///
/// A short page ends the walk only once the SS is known to fill its pages to `limit` (`fills`:
/// it served a full page before). Many APIs cap a page below the limit asked for; there a page
/// of the cap's size is short yet not the last, and ending the walk would mark the frame
/// delivered without the records after it. Until then a short page is followed by one more,
/// and only an empty one ends the walk.
pub fn after_page(
    stop: Stop,
    limit: Option<u64>,
    fills: bool,
    served: usize,
    so_far: u64,
    total: Option<u64>,
) -> After {
    let served = served as u64;
    match stop {
        Stop::Empty if served == 0 => After::Last,
        Stop::Short if served < limit.unwrap_or(u64::MAX) && (fills || served == 0) => After::Last,
        Stop::Empty | Stop::Short => After::More,
        Stop::Total => match total {
            None => After::Wrong("the SS stated no total (source.pages.total)".into()),
            Some(total) if so_far == total => After::Last,
            Some(total) if so_far > total => After::Wrong(format!(
                "the SS states a total of {} but served {so_far}: its total disagrees with its pages",
                plural(total, "record")
            )),
            Some(total) if served == 0 => After::Wrong(format!(
                "the SS states a total of {} but served only {so_far} before an empty page: its total disagrees with its pages",
                plural(total, "record")
            )),
            Some(_) => After::More,
        },
    }
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
    with_param(first, cursor_param, next)
}

/// Whether two URLs have the same scheme, host and port: the SS's headers (its token) go only
/// to its own server.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((parts(a), parts(b)), (Some(a), Some(b)) if a == b)
}

/// Whether `url`'s host is one of `source.follow_hosts` (lowercased; an entry with a port
/// names that port only).
pub fn followed_host(url: &str, hosts: &[String]) -> bool {
    let Some((_, host, port)) = parts(url) else { return false };
    let with_port = format!("{host}:{port}");
    hosts.iter().any(|h| *h == host || *h == with_port)
}

fn parts(url: &str) -> Option<(String, String, u16)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}

/// `scheme://authority` of a URL, for messages and to resolve paths.
pub fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Resolves a URI reference against the URL of the page it came from (RFC 3986 §5.2).
pub fn resolve(base: &str, reference: &str) -> String {
    let reference = reference.trim();
    if has_scheme(reference) {
        return reference.to_owned();
    }
    let base = base.split('#').next().unwrap_or(base);
    if let Some(rest) = reference.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        return format!("{scheme}://{rest}");
    }
    let origin = origin(base);
    let (base_path, base_query) = match base[origin.len()..].split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&base[origin.len()..], None),
    };
    if reference.is_empty() || reference.starts_with('#') {
        return match base_query {
            Some(query) => format!("{origin}{base_path}?{query}"),
            None => format!("{origin}{base_path}"),
        };
    }
    if reference.starts_with('?') {
        return format!("{origin}{base_path}{reference}");
    }
    let (path, rest) = match reference.find(['?', '#']) {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let merged = if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        format!("{dir}{path}")
    };
    let rest = rest.split('#').next().unwrap_or("");
    format!("{origin}{}{rest}", remove_dot_segments(&merged))
}

fn has_scheme(reference: &str) -> bool {
    match reference.find(':') {
        Some(i) => {
            let scheme = &reference[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !reference[..i].contains(['/', '?', '#'])
        }
        None => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." if last => out.push(""),
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') { joined } else { format!("/{joined}") }
}

/// The target of the first link whose relation types include `next`, from every `Link` header
/// of an answer (RFC 8288: links separated by commas, each `<target>` then `;` parameters; `rel`
/// quoted or not, holding space-separated types, matched without regard to case). A link with
/// an `anchor` is about another resource, not this page, and is passed over. None when no link
/// is `next`: the last page. An unreadable header is an error: a next page framesync cannot
/// read must not end the walk as if it were the last.
pub fn link_next(headers: &[String]) -> Result<Option<String>, String> {
    for header in headers {
        for link in parse_links(header)? {
            let rel = link.params.iter().find(|(name, _)| name == "rel").map(|(_, v)| v.as_str()).unwrap_or("");
            let anchored = link.params.iter().any(|(name, _)| name == "anchor");
            if !anchored && rel.split_ascii_whitespace().any(|t| t.eq_ignore_ascii_case("next")) {
                return Ok(Some(link.target));
            }
        }
    }
    Ok(None)
}

/// One link of a `Link` header: its target and its parameters (names lowercased, the first of
/// each name kept first).
#[derive(Debug, PartialEq)]
struct Link {
    target: String,
    params: Vec<(String, String)>,
}

fn parse_links(header: &str) -> Result<Vec<Link>, String> {
    let bad = |why: &str| format!("the Link header {header:?} cannot be read: {why}");
    let mut links = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Ok(links);
        }
        let Some(after) = rest.strip_prefix('<') else { return Err(bad("a link must start with <")) };
        let Some(close) = after.find('>') else { return Err(bad("a < without its >")) };
        let target = after[..close].trim().to_owned();
        rest = &after[close + 1..];
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let Some(after) = rest.strip_prefix(';') else { break };
            let after = after.trim_start_matches([' ', '\t']);
            let end = after.find(['=', ';', ',', ' ', '\t']).unwrap_or(after.len());
            let name = after[..end].to_ascii_lowercase();
            rest = after[end..].trim_start_matches([' ', '\t']);
            let value = match rest.strip_prefix('=') {
                Some(after) => {
                    let (value, left) = param_value(after.trim_start_matches([' ', '\t'])).map_err(|w| bad(&w))?;
                    rest = left;
                    value
                }
                None => String::new(),
            };
            if !name.is_empty() {
                params.push((name, value));
            }
        }
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(bad("text after a link that is not a parameter"));
        }
        links.push(Link { target, params });
    }
}

/// A token or a quoted string (with `\` escapes), and what follows it.
fn param_value(text: &str) -> Result<(String, &str), String> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find([';', ',', ' ', '\t']).unwrap_or(text.len());
        return Ok((text[..end].to_owned(), &text[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &quoted[i + 1..])),
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            c => value.push(c),
        }
    }
    Err("a quoted value without its closing quote".into())
}
