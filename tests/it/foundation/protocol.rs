//! TLS termination and HTTP versions: HTTP/1.1 and HTTP/2 on one port chosen by ALPN,
//! HTTP/1.0 keep-alive, and what happens to plaintext sent to the TLS port.

use reqwest::Version;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::kit::{secs, within, Echo, GatewayConfig, RawConn, TestGateway, TestUpstream, ALPN_H1, ALPN_H2, ALPN_H2_H1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_are_served_on_the_same_port() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let h1 = gw
        .client()
        .get(gw.url("/over/h1"))
        .send()
        .await
        .expect("HTTP/1.1 request");
    assert_eq!(h1.version(), Version::HTTP_11);
    assert_eq!(Echo::from_response(h1).await.path(), "/over/h1");

    let h2 = gw
        .client_h2()
        .get(gw.url("/over/h2"))
        .send()
        .await
        .expect("HTTP/2 request");
    assert_eq!(h2.version(), Version::HTTP_2);
    assert_eq!(Echo::from_response(h2).await.path(), "/over/h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_prefers_h2_and_accepts_http1_only_clients() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    for (offer, expected) in [
        (ALPN_H2_H1, b"h2".as_slice()),
        (ALPN_H2, b"h2".as_slice()),
        (ALPN_H1, b"http/1.1".as_slice()),
    ] {
        let tls = within(secs(5), "TLS handshake", gw.tls_connect(offer))
            .await
            .expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(expected),
            "ALPN result for offer {offer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_answers_two_requests_on_one_connection() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    // Old clients send no ALPN at all: the gateway must fall back to HTTP/1.x.
    let mut conn = gw.raw_with_alpn(&[]).await;

    for round in 1..=2 {
        let response = within(
            secs(5),
            "HTTP/1.0 response",
            conn.roundtrip("GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        )
        .await
        .unwrap_or_else(|e| panic!("request {round} on the kept-alive connection: {e}"));
        assert_eq!(response.echo().path(), "/ten", "request {round}");
    }
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_sent_to_the_tls_port_is_closed() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let mut tcp = TcpStream::connect(gw.https).await.expect("TCP connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send plaintext request");
    let mut conn = RawConn::new(tcp);
    let received = within(
        secs(5),
        "gateway closing a plaintext connection",
        conn.read_until_closed(),
    )
    .await;

    assert!(
        !received.starts_with(b"HTTP/1.1 2") && !received.starts_with(b"HTTP/1.0 2"),
        "plaintext request was answered with success: {}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(upstream.request_count(), 0, "plaintext request reached the upstream");
}
