//! `check`: the config is valid (it was loaded), the ledger can be read and belongs to this
//! config's pipeline, and both servers answer
//! the way framesync needs — changing nothing anywhere: the ledger is opened read-only (never
//! created, migrated or configured), the SS gets the GETs of one frame, the RS one HEAD and,
//! with a lookup, one lookup of UIDs that cannot exist; with OAuth2, each server's token
//! endpoint is asked for a token. Each line is ok, a WARNING or FAILED, and the exit code is 0
//! only when every line is ok. Values from the environment never appear in the output.

use std::io::Write;

use anyhow::{Result, bail};

use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::config::{Config, LookupConfig, TimeFormat};
use crate::frames::eligible_until;
use crate::http;
use crate::job::{Clock, SystemClock};
use crate::ledger::snapshot::Snapshot;
use crate::ledger::{IDENTITY_SCHEMA, SCHEMA_VERSION};
use crate::plural::plural;
use crate::sink::lookup;
use crate::source::{HttpSource, Source};

/// What one line of the report says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ok(String),
    Warning(String),
    Failed(String),
}

impl Verdict {
    fn prefixed(self, prefix: &str) -> Self {
        match self {
            Verdict::Ok(s) => Verdict::Ok(format!("{prefix}{s}")),
            Verdict::Warning(s) => Verdict::Warning(format!("{prefix}{s}")),
            Verdict::Failed(s) => Verdict::Failed(format!("{prefix}{s}")),
        }
    }
}

/// The report as it is written (the command's output is scrubbed of secrets), and whether all
/// were ok.
struct Report<'a> {
    out: &'a mut dyn Write,
    all_ok: bool,
}

impl Report<'_> {
    fn say(&mut self, what: &str, verdict: Verdict) -> std::io::Result<()> {
        self.all_ok &= matches!(verdict, Verdict::Ok(_));
        let line = match verdict {
            Verdict::Ok(detail) if detail.is_empty() => format!("{what}: ok"),
            Verdict::Ok(detail) => format!("{what}: ok, {detail}"),
            Verdict::Warning(detail) => format!("{what}: WARNING: {detail}"),
            Verdict::Failed(detail) => format!("{what}: FAILED: {detail}"),
        };
        writeln!(self.out, "{line}")
    }
}

pub fn check(config: &Config, out: &mut dyn Write) -> Result<u8> {
    let mut report = Report { out, all_ok: true };
    report.say("config", Verdict::Ok(String::new()))?;
    if let Some(warning) = last_warning(config) {
        report.say("source.url", warning)?;
    }
    if let Some(first) = waiting(config) {
        report.say("frames.start", first)?;
    }
    let (ledger, forced) = ledger(config);
    report.say("ledger", ledger)?;
    if let Some(warning) = shared_ledger(&config.ledger) {
        report.say("ledger", warning)?;
    }
    let source_auth =
        Auth::new(config.source.auth.as_ref(), &http::agent(config.source.timeout, &config.source.transport));
    if let Some(verdict) = oauth2(&source_auth) {
        report.say("source.auth", verdict)?;
    }
    report.say("source", source(config))?;
    let sink_auth = Auth::new(config.sink.auth.as_ref(), &http::agent(config.sink.timeout, &config.sink.transport));
    if let Some(verdict) = oauth2(&sink_auth) {
        report.say("sink.auth", verdict)?;
    }
    report.say("sink", sink(config, &sink_auth))?;
    if let Some(lookup) = &config.sink.lookup {
        report.say("lookup", lookup_probe(config, &sink_auth, lookup))?;
    }
    if let Some(path) = &config.run.metrics_file {
        report.say("run.metrics_file", metrics_file(path))?;
    }
    if let Some(base) = &config.run.pushgateway {
        report.say("run.pushgateway", pushgateway(base))?;
    }
    // A ledger that belongs to another pipeline is a config error, and one this process cannot
    // write is unusable, as for every command.
    Ok(if let Some(code) = forced {
        code
    } else if report.all_ok {
        0
    } else {
        1
    })
}

/// `{last}` in whole epoch seconds stops a second short of the frame's end.
fn last_warning(config: &Config) -> Option<Verdict> {
    (config.source.url.contains("{last}") && config.source.time_format == TimeFormat::EpochS).then(|| {
        Verdict::Warning(
            "{last} with time_format = \"epoch_s\": the frame's last instant cannot be expressed in whole seconds, so an SS with inclusive bounds and sub-second stamps would never serve records stamped after to - 1 s; use epoch_ms or rfc3339".into(),
        )
    })
}

/// A start that is not yet eligible is no fault, but a run before then pulls nothing.
fn waiting(config: &Config) -> Option<Verdict> {
    let frames = &config.frames;
    let first = crate::frames::first_pull_at(frames.size, frames.start, frames.delay);
    (SystemClock.now() < first)
        .then(|| Verdict::Ok(format!("not yet eligible: runs pull nothing until {}", crate::frames::rfc3339(first))))
}

// ---- the metrics ---------------------------------------------------------------------------

/// Every run rewrites the file through a temp file beside it: the folder must be writable.
fn metrics_file(path: &std::path::Path) -> Verdict {
    match crate::ledger::access::writable(path) {
        Ok(()) => Verdict::Ok(format!("{} can be written", path.display())),
        Err(e) => Verdict::Failed(format!("{}: {}; every run would exit 1", path.display(), e.problem)),
    }
}

fn pushgateway(base: &str) -> Verdict {
    match crate::pushgateway::ready(base) {
        Ok(None) => Verdict::Ok(format!("{base} is ready")),
        Ok(Some(answer)) => Verdict::Warning(format!("{answer}: is {base} a Pushgateway?")),
        Err(e) => Verdict::Failed(format!("{e:#}; every run would exit 1")),
    }
}

// ---- the ledger ----------------------------------------------------------------------------

/// The ledger's line, and the exit code it forces: 2 when the ledger belongs to another
/// pipeline, 3 when a run could not create or write it.
fn ledger(config: &Config) -> (Verdict, Option<u8>) {
    let path = &config.ledger;
    if let Err(e) = crate::ledger::access::writable(path) {
        return (Verdict::Failed(format!("{}: {}; every run would fail", path.display(), e.problem)), Some(3));
    }
    if !path.exists() {
        return (Verdict::Ok(crate::ledger::Absent(path.clone()).to_string()), None);
    }
    if let Some(fs) = crate::netfs::network_filesystem(path) {
        let why = format!(
            "{} is on a {fs} network filesystem, where SQLite's locking and WAL are unsafe; keep the ledger on a local disk",
            path.display()
        );
        return (Verdict::Failed(why), None);
    }
    match read_ledger(config) {
        Ok(state) => (Verdict::Ok(format!("{}: {state}", path.display())), None),
        Err(e) if e.downcast_ref::<crate::Usage>().is_some() => (Verdict::Failed(format!("{e:#}")), Some(2)),
        Err(e) => (Verdict::Failed(format!("{}: {e:#}", path.display())), None),
    }
}

/// A warning when the ledger file is readable or writable by its group or others: it holds
/// staged records and RS answers, which may be personal data.
fn shared_ledger(path: &std::path::Path) -> Option<Verdict> {
    let mode = crate::ledger::access::shared_mode(path).ok()??;
    let who = match (mode & 0o004 != 0, mode & 0o040 != 0) {
        (true, _) => "readable by others",
        (false, true) => "readable by its group",
        (false, false) => "writable by its group or others",
    };
    let path = path.display();
    Some(Verdict::Warning(format!(
        "{path} is {who} (mode {mode:04o}): it holds staged records and RS answers; chmod 600 {path}"
    )))
}

/// The ledger's schema version and frames, and whether it is this pipeline's, read without
/// writing anything.
fn read_ledger(config: &Config) -> Result<String> {
    let (path, frame_size) = (&config.ledger, config.frames.size.seconds());
    let ledger = Snapshot::open(path, config.run.busy_timeout)?;
    let version = ledger.schema_version()?;
    if version > SCHEMA_VERSION {
        bail!("its schema version is {version}, newer than this framesync knows ({SCHEMA_VERSION}); upgrade framesync");
    }
    let tables = ledger.schema_objects()?;
    if version == 0 {
        if tables > 0 {
            bail!("it holds tables but is not a framesync ledger; pick another path");
        }
        return Ok("empty; the next run sets it up".into());
    }
    if version >= IDENTITY_SCHEMA {
        let differences = ledger.identity()?.differences(&config.identity);
        if !differences.is_empty() {
            let refusal = crate::identity::refusal(path, &differences, config.file.as_deref());
            return Err(crate::Usage(refusal).into());
        }
    } else if let Some(size) = ledger.frame_size()?.filter(|s| *s != frame_size) {
        bail!(
            "it was built with {size}s frames and frames.size is {frame_size}s; a run would refuse it (keep frames.size = \"{size}s\" or start a new ledger)"
        );
    }
    let frames = ledger.frames()?;
    let schema = if version < SCHEMA_VERSION {
        format!("schema version {version}, would be migrated by the next run to {SCHEMA_VERSION}")
    } else {
        format!("schema version {version}")
    };
    Ok(format!("opens read-only, {schema}, {} recorded", plural(frames, "frame")))
}

// ---- the servers ---------------------------------------------------------------------------

/// Pulls the last eligible frame, as the next run would. A page with no next (no `Link`
/// header with rel="next", no next link) is the last page, not an error; a body the shape
/// cannot read is.
fn source(config: &Config) -> Verdict {
    let size = config.frames.size;
    let frame = size.frame_at(eligible_until(size, SystemClock.now(), config.frames.delay) - 1);
    let (mut records, mut pages, mut invalid) = (0, 0, Vec::new());
    for page in HttpSource::new(&config.source).pages(frame) {
        match page {
            Ok(page) => {
                records += page.records.len();
                pages += 1;
                invalid.extend(page.invalid);
            }
            Err(e) => return Verdict::Failed(e.to_string()),
        }
    }
    let shape = shape(&config.source);
    let counted = format!("frame {frame} has {} in {}{shape}", plural(records, "record"), plural(pages, "page"));
    match invalid.first() {
        None => Verdict::Ok(counted),
        Some(first) => Verdict::Warning(format!(
            "{counted}, and {} a run would dead-letter ({}); check source.uid, source.records and source.format",
            plural(invalid.len(), "record"),
            first.detail
        )),
    }
}

/// How the pages are walked and read, when not the plain JSON document with a next link.
fn shape(source: &crate::config::SourceConfig) -> String {
    use crate::config::{BodyFormat, PageBy};
    let mut parts = Vec::new();
    match source.pages.by {
        PageBy::Link => parts.push("pages by Link header".to_owned()),
        PageBy::Offset | PageBy::Page => {
            parts.push(format!("pages by {} (stop: {:?})", source.pages.by.as_str(), source.pages.stop).to_lowercase())
        }
        PageBy::Next | PageBy::None => {}
    }
    if source.format == BodyFormat::Ndjson {
        parts.push("NDJSON".into());
    }
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

/// With OAuth2, a token fetched now (and kept for the requests that follow), or why not.
fn oauth2(auth: &Auth) -> Option<Verdict> {
    Some(match auth.fetch_now()? {
        Ok(granted) => Verdict::Ok(format!("OAuth2 token fetched, {}", crate::auth::lifetime_note(granted.expires_in))),
        Err(e) => Verdict::Failed(e.to_string()),
    })
}

/// A HEAD on the ingest URL: it must exist, take our credentials, and be the final URL.
fn sink(config: &Config, auth: &Auth) -> Verdict {
    let url = &config.sink.url;
    let request =
        http::with_headers(http::agent(config.sink.timeout, &config.sink.transport).head(url), &config.sink.headers);
    let verdict = match auth.apply(request).map(|r| r.call()) {
        Err(e) => return Verdict::Failed(e.to_string()),
        Ok(Ok(response)) => sink_answer(response.status().as_u16(), &http::location(&response)),
        Ok(Err(e)) => Verdict::Failed(http::why(&e)),
    };
    verdict.prefixed(&format!("HEAD {url}: "))
}

/// What the answer to a HEAD on `sink.url` says about the ingest endpoint.
fn sink_answer(status: u16, location: &str) -> Verdict {
    match status {
        200..=299 => Verdict::Ok(format!("HTTP {status}")),
        400 | 405 | 411 | 415 | 422 => {
            Verdict::Ok(format!("HTTP {status}: the endpoint is there and wants a POST body"))
        }
        300..=399 => Verdict::Failed(format!(
            "HTTP {status}, a redirect to {location}: framesync never follows a redirect for a push; put the final URL in sink.url"
        )),
        401 | 403 | 407 => {
            Verdict::Failed(format!("HTTP {status}: check sink.headers and sink.auth (the RS's credentials)"))
        }
        404 | 410 => {
            Verdict::Failed(format!("HTTP {status}: no such endpoint (a typo in sink.url, or a dropped table)"))
        }
        500..=599 => {
            Verdict::Failed(format!("HTTP {status}: the RS has a server error; pushes would fail until it is fixed"))
        }
        _ => Verdict::Failed(format!("HTTP {status}, not an answer an ingest endpoint gives")),
    }
}

/// Asks for UIDs that cannot exist — two in one request for a batched lookup — with the
/// sink's credentials: the lookup is of use only if it says "absent" for them.
fn lookup_probe(config: &Config, auth: &Auth, lookup: &LookupConfig) -> Verdict {
    let random = impossible_uid_stem();
    let count = if lookup.batch_size > 1 { 2 } else { 1 };
    let probes: Vec<String> = (1..=count).map(|n| format!("framesync-check-{random}-{n}")).collect();
    let uids: Vec<&str> = probes.iter().map(String::as_str).collect();
    let agent = http::agent(config.sink.timeout, &config.sink.transport);
    let client = lookup::Client { agent: &agent, headers: &config.sink.headers, auth, pacer: None, config: lookup };
    probe_verdict(lookup.key, &uids, client.ask(&uids))
}

/// Hex no record is named with: a hash of the time and the process.
fn impossible_uid_stem() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let hash = Sha256::digest(format!("{nanos}-{}", std::process::id()));
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What a lookup's answer for UIDs that cannot exist says about it.
fn probe_verdict(key: &str, uids: &[&str], answer: Result<Vec<bool>, String>) -> Verdict {
    match answer {
        Ok(present) if present.iter().any(|p| *p) => Verdict::Failed(format!(
            "{key} answers present for {uids:?}, which cannot exist: it cannot say absent, so framesync does not trust it (runs turn lookups off when it does this)"
        )),
        Ok(_) => Verdict::Ok(format!("absent for {uids:?}, which cannot exist: it can say absent")),
        Err(e) => Verdict::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &Verdict) -> bool {
        matches!(v, Verdict::Ok(_))
    }

    #[test]
    fn a_head_on_the_sink_is_ok_only_where_an_ingest_endpoint_is() {
        for status in [200, 204, 400, 405, 411, 415, 422] {
            assert!(ok(&sink_answer(status, "")), "{status}");
        }
        for status in [301, 302, 307, 308, 401, 403, 404, 407, 410, 418, 500, 503, 100] {
            assert!(!ok(&sink_answer(status, "")), "{status}");
        }
        let Verdict::Failed(redirect) = sink_answer(302, "https://rs.example.com/v2/ingest") else { panic!() };
        assert!(redirect.contains("https://rs.example.com/v2/ingest") && redirect.contains("sink.url"), "{redirect}");
        let Verdict::Failed(missing) = sink_answer(404, "") else { panic!() };
        assert!(missing.contains("no such endpoint"), "{missing}");
    }

    /// What `check` says of a lookup by status that answered `status`.
    fn lookup_answer(status: u16, location: &str) -> Verdict {
        let answer = lookup::by_status(status, location, "sink.lookup_url").map(|present| vec![present]);
        probe_verdict("sink.lookup_url", &["framesync-check-0-1"], answer)
    }

    #[test]
    fn a_lookup_is_ok_only_when_it_says_absent_for_a_uid_that_cannot_exist() {
        assert!(ok(&lookup_answer(404, "")) && ok(&lookup_answer(410, "")));
        for status in [200, 204, 302, 401, 403, 405, 500] {
            assert!(!ok(&lookup_answer(status, "")), "{status}");
        }
        let Verdict::Failed(present) = lookup_answer(200, "") else { panic!() };
        assert!(present.contains("cannot say absent"), "{present}");
    }

    #[test]
    fn a_line_that_is_not_ok_fails_the_report() {
        let mut out = Vec::new();
        let mut report = Report { out: &mut out, all_ok: true };
        report.say("config", Verdict::Ok(String::new())).unwrap();
        report.say("sink", Verdict::Ok("HEAD http://rs/: HTTP 405".into())).unwrap();
        assert!(report.all_ok);
        report.say("source.url", Verdict::Warning("careful".into())).unwrap();
        assert!(!report.all_ok);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "config: ok\nsink: ok, HEAD http://rs/: HTTP 405\nsource.url: WARNING: careful\n");
    }
}
