//! `TestGateway`: the library's `Gateway` running in-process on the test's runtime, and
//! `GatewayAddrs`, what every way of running a gateway exposes (addresses, clients).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    ops::Deref,
    path::PathBuf,
    time::Duration,
};

use tokio::{net::TcpStream, task::JoinHandle};
use tokio_rustls::client::TlsStream;

use sessiongate::{config::Config, Gateway, ShutdownHandle, StartError};

use super::{
    binary::BinaryGateway,
    client::{self, ClientBuilder, DEFAULT_HOST},
    config::{GatewayConfig, PreparedConfig},
    within, RawConn,
};

/// Where a running gateway can be reached, and clients that trust its certificate.
#[derive(Clone, Debug)]
pub struct GatewayAddrs {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: Option<SocketAddr>,
    /// The certificate the gateway serves (PEM); clients trust exactly this.
    pub cert: PathBuf,
}

impl GatewayAddrs {
    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        self.url_for_host(DEFAULT_HOST, path)
    }

    /// `https://{host}:PORT{path}`; `host` must be one of `client::TEST_HOSTS`.
    pub fn url_for_host(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }

    /// The `Host` header value a browser would send: `localhost:PORT`.
    pub fn host_header(&self) -> String {
        format!("{DEFAULT_HOST}:{}", self.https.port())
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /metrics` on the admin listener, as text; fails the test unless 200.
    pub async fn metrics_text(&self) -> String {
        let response = super::client::plain_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// The value of one series on `/metrics`: its name and labels as the
    /// text shows them (`sessiongate_upstream_errors_total{kind="connect"}`);
    /// `None` when it is not there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// An HTTP/1.1-only HTTPS client.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build()
    }

    /// An HTTP/2-only HTTPS client.
    pub fn client_h2(&self) -> reqwest::Client {
        self.client_builder().http2().build()
    }

    /// A client builder, for local addresses, cookies or the HTTP version.
    pub fn client_builder(&self) -> ClientBuilder {
        ClientBuilder::new(&self.cert, self.https)
    }

    /// A TLS connection to the HTTPS listener offering `alpn`.
    pub async fn tls_connect(&self, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
        client::tls_connect(self.https, &self.cert, alpn).await
    }

    /// A TCP connection to `to` from the local address `from` (any
    /// 127.0.0.0/8 address works on loopback), as a load balancer opens one.
    pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(to).await
    }

    /// A TLS connection from `from` whose first bytes are `preface` (a PROXY
    /// header, as a TCP load balancer sends), then a raw HTTP/1.1 one.
    pub async fn raw_via(&self, from: IpAddr, preface: &[u8]) -> io::Result<RawConn<TlsStream<TcpStream>>> {
        let mut tcp = Self::tcp_from(from, self.https).await?;
        tokio::io::AsyncWriteExt::write_all(&mut tcp, preface).await?;
        let tls = within(
            Duration::from_secs(5),
            "TLS handshake after a preface",
            client::tls_handshake(tcp, &self.cert, client::ALPN_H1),
        )
        .await?;
        Ok(RawConn::new(tls))
    }

    /// A raw HTTP/1.1 connection over TLS; fails the test if it cannot be opened in 5 s.
    pub async fn raw(&self) -> RawConn<TlsStream<TcpStream>> {
        self.raw_with_alpn(client::ALPN_H1).await
    }

    /// Like [`Self::raw`] with a chosen ALPN offer (empty: no ALPN extension at all).
    pub async fn raw_with_alpn(&self, alpn: &[&[u8]]) -> RawConn<TlsStream<TcpStream>> {
        let tls = within(Duration::from_secs(5), "TLS connect", self.tls_connect(alpn))
            .await
            .expect("TLS connection to the gateway");
        RawConn::new(tls)
    }

    /// Fails the test unless the kept-alive `conn` (from [`Self::raw`]) still
    /// serves a request for `path`, within 10 s.
    pub async fn assert_still_serves(&self, conn: &mut RawConn<TlsStream<TcpStream>>, path: &str) {
        let response = within(
            Duration::from_secs(10),
            "request on the same connection",
            conn.roundtrip(super::raw::get_request(path, &self.host_header())),
        )
        .await
        .expect("request on the same kept-alive connection");
        assert_eq!(response.status, 200);
        assert_eq!(response.echo().path(), path);
    }
}

/// A gateway running in-process. Dropping it starts shutdown and stops its task.
pub struct TestGateway {
    addrs: GatewayAddrs,
    shutdown: ShutdownHandle,
    run: Option<JoinHandle<Result<(), StartError>>>,
    /// The config directory; deleted when the gateway is dropped.
    prepared: PreparedConfig,
}

impl TestGateway {
    /// Writes `config`, loads it with `Config::load`, binds and spawns `Gateway::run`.
    pub async fn start(config: GatewayConfig) -> Self {
        let prepared = config.prepare();
        let loaded = Config::load(&prepared.path)
            .unwrap_or_else(|e| panic!("config rejected: {e}\n--- config ---\n{}", prepared.text));
        let gateway = Gateway::bind(loaded)
            .await
            .unwrap_or_else(|e| panic!("Gateway::bind failed: {e}\n--- config ---\n{}", prepared.text));
        let addrs = GatewayAddrs {
            https: gateway.https_addr(),
            admin: gateway.admin_addr(),
            redirect: gateway.redirect_addr(),
            cert: prepared.cert.clone(),
        };
        let shutdown = gateway.shutdown_handle();
        let run = Some(tokio::spawn(gateway.run()));
        Self {
            addrs,
            shutdown,
            run,
            prepared,
        }
    }

    /// Runs the real `sessiongate` binary instead, for tests that need a process (signals,
    /// exit codes, logs, memory). Same as [`BinaryGateway::start`].
    pub async fn spawn_binary(config: GatewayConfig) -> BinaryGateway {
        BinaryGateway::start(config).await
    }

    /// The gateway's shutdown handle.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Whether `run()` has returned.
    pub fn has_stopped(&self) -> bool {
        self.run.as_ref().is_none_or(|run| run.is_finished())
    }

    /// Waits (at most `limit`) for `run()` to return and gives its result. Does not itself
    /// start shutdown: call `shutdown_handle().shutdown()` first.
    pub async fn wait_stopped(&mut self, limit: Duration) -> Result<(), StartError> {
        let run = self.run.take().expect("run() result already taken");
        within(limit, "Gateway::run to return", run)
            .await
            .expect("gateway task panicked")
    }

    /// The config file text, for failure messages.
    pub fn config_text(&self) -> &str {
        &self.prepared.text
    }

    /// The config file the gateway was started from (a reload reads it again).
    pub fn config_path(&self) -> &std::path::Path {
        &self.prepared.path
    }
}

impl Deref for TestGateway {
    type Target = GatewayAddrs;

    fn deref(&self) -> &GatewayAddrs {
        &self.addrs
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }
}
