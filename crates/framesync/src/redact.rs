//! Secrets (values read from the environment) are scrubbed from every message framesync
//! writes: logs, the ledger, error output.

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
    fn url_encoded_secrets_are_replaced_too() {
        let mut r = Redactor::default();
        r.add("p@ss word");
        assert_eq!(r.scrub("GET /x?key=p%40ss%20word failed"), "GET /x?key=*** failed");
    }
}
