//! The proxy a client goes through, read from the environment as curl reads it.
//!
//! For an `https` URL: `https_proxy`, `HTTPS_PROXY`, then `all_proxy`, `ALL_PROXY`; for an
//! `http` URL: `http_proxy`, `HTTP_PROXY`, then the same two. `no_proxy` / `NO_PROXY` lists
//! hosts reached directly. ureq tunnels every request through the proxy with `CONNECT`.

use anyhow::{Result, bail};
use ureq::{Proxy, ProxyProtocol};

use super::Env;
use crate::redact::Redactor;

/// A proxy and the variable that named it.
#[derive(Debug, Clone)]
pub struct ProxySetting {
    pub proxy: Proxy,
    pub var: &'static str,
}

impl ProxySetting {
    /// `host:port`, never the credentials.
    pub fn shown(&self) -> String {
        format!("{}:{}", self.proxy.host(), self.proxy.port())
    }
}

/// The proxy the environment names for `url` (by its scheme), with `NO_PROXY` attached; its
/// password is a secret.
pub(super) fn from_env(url: &str, env: Env, secrets: &mut Redactor) -> Result<Option<ProxySetting>> {
    let https = url.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("https:"));
    let vars: [&'static str; 4] = if https {
        ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let Some((var, value)) = vars.iter().find_map(|var| env(var).filter(|v| !v.trim().is_empty()).map(|v| (*var, v)))
    else {
        return Ok(None);
    };
    let Ok(parsed) = Proxy::new(value.trim()) else {
        bail!("{var}: not a proxy URL framesync can use; write http://host:port or http://user:password@host:port");
    };
    if !matches!(parsed.protocol(), ProxyProtocol::Http | ProxyProtocol::Https) {
        bail!("{var}: a {} proxy; framesync goes only through HTTP proxies (http://host:port)", parsed.protocol());
    }
    let mut builder = Proxy::builder(parsed.protocol()).host(parsed.host()).port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        secrets.add(password);
        builder = builder.password(password);
    }
    for entry in no_proxy(env) {
        builder = builder.no_proxy(&entry);
    }
    let Ok(proxy) = builder.build() else {
        bail!("{var}: not a proxy URL framesync can use; write http://host:port or http://user:password@host:port");
    };
    Ok(Some(ProxySetting { proxy, var }))
}

/// `NO_PROXY`'s entries as ureq matches them: a name also covers its subdomains (as curl
/// reads it), an IPv6 address is matched in brackets, spaces around commas are dropped.
fn no_proxy(env: Env) -> Vec<String> {
    let Some(list) = env("no_proxy").or_else(|| env("NO_PROXY")) else { return Vec::new() };
    let mut entries = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        entries.push(entry.to_owned());
        if entry.contains(':') && !entry.starts_with('[') {
            entries.push(format!("[{entry}]"));
        } else if !entry.starts_with(['.', '*']) && entry.parse::<std::net::IpAddr>().is_err() {
            entries.push(format!(".{entry}"));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(url: &str, vars: &[(&str, &str)]) -> Result<Option<ProxySetting>> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        from_env(url, &env, &mut Redactor::default())
    }

    fn uri(text: &str) -> ureq::http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn the_url_scheme_picks_the_variable() {
        let vars = [("HTTPS_PROXY", "http://s.example:3128"), ("http_proxy", "http://p.example:8080")];
        assert_eq!(read("https://rs/x", &vars).unwrap().unwrap().shown(), "s.example:3128");
        assert_eq!(read("http://rs/x", &vars).unwrap().unwrap().var, "http_proxy");
        assert_eq!(read("https://rs/x", &[("ALL_PROXY", "p:1")]).unwrap().unwrap().shown(), "p:1");
        assert!(read("https://rs/x", &[("HTTP_PROXY", "http://p:1")]).unwrap().is_none());
        assert!(read("https://rs/x", &[]).unwrap().is_none());
    }

    #[test]
    fn no_proxy_names_hosts_their_subdomains_and_addresses() {
        let vars = [("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "internal.example, 127.0.0.1,::1")];
        let proxy = read("https://rs/x", &vars).unwrap().unwrap().proxy;
        assert!(proxy.is_no_proxy(&uri("https://internal.example/")));
        assert!(proxy.is_no_proxy(&uri("https://db.internal.example/")));
        assert!(proxy.is_no_proxy(&uri("https://127.0.0.1:8443/")));
        assert!(proxy.is_no_proxy(&uri("https://[::1]:8443/")));
        assert!(!proxy.is_no_proxy(&uri("https://rs.example/")));
        assert!(!proxy.is_no_proxy(&uri("https://notinternal.example/")));
    }

    #[test]
    fn bad_proxies_are_named_by_their_variable_without_their_value() {
        let e = read("https://rs/x", &[("HTTPS_PROXY", "socks5://u:hunter2@p:1080")]).unwrap_err().to_string();
        assert!(e.starts_with("HTTPS_PROXY: a SOCKS5 proxy"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = read("https://rs/x", &[("https_proxy", "ftp://u:hunter2@p")]).unwrap_err().to_string();
        assert!(e.starts_with("https_proxy: not a proxy URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn proxy_credentials_are_secrets_and_never_shown() {
        let mut secrets = Redactor::default();
        let env = |name: &str| (name == "HTTPS_PROXY").then(|| "http://me:hunter2@p.example:3128".to_owned());
        let setting = from_env("https://rs/x", &env, &mut secrets).unwrap().unwrap();
        assert_eq!(setting.shown(), "p.example:3128");
        assert_eq!(setting.proxy.password(), Some("hunter2"));
        assert_eq!(secrets.scrub("x hunter2 y"), "x *** y");
    }
}
