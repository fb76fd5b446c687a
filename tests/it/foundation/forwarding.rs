//! What the upstream receives and what comes back: end-to-end parts preserved, hop-by-hop
//! headers removed both ways (RFC 9110 section 7.6.1), forwarding headers set by the gateway
//! alone unless the peer is a trusted proxy (SECURITY.md rules 4 and 6), pooled upstream
//! connections.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::Method;

use crate::kit::{quoted, secs, within, Echo, GatewayConfig, HttpVersion, TestGateway, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_query_body_and_headers_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = gw.client_builder().version(version).build();
        let response = client
            .post(gw.url("/echo/path?x=1&y=%20z&x=2"))
            .header("x-custom", "one")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(vec![7u8; 1234])
            .send()
            .await
            .expect("POST through the gateway");
        let echo = Echo::from_response(response).await;
        assert_eq!(echo.method(), "POST", "{version:?}");
        assert_eq!(echo.path(), "/echo/path", "{version:?}");
        assert_eq!(echo.query(), Some("x=1&y=%20z&x=2"), "{version:?}");
        assert_eq!(echo.body_len(), 1234, "{version:?}");
        assert_eq!(echo.header("x-custom"), ["one"], "{version:?}");
        assert_eq!(echo.header_joined("x-multi"), "a, b", "{version:?}");

        for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let response = client
                .request(method.clone(), gw.url("/m"))
                .send()
                .await
                .expect("request");
            assert_eq!(
                Echo::from_response(response).await.method(),
                method.as_str(),
                "{version:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed_but_our_own_headers_survive() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let mut conn = gw.raw().await;

    // Connection names a private header *and* X-Forwarded-For: the first must go, the
    // gateway's own X-Forwarded-For must still arrive (the Apache/Traefik trap).
    let request = format!(
        "GET /hop HTTP/1.1\r\n\
         Host: {}\r\n\
         Connection: keep-alive, X-Secret, X-Forwarded-For\r\n\
         X-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: gzip\r\n\
         X-End-To-End: kept\r\n\r\n",
        gw.host_header()
    );
    let echo = within(secs(5), "response", conn.roundtrip(request))
        .await
        .expect("response")
        .echo();

    for hop in ["x-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(
            !echo.has_header(hop),
            "upstream received hop-by-hop header {hop}: {:?}",
            echo.header(hop)
        );
    }
    let connection = echo.header_joined("connection").to_ascii_lowercase();
    assert!(
        !connection.contains("x-secret") && !connection.contains("x-forwarded-for"),
        "upstream received the client's Connection header: {connection:?}"
    );
    assert_eq!(echo.header("x-end-to-end"), ["kept"]);
    assert_eq!(echo.header("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let response = gw.client().get(gw.url("/resp-headers")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    for hop in ["x-hop-resp", "keep-alive", "proxy-connection"] {
        assert!(
            !headers.contains_key(hop),
            "client received hop-by-hop response header {hop}: {:?}",
            headers.get(hop)
        );
    }
    let connection: Vec<String> = headers
        .get_all("connection")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .collect();
    assert!(
        !connection.iter().any(|v| v.contains("x-hop-resp")),
        "client received the upstream's Connection header: {connection:?}"
    );
    assert_eq!(
        headers.get("x-end-to-end").map(|v| v.as_bytes()),
        Some(b"kept".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sets_the_forwarding_headers() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = gw.client_builder().version(version).build();
        let response = client.get(gw.url("/fwd")).send().await.expect("request");
        let echo = Echo::from_response(response).await;
        assert_eq!(echo.header("x-forwarded-for"), ["127.0.0.1"], "{version:?}");
        assert_eq!(echo.header("x-forwarded-proto"), ["https"], "{version:?}");
        let forwarded_host = echo.header("x-forwarded-host");
        assert!(
            forwarded_host == [gw.host_header()] || forwarded_host == ["localhost"],
            "{version:?}: X-Forwarded-Host {forwarded_host:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_forwarding_headers_are_not_trusted_by_default() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let response = gw
        .client()
        .get(gw.url("/spoof"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "for=203.0.113.7;host=evil.test;proto=http")
        .header("x-real-ip", "203.0.113.7")
        // Spellings that frameworks fold into the same names (SECURITY.md rule 3).
        .header("x_forwarded_for", "203.0.113.8")
        .header("x.forwarded.host", "evil.test")
        .header("X_Forwarded_Proto", "http")
        .header("x_real_ip", "203.0.113.8")
        .header("true_client_ip", "203.0.113.8")
        // Path overrides that Symfony, Zend and IIS's URL Rewrite serve instead of the path.
        .header("x-original-url", "/admin")
        .header("X-Rewrite-URL", "/admin")
        .header("x_original_uri", "/admin")
        // Host overrides that some frameworks read instead of Host (password-reset links).
        .header("x-host", "evil.test")
        .header("X_HTTP_Host_Override", "evil.test")
        .send()
        .await
        .expect("request");
    let echo = Echo::from_response(response).await;

    assert_eq!(echo.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo.header("x-forwarded-proto"), ["https"]);
    assert!(
        !echo.header_joined("x-forwarded-host").contains("evil.test"),
        "X-Forwarded-Host {:?}",
        echo.header("x-forwarded-host")
    );
    let forwarded = echo.header_joined("forwarded");
    assert!(
        !forwarded.contains("203.0.113.7") && !forwarded.contains("evil.test"),
        "client's Forwarded header reached the upstream: {forwarded:?}"
    );
    assert!(
        !echo.header_joined("x-real-ip").contains("203.0.113.7"),
        "client's X-Real-IP reached the upstream: {:?}",
        echo.header("x-real-ip")
    );
    for name in [
        "x_forwarded_for",
        "x.forwarded.host",
        "x_forwarded_proto",
        "x_real_ip",
        "true_client_ip",
        "x-original-url",
        "x-rewrite-url",
        "x_original_uri",
        "x-host",
        "x_http_host_override",
    ] {
        assert!(
            !echo.has_header(name),
            "client's {name} reached the upstream: {:?}",
            echo.header(name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_yields_the_rightmost_untrusted_address() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream).server("trusted_proxies", format!("[{}]", quoted("127.0.0.0/8"))),
    )
    .await;

    let response = gw
        .client()
        .get(gw.url("/via-proxy"))
        .header("x-forwarded-for", "198.51.100.7, 127.0.0.9")
        .send()
        .await
        .expect("request");
    let xff = Echo::from_response(response).await.header_joined("x-forwarded-for");
    assert!(
        xff.contains("198.51.100.7"),
        "X-Forwarded-For from a trusted proxy lost the client: {xff:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_trusted_only_from_configured_proxy_addresses() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream).server("trusted_proxies", format!("[{}]", quoted("127.0.0.2/32"))),
    )
    .await;
    let proxy = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    let from_proxy = gw
        .client_builder()
        .local_address(proxy)
        .build()
        .get(gw.url("/trusted"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .expect("request from the trusted proxy");
    let xff = Echo::from_response(from_proxy).await.header_joined("x-forwarded-for");
    assert!(
        xff.contains("198.51.100.7"),
        "trusted proxy's X-Forwarded-For was dropped: {xff:?}"
    );

    let from_stranger = gw
        .client_builder()
        .local_address(stranger)
        .build()
        .get(gw.url("/untrusted"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .expect("request from an untrusted peer");
    assert_eq!(
        Echo::from_response(from_stranger).await.header("x-forwarded-for"),
        ["127.0.0.3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_across_client_connections() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    for i in 0..20 {
        // A new client (so a new downstream connection) every time.
        let response = gw
            .client()
            .get(gw.url(&format!("/pooled/{i}")))
            .send()
            .await
            .expect("request");
        Echo::from_response(response).await;
    }
    assert_eq!(upstream.request_count(), 20);
    assert!(
        upstream.accepts() <= 3,
        "20 sequential requests opened {} upstream connections",
        upstream.accepts()
    );
}
