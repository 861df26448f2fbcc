//! Whether the RS's lookup can be believed. A lookup is evidence only when it can say "absent":
//! before a run first relies on it — and again after the RS failed, since a maintenance page
//! may have begun — it is asked for a UID that cannot exist and must answer "absent".
//! Otherwise lookups are off for the run: records whose fate is unknown go again under their
//! own keys, the run exits 1 saying why, and the ledger keeps the reason for `status`.

use anyhow::Result;

use super::Job;

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
        let probe = format!("framesync-no-such-record-{now}-{}", self.pushing.lookups.probes);
        match self.sink.lookup(&probe) {
            Ok(false) => {
                self.pushing.lookups.trust = Trust::Trusted;
                self.ledger.lookup_checked(None, now)?;
                Ok(Ok(true))
            }
            Ok(true) => {
                self.pushing.lookups.trust = Trust::Off;
                let why = format!(
                    "sink.lookup_url answered \"present\" for {probe:?}, a UID that cannot exist: it cannot say \"absent\", so it is no evidence; lookups are off for this run and records whose fate is unknown go again under their keys"
                );
                self.ledger.lookup_checked(Some(&why), now)?;
                log::error!("{why}");
                self.outcome.failures.push(why);
                Ok(Ok(false))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// The RS failed: a lookup trusted so far is asked again before it is relied on.
    pub(super) fn doubt_lookup(&mut self) {
        if self.pushing.lookups.trust == Trust::Trusted {
            self.pushing.lookups.trust = Trust::Unchecked;
        }
    }
}
