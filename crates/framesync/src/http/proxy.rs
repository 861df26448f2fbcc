//! The `CONNECT` connector in ureq's chain, through the proxy the environment named when the
//! config was read ([`crate::config::ProxySetting`]), and failures of the proxy told as such,
//! naming it by host and port (never by its credentials).

use ureq::unversioned::transport::{ConnectProxyConnector, ConnectionDetails, Connector, Transport};

use super::Failure;
use crate::config::ProxySetting;

/// ureq's `CONNECT` connector, whose failures name the proxy.
#[derive(Debug)]
pub struct NamedProxy {
    inner: ConnectProxyConnector,
    setting: Option<ProxySetting>,
}

impl NamedProxy {
    pub fn new(setting: Option<ProxySetting>) -> Self {
        Self { inner: ConnectProxyConnector::default(), setting }
    }
}

impl<In: Transport> Connector<In> for NamedProxy {
    type Out = <ConnectProxyConnector as Connector<In>>::Out;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        self.inner.connect(details, chained).map_err(|e| match &self.setting {
            Some(setting) => Failure::new(proxy_failed(setting, &e)).into(),
            None => e,
        })
    }
}

/// One line on a failure of the proxy itself.
fn proxy_failed(setting: &ProxySetting, e: &ureq::Error) -> String {
    let (shown, var) = (setting.shown(), setting.var);
    let what = match e {
        ureq::Error::ConnectProxyFailed(reason) => {
            match reason.strip_prefix("proxy server responded ").and_then(|r| r.split('/').next()) {
                Some("407") => format!(
                    "it answered CONNECT with 407 Proxy Authentication Required; put the proxy's user and password in {var} (http://user:password@host:port)"
                ),
                Some(status) => format!("it answered CONNECT with HTTP {status}"),
                None => reason.clone(),
            }
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused; is the proxy running, and is {var} right?")
        }
        ureq::Error::HostNotFound => format!("its host name does not resolve; is {var} right?"),
        e => super::why(e),
    };
    format!("the proxy {shown} (from {var}) failed: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_failure_names_the_proxy_and_its_variable_never_its_credentials() {
        let proxy = ureq::Proxy::new("http://me:hunter2@p.example:3128").unwrap();
        let setting = ProxySetting { proxy, var: "HTTPS_PROXY" };
        let failure = proxy_failed(&setting, &ureq::Error::ConnectProxyFailed("proxy server responded 407/407".into()));
        assert!(
            failure.starts_with("the proxy p.example:3128 (from HTTPS_PROXY) failed: it answered CONNECT with 407")
        );
        assert!(!failure.contains("hunter2"), "{failure}");
    }
}
