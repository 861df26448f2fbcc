//! Secrets (values read from the environment) are scrubbed where a message leaves framesync,
//! never call by call: the log (`crate::logging::Logger`), a command's output ([`Scrubbed`]) and its final
//! error (`main`) use the secrets [`install`]ed from the config; the ledger scrubs every text it
//! writes with the config's [`Redactor`] (`Ledger::scrub_with`). Messages inside framesync may
//! hold a secret (a URL with its key); none leaves with one.

use std::io::Write;
use std::sync::RwLock;

/// The secret values of one config. Cloned into each client that builds messages.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// The secrets of the configs loaded by this process, for the log and the command's output.
static INSTALLED: RwLock<Redactor> = RwLock::new(Redactor { secrets: Vec::new() });

/// Adds a config's secrets to those the log and the command's output scrub.
pub fn install(secrets: &Redactor) {
    let mut installed = INSTALLED.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for secret in &secrets.secrets {
        installed.add(secret);
    }
}

/// Adds one secret learnt while running (an OAuth2 access token) to those the log, the
/// command's output and the ledger scrub.
pub fn install_one(secret: &str) {
    INSTALLED.write().unwrap_or_else(|poisoned| poisoned.into_inner()).add(secret);
}

/// `text` with every installed secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    INSTALLED.read().unwrap_or_else(|poisoned| poisoned.into_inner()).scrub(text)
}

/// A command's output, scrubbed line by line (a secret never straddles a line).
pub struct Scrubbed<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Scrubbed<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, line: Vec::new() }
    }

    fn write_line(&mut self, end: usize) -> std::io::Result<()> {
        let rest = self.line.split_off(end);
        let line = std::mem::replace(&mut self.line, rest);
        self.inner.write_all(scrub(&String::from_utf8_lossy(&line)).as_bytes())
    }
}

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(newline) = self.line.iter().position(|&b| b == b'\n') {
            self.write_line(newline + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.write_line(self.line.len())?;
        }
        self.inner.flush()
    }
}

impl Redactor {
    /// Values shorter than 3 characters are not treated as secrets: scrubbing them would
    /// mangle every message and protect nothing.
    pub fn add(&mut self, value: &str) {
        if value.len() >= 3 && !self.secrets.iter().any(|s| s == value) {
            self.secrets.push(value.to_owned());
            // Longest first, so a secret containing another is replaced whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
            let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
            if encoded != *secret && out.contains(encoded.as_str()) {
                out = out.replace(encoded.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_wherever_they_appear() {
        let mut r = Redactor::default();
        r.add("tok-abc");
        r.add("tok-abc-longer");
        r.add("ab");
        assert_eq!(r.scrub("a tok-abc-longer and tok-abc, ab"), "a *** and ***, ab");
    }

    #[test]
    fn installed_secrets_are_scrubbed_from_output_line_by_line_even_when_written_in_pieces() {
        let mut r = Redactor::default();
        r.add("tok-installed-1");
        install(&r);
        let mut out = Scrubbed::new(Vec::new());
        write!(out, "GET /x?key=tok-inst").unwrap();
        writeln!(out, "alled-1 failed").unwrap();
        write!(out, "and tok-installed-1").unwrap();
        out.flush().unwrap();
        assert_eq!(String::from_utf8(out.inner).unwrap(), "GET /x?key=*** failed\nand ***");
        assert_eq!(scrub("a tok-installed-1"), "a ***");
    }

    #[test]
    fn url_encoded_secrets_are_replaced_too() {
        let mut r = Redactor::default();
        r.add("p@ss word");
        assert_eq!(r.scrub("GET /x?key=p%40ss%20word failed"), "GET /x?key=*** failed");
    }
}
