//! What both HTTP clients share: one agent per server (connections are reused across
//! requests), and reading `Retry-After`, `Date` and short excerpts of bodies for messages.

use std::time::Duration;

use chrono::DateTime;

use crate::frames::Epoch;

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("framesync/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.timestamp();
    let now = chrono::Utc::now().timestamp();
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

pub fn date_header<B>(response: &ureq::http::Response<B>) -> Option<Epoch> {
    let value = response.headers().get("date")?.to_str().ok()?;
    DateTime::parse_from_rfc2822(value).ok().map(|d| d.timestamp())
}

pub fn retry_note(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", Retry-After {}s", d.as_secs())).unwrap_or_default()
}

/// The start of a body, on one line, for error messages and dead letters.
pub fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let one_line: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str, value: &str) -> ureq::http::Response<()> {
        ureq::http::Response::builder().header(name, value).body(()).unwrap()
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&response("Retry-After", "30")), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&response("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")), Some(Duration::ZERO));
        assert_eq!(retry_after(&response("Retry-After", "soon")), None);
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(" a\nb\r\n"), "a b");
        let long = "ü".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), 201);
    }
}
