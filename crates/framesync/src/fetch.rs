//! A frame's pages from the SS into the ledger's staging: the one path by which a pull, a
//! re-check, a redelivery and `verify` read a frame. Pages are staged as they arrive, so a
//! frame of any size is read with one page in memory, and no ledger write waits on the network.

use anyhow::Result;

use crate::frames::Frame;
use crate::ledger::Staging;
use crate::plural::plural;
use crate::source::{Page, PullError, Source, Walked};

/// Reads a frame's pages into `staging`, asking `go_on` after each page whether to read on.
/// Returns what the walk learnt, or why the SS's pages ended early ([`PullError::Stopped`] when
/// `go_on` said no); the outer error is the ledger's.
pub fn stage_pages(
    source: &dyn Source,
    frame: Frame,
    staging: &mut Staging,
    mut go_on: impl FnMut() -> bool,
) -> Result<Result<Walked, PullError>> {
    let mut walked = Walked::default();
    for page in source.pages(frame) {
        let page = match page {
            Ok(page) => page,
            Err(error) => return Ok(Err(error)),
        };
        walked.add(&page);
        staging.add(page.records, &page.invalid)?;
        if !go_on() {
            return Ok(Err(PullError::Stopped));
        }
    }
    Ok(Ok(walked_through(frame, walked, staging)))
}

/// A frame's pages read ahead, in memory, before there is a staging for them: what a run
/// fetches from the SS while it pushes the frame before.
pub struct Fetched {
    pub frame: Frame,
    pages: Vec<Page>,
    /// How the walk ended: the pages are all there, or why they stop short.
    end: Result<(), PullError>,
    /// When the walk began and ended, on the run's clock's `elapsed`.
    pub took: std::time::Duration,
}

impl Fetched {
    /// The walk was stopped between pages by its caller.
    pub fn stopped(&self) -> bool {
        matches!(self.end, Err(PullError::Stopped))
    }

    /// The SS asked for quiet (429, 503) during the walk.
    pub fn ss_busy(&self) -> bool {
        matches!(self.end, Err(PullError::Busy { .. }))
    }
}

/// Reads a frame's pages into memory, asking `go_on` after each page whether to read on. None
/// when they grow past `max_bytes` (UIDs and bodies): the frame is then pulled the usual way,
/// page by page into the ledger's staging, so reading ahead never costs more memory than that.
pub fn fetch_pages(
    source: &dyn Source,
    frame: Frame,
    max_bytes: usize,
    mut go_on: impl FnMut() -> bool,
) -> Option<Fetched> {
    let started = std::time::Instant::now();
    let (mut pages, mut bytes) = (Vec::new(), 0);
    let mut end = Ok(());
    for page in source.pages(frame) {
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                end = Err(error);
                break;
            }
        };
        bytes += page.records.iter().map(|r| r.uid.len() + r.body.len()).sum::<usize>();
        pages.push(page);
        if bytes > max_bytes {
            return None;
        }
        if !go_on() {
            end = Err(PullError::Stopped);
            break;
        }
    }
    Some(Fetched { frame, pages, end, took: started.elapsed() })
}

/// Puts pages read ahead into `staging`, as [`stage_pages`] would have as they arrived.
pub fn stage_fetched(fetched: Fetched, staging: &mut Staging) -> Result<Result<Walked, PullError>> {
    let mut walked = Walked::default();
    for page in fetched.pages {
        walked.add(&page);
        staging.add(page.records, &page.invalid)?;
    }
    match fetched.end {
        Ok(()) => Ok(Ok(walked_through(fetched.frame, walked, staging))),
        Err(error) => Ok(Err(error)),
    }
}

/// What the end of a whole walk says once: records stamped outside the frame, and UIDs the SS
/// repeated.
fn walked_through(frame: Frame, walked: Walked, staging: &Staging) -> Walked {
    if walked.out_of_frame > 0 {
        log::warn!(
            "frame {frame}: {} stamped outside the frame (or with no readable timestamp); kept, as the SS returned them",
            plural(walked.out_of_frame, "record")
        );
    }
    staging.say_repeats();
    walked
}
