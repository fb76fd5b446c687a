//! Clients for a gateway under test: reqwest clients that trust only the test certificate,
//! and raw TLS connections for the byte-level client in [`super::raw`].
//!
//! Every client resolves the names in [`TEST_HOSTS`] to the gateway, so URLs carry a real
//! host name (SNI, `Host`, certificate check all agree) while the socket goes to 127.0.0.1.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// Host names the test certificate is made for; clients resolve each to the gateway.
pub const TEST_HOSTS: [&str; 3] = ["localhost", "example.test", "other.test"];

/// The host name clients use unless a test picks another.
pub const DEFAULT_HOST: &str = "localhost";

/// ALPN offering only HTTP/1.1.
pub const ALPN_H1: &[&[u8]] = &[b"http/1.1"];
/// ALPN offering only HTTP/2.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN offering HTTP/2 first, then HTTP/1.1, as browsers do.
pub const ALPN_H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Backstop so that no client call can hang a test run; tests use tighter bounds themselves.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Which HTTP version a reqwest client speaks (chosen with ALPN, no fallback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// A rustls client configuration that trusts exactly the certificates in `cert_pem`.
pub fn tls_client_config(cert_pem: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    tls_client_config_trusting(&[cert_pem], alpn)
}

/// A rustls client configuration that trusts exactly the certificates in these PEM files.
pub fn tls_client_config_trusting(cert_pems: &[&Path], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert_pem in cert_pems {
        let certs = CertificateDer::pem_file_iter(cert_pem)
            .unwrap_or_else(|e| panic!("read test certificate {}: {e}", cert_pem.display()));
        for cert in certs {
            roots
                .add(cert.expect("parse test certificate"))
                .expect("trust test certificate");
        }
    }
    // Name the provider rather than rely on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Opens a TCP connection to `addr` and completes a TLS handshake for [`DEFAULT_HOST`].
pub async fn tls_connect(addr: SocketAddr, cert_pem: &Path, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls_handshake(tcp, cert_pem, alpn).await
}

/// Completes a TLS handshake for [`DEFAULT_HOST`] over an already open TCP connection.
pub async fn tls_handshake(tcp: TcpStream, cert_pem: &Path, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(Arc::new(tls_client_config(cert_pem, alpn)));
    let name = ServerName::try_from(DEFAULT_HOST).expect("valid server name");
    connector.connect(name, tcp).await
}

/// Builds reqwest clients for one gateway; see [`super::GatewayAddrs::client_builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    cert_pem: PathBuf,
    https: SocketAddr,
    version: HttpVersion,
    local_address: Option<IpAddr>,
    cookie_store: bool,
}

impl ClientBuilder {
    /// A client for the gateway at `https` trusting `cert_pem`; HTTP/1.1 unless told otherwise.
    pub fn new(cert_pem: &Path, https: SocketAddr) -> Self {
        Self {
            cert_pem: cert_pem.to_owned(),
            https,
            version: HttpVersion::Http1,
            local_address: None,
            cookie_store: false,
        }
    }

    /// Speak this HTTP version only.
    pub fn version(mut self, version: HttpVersion) -> Self {
        self.version = version;
        self
    }

    /// Speak HTTP/2 only.
    pub fn http2(self) -> Self {
        self.version(HttpVersion::Http2)
    }

    /// Bind the client's sockets to `ip` (any 127.x.y.z works on Linux loopback), so tests can
    /// present different client addresses.
    pub fn local_address(mut self, ip: IpAddr) -> Self {
        self.local_address = Some(ip);
        self
    }

    /// Keep cookies between requests, as a browser would.
    pub fn cookie_store(mut self) -> Self {
        self.cookie_store = true;
        self
    }

    /// The reqwest client. Redirects are not followed: tests assert on them.
    pub fn build(self) -> reqwest::Client {
        let alpn = match self.version {
            HttpVersion::Http1 => ALPN_H1,
            HttpVersion::Http2 => ALPN_H2,
        };
        // reqwest leaves ALPN of a preconfigured rustls config alone, so it is set above.
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_client_config(&self.cert_pem, alpn))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(CLIENT_TIMEOUT)
            .cookie_store(self.cookie_store)
            .local_address(self.local_address);
        builder = match self.version {
            HttpVersion::Http1 => builder.http1_only(),
            HttpVersion::Http2 => builder.http2_prior_knowledge(),
        };
        for host in TEST_HOSTS {
            builder = builder.resolve(host, self.https);
        }
        builder.build().expect("build HTTPS test client")
    }
}

/// A client for plain-HTTP listeners (admin, redirect).
pub fn plain_client() -> reqwest::Client {
    // A TLS config that trusts nothing: this client never speaks TLS, and this way building it
    // does not depend on the machine's certificate store.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let trusts_nothing = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(trusts_nothing)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("build plain HTTP test client")
}
