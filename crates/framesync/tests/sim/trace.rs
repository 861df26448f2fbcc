//! The readable trace of a seed (`SIM_TRACE=1`): every run's plan, requests, answers, faults,
//! kills and exit codes. Lines are only formatted when the trace is on, so it costs nothing
//! at scale; a collected trace is how a test shows that a seed replays identically.

#[derive(Debug, Default)]
pub enum Trace {
    #[default]
    Off,
    /// Printed to stdout as it happens.
    Print,
    /// Kept, for comparing two replays.
    Collect(Vec<String>),
}

impl Trace {
    pub fn line(&mut self, line: impl FnOnce() -> String) {
        match self {
            Trace::Off => {}
            Trace::Print => println!("{}", line()),
            Trace::Collect(lines) => lines.push(line()),
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, Trace::Off)
    }

    pub fn lines(self) -> Vec<String> {
        match self {
            Trace::Collect(lines) => lines,
            _ => Vec::new(),
        }
    }
}
