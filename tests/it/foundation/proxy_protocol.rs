//! `[server] proxy_protocol_from`: a TCP load balancer's PROXY header (v1 and v2) names the
//! client, only from the listed peers, on both listeners. Loopback stands in for the network:
//! 127.0.0.2 is the balancer, 127.0.0.3 a client connecting directly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};
use tokio::io::AsyncWriteExt;

use crate::kit::{
    get_request, millis, quoted, secs, within, GatewayAddrs, GatewayConfig, RawConn, TestGateway, TestUpstream,
};

const BALANCER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn behind_balancer(upstream: &TestUpstream) -> GatewayConfig {
    GatewayConfig::proxy_all_to(upstream)
        .server("proxy_protocol_from", format!("[{}]", quoted("127.0.0.2/32")))
        .server("tls_handshake_timeout", quoted("2s"))
}

fn v2_header(command: Command, client: &str, gateway: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("client address");
    let gateway = match (client, gateway) {
        (SocketAddr::V6(_), SocketAddr::V4(g)) => SocketAddr::new(g.ip().to_ipv6_mapped().into(), g.port()),
        _ => gateway,
    };
    Builder::with_addresses(Version::Two | command, Protocol::Stream, (client, gateway))
        .build()
        .expect("v2 header")
}

/// The `X-Forwarded-For` the upstream saw for one request on a connection from `from`
/// that began with `preface`.
async fn forwarded_for(gw: &GatewayAddrs, from: IpAddr, preface: &[u8]) -> String {
    let mut conn = gw
        .raw_via(from, preface)
        .await
        .expect("connection through the balancer");
    let response = within(
        secs(5),
        "response",
        conn.roundtrip(get_request("/who", &gw.host_header())),
    )
    .await
    .expect("response");
    response.echo().header_joined("x-forwarded-for")
}

async fn proxy_protocol_errors(gw: &GatewayAddrs) -> Option<f64> {
    gw.metric("sessiongate_proxy_protocol_errors_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_header_from_the_balancer_names_the_client() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(behind_balancer(&upstream)).await;

    let line = format!("PROXY TCP4 203.0.113.7 127.0.0.1 51000 {}\r\n", gw.https.port());
    assert_eq!(forwarded_for(&gw, BALANCER, line.as_bytes()).await, "203.0.113.7");
    let six = format!("PROXY TCP6 2001:db8::7 ::1 51000 {}\r\n", gw.https.port());
    assert_eq!(forwarded_for(&gw, BALANCER, six.as_bytes()).await, "2001:db8::7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_header_names_the_client_and_local_means_the_balancer_itself() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(behind_balancer(&upstream)).await;

    let v4 = v2_header(Command::Proxy, "198.51.100.9:40000", gw.https);
    assert_eq!(forwarded_for(&gw, BALANCER, &v4).await, "198.51.100.9");
    let v6 = v2_header(Command::Proxy, "[2001:db8::9]:40000", gw.https);
    assert_eq!(forwarded_for(&gw, BALANCER, &v6).await, "2001:db8::9");
    // LOCAL: the balancer's own connection (a health check that speaks TLS).
    let local = v2_header(Command::Local, "198.51.100.9:40000", gw.https);
    assert_eq!(forwarded_for(&gw, BALANCER, &local).await, "127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_in_pieces_is_read_to_its_end_and_no_further() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(behind_balancer(&upstream)).await;
    let header = v2_header(Command::Proxy, "198.51.100.10:40000", gw.https);

    let mut tcp = GatewayAddrs::tcp_from(BALANCER, gw.https).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (first, rest) = header.split_at(10);
    tcp.write_all(first).await.expect("first piece");
    tcp.flush().await.expect("flush");
    tokio::task::yield_now().await;
    tcp.write_all(rest).await.expect("rest");
    let tls = within(
        secs(5),
        "TLS after a split header",
        crate::kit::client::tls_handshake(tcp, &gw.cert, crate::kit::ALPN_H1),
    )
    .await
    .expect("TLS handshake after the header");
    let mut conn = RawConn::new(tls);
    let response = conn
        .roundtrip(get_request("/who", &gw.host_header()))
        .await
        .expect("response");
    assert_eq!(response.echo().header_joined("x-forwarded-for"), "198.51.100.10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_must_send_a_header_and_nobody_else_may() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(behind_balancer(&upstream)).await;

    // The balancer without a header: its TLS ClientHello is not a PROXY header.
    let bare = gw.raw_via(BALANCER, b"").await;
    assert!(bare.is_err(), "a listed balancer was served without a PROXY header");
    assert_eq!(proxy_protocol_errors(&gw).await, Some(1.0));

    // A direct client typing a header is not believed: the header is no TLS.
    let line = format!("PROXY TCP4 203.0.113.7 127.0.0.1 51000 {}\r\n", gw.https.port());
    let forged = gw.raw_via(STRANGER, line.as_bytes()).await;
    assert!(forged.is_err(), "a PROXY header from an unlisted peer was accepted");
    // Without one it is served as itself.
    assert_eq!(forwarded_for(&gw, STRANGER, b"").await, "127.0.0.3");
    assert_eq!(
        upstream.request_count(),
        1,
        "only the direct client's request went through"
    );

    // Garbage from the balancer is refused and counted.
    let garbage = gw.raw_via(BALANCER, b"PROXY TCP4 nonsense\r\n").await;
    assert!(garbage.is_err(), "a malformed PROXY header was accepted");
    assert_eq!(proxy_protocol_errors(&gw).await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_that_sends_nothing_is_cut_at_the_handshake_timeout() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream)
            .server("proxy_protocol_from", format!("[{}]", quoted("127.0.0.2")))
            .server("tls_handshake_timeout", quoted("200ms")),
    )
    .await;

    let tcp = GatewayAddrs::tcp_from(BALANCER, gw.https).await.expect("connect");
    let mut conn = RawConn::new(tcp);
    let rest = within(secs(5), "connection cut", conn.read_until_closed()).await;
    assert!(rest.is_empty(), "the gateway answered a connection without a header");
    assert_eq!(proxy_protocol_errors(&gw).await, Some(1.0));
    // A health check that connects and closes at once is no error.
    drop(GatewayAddrs::tcp_from(BALANCER, gw.https).await.expect("connect"));
    within(secs(5), "the health check's connection to end", async {
        while gw.metric("sessiongate_open_connections").await != Some(0.0) {
            tokio::time::sleep(millis(10)).await;
        }
    })
    .await;
    assert_eq!(proxy_protocol_errors(&gw).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_reads_the_balancers_header_too() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(behind_balancer(&upstream).redirect_listener()).await;
    let addr = gw.redirect.expect("redirect listener");

    let mut tcp = GatewayAddrs::tcp_from(BALANCER, addr).await.expect("connect");
    tcp.write_all(format!("PROXY TCP4 203.0.113.7 127.0.0.1 51000 {}\r\n", addr.port()).as_bytes())
        .await
        .expect("header");
    let mut conn = RawConn::new(tcp);
    let response = within(
        secs(5),
        "redirect",
        conn.roundtrip("GET /a HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"),
    )
    .await
    .expect("redirect response");
    assert_eq!(response.status, 308, "{}", response.text());

    // Without the header, the balancer's request is not answered.
    let tcp = GatewayAddrs::tcp_from(BALANCER, addr).await.expect("connect");
    let mut conn = RawConn::new(tcp);
    let answer = within(
        secs(15),
        "refusal",
        conn.roundtrip("GET /a HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        answer.is_err(),
        "redirect listener answered a balancer without a header: {answer:?}"
    );
}

#[test]
fn a_bad_address_in_proxy_protocol_from_is_named() {
    let prepared = GatewayConfig::new()
        .server("proxy_protocol_from", format!("[{}]", quoted("10.0.0.0/40")))
        .prepare();
    let out = crate::kit::run_cli(["check", "--config", prepared.path.to_str().expect("utf-8 path")]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("server.proxy_protocol_from"), "{}", out.stderr);
    assert!(out.stderr.contains("10.0.0.0/40"), "{}", out.stderr);
}

/// Set to `1` (CI does) to make a missing `haproxy` a failure instead of a skip.
const REQUIRE_HAPROXY: &str = "SESSIONGATE_REQUIRE_HAPROXY";

/// A real balancer: `haproxy` in TCP mode on a free port, relaying to `to` with
/// `send-proxy-v2`; killed on drop. `None` (after saying why) when haproxy is not installed.
struct Haproxy {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    async fn start(to: SocketAddr) -> Option<Haproxy> {
        let installed = std::process::Command::new("haproxy")
            .arg("-v")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var(REQUIRE_HAPROXY).is_ok_and(|v| v == "1") {
                panic!("{REQUIRE_HAPROXY}=1 but haproxy is not on PATH (Debian: apt-get install haproxy)");
            }
            eprintln!("skipping: haproxy not installed");
            return None;
        }
        // A freshly picked port can be taken before haproxy binds it: then
        // it exits, and another port is tried.
        for _ in 0..5 {
            if let Some(proxy) = Self::spawn(to).await {
                return Some(proxy);
            }
        }
        panic!("haproxy did not start on any of five free ports");
    }

    async fn spawn(to: SocketAddr) -> Option<Haproxy> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
                 frontend f\n  bind {addr}\n  default_backend gw\n\
                 backend gw\n  server gw {to} send-proxy-v2\n"
            ),
        )
        .expect("write haproxy.cfg");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy");
        let mut proxy = Haproxy { child, addr, _dir: dir };
        let listening = within(secs(10), "haproxy to listen or exit", async {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return true;
                }
                if matches!(proxy.child.try_wait(), Ok(Some(_))) {
                    return false;
                }
                tokio::time::sleep(millis(10)).await;
            }
        })
        .await;
        listening.then_some(proxy)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_send_proxy_v2_the_upstream_is_told_the_real_client() {
    let upstream = TestUpstream::start().await;
    // haproxy connects from 127.0.0.1.
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream).server("proxy_protocol_from", format!("[{}]", quoted("127.0.0.1"))),
    )
    .await;
    let Some(haproxy) = Haproxy::start(gw.https).await else {
        return;
    };

    for version in [crate::kit::HttpVersion::Http1, crate::kit::HttpVersion::Http2] {
        let client = crate::kit::client::ClientBuilder::new(&gw.cert, haproxy.addr)
            .version(version)
            .local_address(IpAddr::from([127, 0, 0, 9]))
            .build();
        let response = client
            .get(format!("https://localhost:{}/who", haproxy.addr.port()))
            .send()
            .await
            .expect("request through haproxy");
        let echo = crate::kit::Echo::from_response(response).await;
        assert_eq!(echo.header_joined("x-forwarded-for"), "127.0.0.9", "{version:?}");
    }
    assert_eq!(proxy_protocol_errors(&gw).await, Some(0.0));
}
