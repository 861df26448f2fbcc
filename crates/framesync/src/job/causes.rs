//! The frames a run failed, grouped by cause for the log: one line per cause, not per frame
//! (cron mails every line). A cause is the message as recorded with what differs from frame to
//! frame masked — timestamps (RFC 3339, percent-encoded or not) and epoch numbers (9 digits or
//! more) — and without the note that the run stopped pulling or pushing. Two messages that
//! differ in anything else (a status, a URL path, a count) stay two causes: at worst a line
//! per frame, as when every frame failed its own way.

use std::collections::BTreeMap;

use crate::frames::Frame;

/// Notes a failure adds when it stopped part of the run: said once on the cause's line.
const STOPS: [&str; 3] = ["; no more pulls this run", "; no more pushes this run", "; no more re-checks this run"];

#[derive(Debug, Default)]
pub(super) struct Causes {
    /// By cause, in the order first seen.
    groups: BTreeMap<String, Group>,
    seen: usize,
}

#[derive(Debug)]
struct Group {
    order: usize,
    frames: usize,
    /// The first frame with this cause and its message, as recorded.
    frame: Frame,
    message: String,
    stops: Vec<&'static str>,
}

impl Causes {
    pub(super) fn add(&mut self, frame: Frame, message: &str) {
        let (message, stop) = split_stop(message);
        let order = self.seen;
        let group = self.groups.entry(key(message)).or_insert_with(|| Group {
            order,
            frames: 0,
            frame,
            message: message.to_owned(),
            stops: Vec::new(),
        });
        group.frames += 1;
        if let Some(stop) = stop.filter(|s| !group.stops.contains(s)) {
            group.stops.push(stop);
        }
        self.seen += 1;
    }

    /// One line per cause: how many frames, the cause as one of them recorded it, that frame.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut groups: Vec<&Group> = self.groups.values().collect();
        groups.sort_by_key(|g| g.order);
        groups
            .into_iter()
            .map(|g| {
                let (count, which) = if g.frames == 1 {
                    ("1 frame".to_owned(), "frame")
                } else {
                    (format!("{} frames", g.frames), "e.g. frame")
                };
                format!("{count} failed: {}{} ({which} {})", g.message, g.stops.concat(), g.frame)
            })
            .collect()
    }
}

fn split_stop(message: &str) -> (&str, Option<&'static str>) {
    STOPS.iter().find_map(|stop| message.strip_suffix(stop).map(|rest| (rest, Some(*stop)))).unwrap_or((message, None))
}

/// `message` with its timestamps and epoch numbers masked.
fn key(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut at = 0;
    while at < bytes.len() {
        let skip = timestamp_len(&bytes[at..]).or_else(|| long_number_len(&bytes[at..]));
        match skip {
            Some(len) if at == 0 || !bytes[at - 1].is_ascii_digit() => {
                out.push('#');
                at += len;
            }
            _ => {
                let c = message[at..].chars().next().unwrap_or('?');
                out.push(c);
                at += c.len_utf8();
            }
        }
    }
    out
}

/// The length of an RFC 3339 timestamp at the start of `s` (`2024-05-01T12:00:00Z`, also with
/// `%3A` for `:`, a fraction or an offset), if one is there.
fn timestamp_len(s: &[u8]) -> Option<usize> {
    let date = s.get(..11)?;
    let digits = |r: std::ops::Range<usize>| date[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && date[4] == b'-' && digits(5..7) && date[7] == b'-' && digits(8..10) && date[10] == b'T') {
        return None;
    }
    let rest = &s[11..];
    let time = rest.iter().take_while(|b| b.is_ascii_digit() || b"%:.+-AZaz".contains(b)).count();
    Some(11 + time)
}

/// The length of a run of 9 or more digits (epoch seconds or milliseconds) at the start of `s`.
fn long_number_len(s: &[u8]) -> Option<usize> {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (len >= 9).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::FrameSize;

    fn frame(minute: i64) -> Frame {
        FrameSize::new(60).unwrap().frame_at(1_714_564_800 + 60 * minute)
    }

    fn url(minute: i64) -> String {
        let (from, to) = (frame(minute).start, frame(minute).end());
        format!(
            "GET http://127.0.0.1:4000/records?from={}&to={}&since={from}000: HTTP 503 (the SS is busy)",
            crate::frames::rfc3339(from).replace(':', "%3A"),
            crate::frames::rfc3339(to)
        )
    }

    #[test]
    fn frames_that_failed_the_same_way_make_one_line_with_their_count_and_an_example() {
        let mut causes = Causes::default();
        for minute in 0..12 {
            causes.add(frame(minute), &url(minute));
        }
        causes.add(frame(12), &format!("{}; no more pulls this run", url(12)));
        causes.add(frame(13), "GET http://127.0.0.1:4000/records: HTTP 400: bad from");
        let lines = causes.lines();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(lines[0], format!("13 frames failed: {}; no more pulls this run (e.g. frame {})", url(0), frame(0)));
        assert_eq!(
            lines[1],
            format!("1 frame failed: GET http://127.0.0.1:4000/records: HTTP 400: bad from (frame {})", frame(13))
        );
    }

    #[test]
    fn messages_that_differ_in_more_than_the_frame_stay_apart() {
        let mut causes = Causes::default();
        causes.add(frame(0), "POST http://rs/a: HTTP 503");
        causes.add(frame(1), "POST http://rs/a: HTTP 502");
        causes.add(frame(2), "POST http://rs/b: HTTP 503");
        causes.add(frame(3), "took 120s, port 4000");
        causes.add(frame(4), "took 121s, port 4000");
        assert_eq!(causes.lines().len(), 5, "{:#?}", causes.lines());
    }

    #[test]
    fn the_key_masks_timestamps_and_epochs_only() {
        assert_eq!(key("from=2024-05-01T12%3A00%3A00Z&to=2024-05-01T12:01:00.5+02:00 x"), "from=#&to=# x");
        assert_eq!(key("t=1714564800&ms=1714564800000&n=12345678&s=503"), "t=#&ms=#&n=12345678&s=503");
    }
}
