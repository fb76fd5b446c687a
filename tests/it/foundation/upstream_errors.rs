//! Upstream failures are the upstream's fault: 502 when it cannot be reached, 504 when it is
//! too slow, and neither answer tells the client where the upstream lives.

use std::time::Instant;

use crate::kit::{closed_port, millis, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

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
