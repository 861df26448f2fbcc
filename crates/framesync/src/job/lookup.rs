//! Whether the RS's lookup can be believed. A lookup is evidence only when it can say "absent":
//! before a run first relies on it — and again after the RS failed, since a maintenance page
//! may have begun — it is asked for a UID that cannot exist and must answer "absent".
//! Otherwise lookups are off for the run: records whose fate is unknown go again under their
//! own keys, the run exits 1 saying why, and the ledger keeps the reason for `status`.

use anyhow::Result;

use super::Job;
use crate::plural::plural;

/// What this run knows of the lookup, and how often it asked for a UID that cannot exist.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    trust: Trust,
    probes: u32,
}

/// Whether the lookup can be believed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Not asked yet (or the RS failed since it last answered "absent").
    #[default]
    Unchecked,
    /// It answered "absent" for a UID that cannot exist.
    Trusted,
    /// It answered "present" for a UID that cannot exist: off for this run.
    Off,
}

impl Job<'_> {
    /// Ok(Ok(true)) when lookups can be used now; Ok(Ok(false)) when the RS has none or it is
    /// off for this run; Ok(Err(why)) when the probe itself failed (the RS is failing).
    pub(super) fn lookup_usable(&mut self) -> Result<Result<bool, String>> {
        if !self.sink.has_lookup() {
            return Ok(Ok(false));
        }
        match self.pushing.lookups.trust {
            Trust::Trusted => return Ok(Ok(true)),
            Trust::Off => return Ok(Ok(false)),
            Trust::Unchecked => {}
        }
        self.pushing.lookups.probes += 1;
        let now = self.clock.now();
        // A batched lookup is asked for two in one request, as it will be asked for many.
        let mut probes = vec![format!("framesync-no-such-record-{now}-{}", self.pushing.lookups.probes)];
        if self.sink.lookup_batch_size() > 1 {
            probes.push(format!("{}-b", probes[0]));
        }
        let uids: Vec<&str> = probes.iter().map(String::as_str).collect();
        let probe = &probes[0];
        match self.sink.lookup_many(&uids).map(|present| present.contains(&true)) {
            Ok(false) => {
                self.pushing.lookups.trust = Trust::Trusted;
                self.ledger.lookup_checked(None, now)?;
                Ok(Ok(true))
            }
            Ok(true) => {
                self.pushing.lookups.trust = Trust::Off;
                let key = self.config.sink.lookup.as_ref().map_or("the lookup", |l| l.key);
                let why = format!(
                    "{key} answered \"present\" for {probe:?}, a UID that cannot exist: it cannot say \"absent\", so it is no evidence; lookups are off for this run and records whose fate is unknown go again under their keys"
                );
                self.ledger.lookup_checked(Some(&why), now)?;
                log::error!("{why}");
                self.outcome.failures.push(why);
                Ok(Ok(false))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// Asks the lookup about `uids`, `lookup_batch_size` a request, in order: the answers
    /// until the first failure, and the failure.
    pub(super) fn look_up(&self, uids: &[&str]) -> (Vec<bool>, Option<String>) {
        let mut answers = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(self.sink.lookup_batch_size().max(1)) {
            match self.sink.lookup_many(chunk) {
                Ok(present) if present.len() == chunk.len() => answers.extend(present),
                Ok(present) => {
                    let why = format!(
                        "the lookup gave {} for {}",
                        plural(present.len(), "answer"),
                        plural(chunk.len(), "UID")
                    );
                    return (answers, Some(why));
                }
                Err(why) => return (answers, Some(why)),
            }
        }
        (answers, None)
    }

    /// The RS failed: a lookup trusted so far is asked again before it is relied on.
    pub(super) fn doubt_lookup(&mut self) {
        if self.pushing.lookups.trust == Trust::Trusted {
            self.pushing.lookups.trust = Trust::Unchecked;
        }
    }
}
