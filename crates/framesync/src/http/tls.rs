//! TLS in ureq's chain: the connector that speaks the rustls client config checked from
//! `[source.tls]` or `[sink.tls]` ([`crate::config::Transport`]), and handshake failures told
//! as what to fix.
//!
//! ureq's own rustls connector always offers every TLS version and trusts one kind of root at a
//! time, so framesync puts its own connector in the chain: the same rustls, with the client
//! config the config check built.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

use super::Failure;
use crate::config::Why;

/// Wraps an `https` connection in TLS with one client config; other connections pass as they are.
#[derive(Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    why: Why,
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>, why: Why) -> Self {
        Self { config, why }
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else { return Ok(None) };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| Failure::new(format!("TLS: {host:?} is not a host name a certificate can be for")))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock).map_err(|e| failed(e, self.why))?;
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(TlsTransport { buffers, stream: StreamOwned::new(conn, sock), why: self.why })))
    }
}

/// A connection in TLS.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
    why: Why,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output).map_err(|e| failed(e, self.why))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input).map_err(|e| failed(e, self.why))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// A TLS failure told as what to fix; any other I/O error (a timeout, a reset) as ureq tells it.
fn failed(e: std::io::Error, why: Why) -> ureq::Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => Failure::new(explain(tls, why)).into(),
        None => ureq::Error::from(e),
    }
}

/// One line on a TLS error, naming the key that fixes it.
pub fn explain(e: &rustls::Error, why: Why) -> String {
    let key = why.key;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the server's certificate is not trusted (no trusted root signed it); set {key}.ca to the PEM file of the CA that did"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS: the server's certificate is not valid for this host name; use the name the certificate is for in the URL".into(),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "TLS: the server's certificate has expired".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("TLS: the server's certificate is refused: {other:?}"),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            format!("TLS: the server requires a client certificate; set {key}.client_cert and {key}.client_key")
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied,
        ) if why.client_cert => {
            format!("TLS: the server refused the client certificate of {key}.client_cert ({e})")
        }
        rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) if !why.client_cert => format!(
            "TLS: the server refused the handshake; it may require a client certificate ({key}.client_cert and {key}.client_key)"
        ),
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) | rustls::Error::PeerIncompatible(_) => format!(
            "TLS: the server speaks no TLS version framesync offers ({} and above, from {key}.min_version): {e}",
            why.min.as_str()
        ),
        other => format!("TLS: {other}"),
    }
}
