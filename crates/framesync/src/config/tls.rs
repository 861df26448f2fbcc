//! `[source.tls]` and `[sink.tls]` (the sink's also serves its lookups): which certificates a
//! client trusts, its own certificate for mutual TLS, the lowest TLS version it speaks; with
//! the proxy the environment names for the server's URL, that is how a client reaches its
//! server ([`Transport`]). Every file is read and parsed here, when the config is checked, so a
//! missing or bad file is a config error naming its key, never a failure in the middle of a run.
//!
//! Trust: the certificates of `ca`, plus the operating system's store with `system_roots`;
//! with neither, the Mozilla roots bundled with framesync (what ureq trusts by default).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::proxy::{self, ProxySetting};
use super::{Env, resolve};
use crate::redact::Redactor;

/// How a client reaches its server: TLS as its `tls` table says, through the proxy the
/// environment names (or none).
#[derive(Debug, Clone)]
pub struct Transport {
    pub tls: Arc<rustls::ClientConfig>,
    pub why: Why,
    pub proxy: Option<ProxySetting>,
}

impl Transport {
    /// Today's defaults for the table `key`: the bundled roots, TLS 1.2 and above, no proxy.
    pub fn plain(key: &'static str) -> Self {
        let min = MinVersion::default();
        let tls = client_config(bundled_roots(), None, min).expect("the default TLS settings are valid");
        Self { tls: Arc::new(tls), why: Why { key, client_cert: false, min }, proxy: None }
    }
}

/// The lowest TLS version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl MinVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        match self {
            MinVersion::Tls12 => rustls::DEFAULT_VERSIONS,
            MinVersion::Tls13 => TLS13_ONLY,
        }
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The roots that webpki-roots bundles (Mozilla's), which ureq trusts by default.
fn bundled_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// A client config trusting `roots`, presenting `client` (a chain and its key) when asked,
/// speaking `min` and above.
fn client_config(
    roots: RootCertStore,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    min: MinVersion,
) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(min.versions())?
        .with_root_certificates(roots);
    match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// What a TLS failure message needs: the config's table, and what it set.
#[derive(Debug, Clone, Copy)]
pub struct Why {
    /// `source.tls` or `sink.tls`.
    pub key: &'static str,
    pub client_cert: bool,
    pub min: MinVersion,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    ca: Option<String>,
    system_roots: bool,
    client_cert: Option<String>,
    client_key: Option<String>,
    #[serde(deserialize_with = "min_version")]
    min_version: MinVersion,
}

impl RawTls {
    /// `key` is `source.tls` or `sink.tls`; `url` is the server's URL (its scheme picks the proxy).
    pub(super) fn check(
        self,
        key: &'static str,
        base: &Path,
        url: &str,
        env: Env,
        secrets: &mut Redactor,
    ) -> Result<Transport> {
        let roots = self.roots(key, base)?;
        let client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(pem_key)) => Some(client(key, base, cert, pem_key)?),
            (None, None) => None,
            (Some(_), None) => bail!("{key}.client_key: missing; client_cert needs the PEM file of its private key"),
            (None, Some(_)) => bail!("{key}.client_cert: missing; client_key needs the PEM file of its certificate"),
        };
        let client_cert = client.is_some();
        let tls = client_config(roots, client, self.min_version).map_err(|e| {
            let which = if client_cert { "client_key" } else { "min_version" };
            anyhow::anyhow!("{key}.{which}: {e}")
        })?;
        let why = Why { key, client_cert, min: self.min_version };
        let proxy = proxy::from_env(url, env, secrets)?;
        Ok(Transport { tls: Arc::new(tls), why, proxy })
    }

    fn roots(&self, key: &str, base: &Path) -> Result<RootCertStore> {
        if self.ca.is_none() && !self.system_roots {
            return Ok(bundled_roots());
        }
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca {
            let path = resolve(base, ca);
            for (i, cert) in certificates(&format!("{key}.ca"), &path)?.into_iter().enumerate() {
                if let Err(e) = roots.add(cert) {
                    bail!(
                        "{key}.ca: {}: certificate {} is not a CA certificate rustls can use: {e}",
                        path.display(),
                        i + 1
                    );
                }
            }
        }
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                bail!(
                    "{key}.system_roots: the operating system's trust store holds no certificate{why}; install ca-certificates or set SSL_CERT_FILE"
                );
            }
        }
        Ok(roots)
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{key}: {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
    }
    Ok(certs)
}

fn client(
    key: &str,
    base: &Path,
    cert: &str,
    pem_key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = certificates(&format!("{key}.client_cert"), &resolve(base, cert))?;
    let path = resolve(base, pem_key);
    let text = read(&format!("{key}.client_key"), &path)?;
    let private = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        anyhow::anyhow!("{key}.client_key: {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}", path.display())
    })?;
    Ok((chain, private))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))
}

/// `"1.2"` or `"1.3"` (a bare number too, as TOML reads `1.3`).
fn min_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MinVersion, D::Error> {
    struct Version;

    impl Visitor<'_> for Version {
        type Value = MinVersion;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("\"1.2\" or \"1.3\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<MinVersion, E> {
            match text {
                "1.2" => Ok(MinVersion::Tls12),
                "1.3" => Ok(MinVersion::Tls13),
                other => Err(E::custom(format!(
                    "{other:?} is not a TLS version framesync speaks; write \"1.2\" (the default) or \"1.3\""
                ))),
            }
        }

        fn visit_f64<E: de::Error>(self, number: f64) -> Result<MinVersion, E> {
            self.visit_str(&number.to_string())
        }
    }

    deserializer.deserialize_any(Version)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(dir: &Path, source_tls: &str) -> anyhow::Result<Config> {
        let text = format!(
            "ledger = \"l.db\"\n[frames]\nstart = \"2026-11-01T00:00:00Z\"\n[source]\nurl = \"https://ss/e?from={{from}}&to={{to}}\"\nuid = \"/id\"\n[source.tls]\n{source_tls}\n[sink]\nurl = \"https://rs/in\"\n"
        );
        Config::parse(&text, dir, &|_| None)
    }

    fn error(dir: &Path, source_tls: &str) -> String {
        let e = format!("{:#}", parse(dir, source_tls).unwrap_err());
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        e
    }

    /// A CA certificate and a client certificate with its key, as PEM files in `dir`.
    fn files(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a certificate").unwrap();
    }

    #[test]
    fn relative_files_are_read_from_the_configs_folder() {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path());
        let config = parse(
            dir.path(),
            "ca = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\nmin_version = \"1.3\"",
        )
        .unwrap();
        let why = config.source.transport.why;
        assert_eq!((why.key, why.client_cert, why.min.as_str()), ("source.tls", true, "1.3"));
        assert!(config.source.transport.tls.client_auth_cert_resolver.has_certs());
        assert_eq!(config.sink.transport.why.key, "sink.tls");
        assert!(!config.sink.transport.why.client_cert);
    }

    #[test]
    fn a_bare_number_is_a_version_too() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(parse(dir.path(), "min_version = 1.3").unwrap().source.transport.why.min.as_str(), "1.3");
    }

    #[test]
    fn bad_tls_values_name_their_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path());
        let e = error(dir.path(), "ca = \"missing.pem\"");
        assert!(e.starts_with("source.tls.ca: cannot read ") && e.contains("missing.pem"), "{e}");
        let e = error(dir.path(), "ca = \"junk.pem\"");
        assert!(e.starts_with("source.tls.ca: ") && e.contains("holds no PEM certificate"), "{e}");
        let e = error(dir.path(), "client_key = \"client.key\"");
        assert!(e.starts_with("source.tls.client_cert: missing"), "{e}");
        let e = error(dir.path(), "client_cert = \"client.pem\"");
        assert!(e.starts_with("source.tls.client_key: missing"), "{e}");
        let e = error(dir.path(), "client_cert = \"client.pem\"\nclient_key = \"client.pem\"");
        assert!(e.starts_with("source.tls.client_key: ") && e.contains("no PEM private key"), "{e}");
        let e = error(dir.path(), "min_version = \"1.1\"");
        assert!(e.starts_with("source.tls.min_version: \"1.1\" is not a TLS version"), "{e}");
        let e = error(dir.path(), "verify = false");
        assert!(e.starts_with("source.tls: unknown field `verify`"), "{e}");
    }
}
