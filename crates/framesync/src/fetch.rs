//! A frame's pages from the SS into the ledger's staging: the one path by which a pull, a
//! re-check, a redelivery and `verify` read a frame. Pages are staged as they arrive, so a
//! frame of any size is read with one page in memory, and no ledger write waits on the network.

use anyhow::Result;

use crate::frames::Frame;
use crate::ledger::Staging;
use crate::plural::plural;
use crate::source::{PullError, Source, Walked};

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
    if walked.out_of_frame > 0 {
        log::warn!(
            "frame {frame}: {} stamped outside the frame (or with no readable timestamp); kept, as the SS returned them",
            plural(walked.out_of_frame, "record")
        );
    }
    staging.say_repeats();
    Ok(Ok(walked))
}
