//! Upstream failures are the upstream's fault: 502 when it cannot be reached, 504 when it is
//! too slow, and neither answer tells the client where the upstream lives.

use std::time::Instant;

use crate::kit::{
    binary::log_field_text, closed_port, get_request, millis, secs, BinaryGateway, GatewayAddrs, GatewayConfig,
    RouteSpec, TestGateway, TestUpstream,
};

/// Fails the test if an error page reveals the upstream's address or port.
fn assert_no_upstream_details(body: &str, port: u16) {
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&port.to_string()),
        "error body leaks the upstream address: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_without_details() {
    let port = closed_port();
    let gw =
        TestGateway::start(GatewayConfig::new().route(RouteSpec::new("/", format!("http://127.0.0.1:{port}")))).await;

    let response = gw.client().get(gw.url("/x")).send().await.expect("request");
    assert_eq!(response.status(), 502);
    let body = response.text().await.expect("body");
    assert_no_upstream_details(&body, port);
}

/// A host name that does not resolve (`.invalid` never does, RFC 6761) is an unreachable
/// upstream too: 502 within `upstream_connect_timeout`, however the machine's resolver fails
/// (at once, or by not answering), never the 504 of `upstream_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_that_does_not_resolve_is_502_within_the_connect_timeout() {
    let gw = TestGateway::start(
        GatewayConfig::new()
            .server_str("upstream_connect_timeout", "500ms")
            .server_str("upstream_timeout", "20s")
            .route(RouteSpec::new("/", "http://no-such-upstream.invalid:8080")),
    )
    .await;

    let started = Instant::now();
    let response = gw.client().get(gw.url("/x")).send().await.expect("request");
    assert_eq!(response.status(), 502);
    assert!(started.elapsed() < secs(10), "took {:?}", started.elapsed());
    let body = response.text().await.expect("body");
    assert!(
        !body.contains("no-such-upstream"),
        "error body names the upstream: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_upstream_timeout_without_details() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server_str("upstream_timeout", "300ms")).await;

    let started = Instant::now();
    let response = gw.client().get(gw.url("/delay/2000")).send().await.expect("request");
    let waited = started.elapsed();

    assert_eq!(response.status(), 504);
    assert!(
        waited < millis(1500),
        "504 took {waited:?}, the upstream_timeout is 300ms"
    );
    let body = response.text().await.expect("body");
    assert_no_upstream_details(&body, upstream.addr().port());
}

/// The requests of one kept-alive connection share one upstream timer: each must get the
/// whole `upstream_timeout` from its own start, neither what the one before it left nor a
/// deadline already past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_kept_alive_connection_gets_the_whole_upstream_timeout() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server_str("upstream_timeout", "600ms")).await;
    let host = gw.host_header();
    let mut conn = gw.raw().await;
    // 350 ms each: inside the timeout counted from its own start, past it counted from the
    // first request's.
    for n in 1..=2 {
        let response = conn
            .roundtrip(get_request("/delay/350", &host))
            .await
            .expect("response");
        assert_eq!(response.status, 200, "request {n} within the timeout");
    }
    // Timeouts in a row: the second waits its whole timeout again, not the expired one.
    for n in 1..=2 {
        let started = Instant::now();
        let response = conn
            .roundtrip(get_request("/delay/5000", &host))
            .await
            .expect("response");
        let waited = started.elapsed();
        assert_eq!(response.status, 504, "slow request {n}");
        assert!(
            waited >= millis(550) && waited < millis(3000),
            "slow request {n}: 504 after {waited:?}, the upstream_timeout is 600ms"
        );
    }
    let response = conn
        .roundtrip(get_request("/delay/350", &host))
        .await
        .expect("response");
    assert_eq!(response.status, 200, "a request within the timeout after two timeouts");
}

/// HTTP/2 streams of one connection overlap: a stream that finds the connection's upstream
/// timer in use makes its own, and neither cuts the other's request short or lets it run long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http2_streams_each_get_their_own_upstream_timeout() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server_str("upstream_timeout", "600ms")).await;
    let client = gw.client_h2();
    let timed = |path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move {
            let started = Instant::now();
            let response = client.get(url).send().await.expect("request");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            (response.status().as_u16(), started.elapsed())
        }
    };
    let (slow, fast, slow_again) = tokio::join!(timed("/delay/5000"), timed("/delay/350"), timed("/delay/5000"));
    assert_eq!(fast.0, 200, "a stream within the timeout, beside two slow ones");
    for (n, (status, waited)) in [slow, slow_again].into_iter().enumerate() {
        assert_eq!(status, 504, "slow stream {n}");
        assert!(
            waited >= millis(550) && waited < millis(3000),
            "slow stream {n}: 504 after {waited:?}, the upstream_timeout is 600ms"
        );
    }
    // The connection's timer, back in its slot, serves the next stream with a fresh deadline.
    let (status, _) = timed("/delay/350").await;
    assert_eq!(status, 200, "a stream within the timeout after the timeouts");
}

/// How many `X-Many-*` fields reached the client through the gateway.
async fn many_headers_through(gw: &GatewayAddrs, n: usize) -> (u16, usize) {
    let mut conn = gw.raw().await;
    let response = conn
        .roundtrip(get_request(&format!("/many-headers/{n}"), &gw.host_header()))
        .await
        .expect("response");
    let forwarded = response
        .headers
        .iter()
        .filter(|(name, _)| name.to_ascii_lowercase().starts_with("x-many-"))
        .count();
    (response.status, forwarded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_header_count_is_bounded_by_upstream_max_headers() {
    let upstream = TestUpstream::start().await;

    // The default (100, hyper's own) passes an ordinary response whole, and
    // answers one with more fields 502 without naming the upstream, but with
    // a log line that names the key to raise.
    let gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    assert_eq!(many_headers_through(&gw, 80).await, (200, 80));
    let mut conn = gw.raw().await;
    let refused = conn
        .roundtrip(get_request("/many-headers/150", &gw.host_header()))
        .await
        .expect("response");
    assert_eq!(refused.status, 502);
    assert_no_upstream_details(&refused.text(), upstream.addr().port());
    gw.wait_for_log(secs(5), |line| {
        log_field_text(line, "error").is_some_and(|e| e.contains("[server] upstream_max_headers"))
    })
    .await;

    // Raised, the same response reaches the client with every field.
    let raised = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("upstream_max_headers", "300")).await;
    assert_eq!(many_headers_through(&raised, 150).await, (200, 150));
    assert_eq!(many_headers_through(&raised, 80).await, (200, 80));
}
