//! TLS on loopback for tests: a certificate authority made in the test ([`Pki`]), and a TLS
//! front ([`Server`]) that takes TLS connections and passes their bytes to a plain HTTP server
//! (the simulator, or a [`Canned`](crate::Canned) one).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// A test CA, a server certificate it signed for `127.0.0.1` and `localhost`, and a client
/// certificate it signed; each also written as PEM files in a folder.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "framesync test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let client = leaf(vec!["framesync-client".into()]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server.0),
            server_key: write("server.key", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
        }
    }
}

/// What a [`Server`] speaks and asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Speak TLS 1.2 only (else 1.2 and 1.3).
    pub tls12_only: bool,
    /// Require a client certificate signed by the test CA.
    pub client_auth: bool,
}

/// A TLS front on loopback for a plain HTTP server; counts the handshakes that succeeded.
pub struct Server {
    pub addr: String,
    pub handshakes: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(pki: &Pki, backend: &str, options: Options) -> Server {
        let config = Arc::new(server_config(pki, options));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (count, backend) = (handshakes.clone(), backend.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, count, backend) = (config.clone(), count.clone(), backend.clone());
                std::thread::spawn(move || serve(stream, config, &backend, &count));
            }
        });
        Server { addr, handshakes }
    }

    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }
}

fn server_config(pki: &Pki, options: Options) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if options.tls12_only { &[&rustls::version::TLS12] } else { rustls::DEFAULT_VERSIONS };
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).unwrap();
    let builder = if options.client_auth {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = CertificateDer::pem_file_iter(&pki.server_cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    builder.with_single_cert(chain, key).unwrap()
}

/// One connection: the handshake, then bytes both ways between the client and the backend.
fn serve(mut client: TcpStream, config: Arc<ServerConfig>, backend: &str, handshakes: &AtomicUsize) {
    let Ok(mut conn) = ServerConnection::new(config) else { return };
    while conn.is_handshaking() {
        if conn.complete_io(&mut client).is_err() {
            return;
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let Ok(mut upstream) = TcpStream::connect(backend) else { return };
    // The handshake's last read may have brought the request too.
    let mut early = Vec::new();
    let _ = conn.reader().read_to_end(&mut early);
    if upstream.write_all(&early).is_err() {
        return;
    }
    let (Ok(client_out), Ok(upstream_in)) = (client.try_clone(), upstream.try_clone()) else { return };
    let conn = Arc::new(Mutex::new(conn));
    let down = {
        let conn = conn.clone();
        std::thread::spawn(move || downstream(upstream_in, client_out, &conn))
    };
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut conn = conn.lock().unwrap();
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if conn.read_tls(&mut rest).is_err() || conn.process_new_packets().is_err() {
                let _ = conn.write_tls(&mut client);
                return;
            }
            let mut plain = Vec::new();
            let _ = conn.reader().read_to_end(&mut plain);
            if upstream.write_all(&plain).is_err() {
                return;
            }
        }
        while conn.wants_write() {
            if conn.write_tls(&mut client).is_err() {
                return;
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = down.join();
}

/// The backend's bytes to the client, in TLS; its end closes the client's connection.
fn downstream(mut upstream: TcpStream, mut client: TcpStream, conn: &Mutex<ServerConnection>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = upstream.read(&mut buf).unwrap_or(0);
        let mut conn = conn.lock().unwrap();
        if n == 0 {
            conn.send_close_notify();
        } else if conn.writer().write_all(&buf[..n]).is_err() {
            return;
        }
        while conn.wants_write() {
            if conn.write_tls(&mut client).is_err() {
                return;
            }
        }
        if n == 0 {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}
