//! Graceful shutdown: in-flight requests finish, listeners close, the process exits 0.

use tokio::net::TcpStream;

use crate::kit::{secs, within, BinaryGateway, Echo, GatewayConfig, TestGateway, TestUpstream, SLOW_BODY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_response_finish_and_exits_zero() {
    let upstream = TestUpstream::start().await;
    let mut gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let https = gw.https;

    // Headers arrive at once; the body only after 1.5 s, so the request is in flight.
    let response = within(
        secs(5),
        "response headers",
        gw.client().get(gw.url("/slow-body/1500")).send(),
    )
    .await
    .expect("slow request");
    assert_eq!(response.status(), 200);
    gw.signal("TERM");

    let body = within(secs(10), "the in-flight body", response.bytes())
        .await
        .expect("in-flight body completes after SIGTERM");
    assert_eq!(&body[..], SLOW_BODY);

    let status = gw.wait_exit(secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    assert!(
        TcpStream::connect(https).await.is_err(),
        "HTTPS port still accepts connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_on_an_idle_gateway_exits_zero() {
    let upstream = TestUpstream::start().await;
    let mut gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let response = gw.client().get(gw.url("/")).send().await.expect("request");
    Echo::from_response(response).await;

    gw.signal("INT");
    let status = gw.wait_exit(secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_handle_drains_in_flight_requests_and_run_returns() {
    let upstream = TestUpstream::start().await;
    let mut gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let https = gw.https;

    let response = within(
        secs(5),
        "response headers",
        gw.client().get(gw.url("/slow-body/1500")).send(),
    )
    .await
    .expect("slow request");
    gw.shutdown_handle().shutdown();

    let body = within(secs(10), "the in-flight body", response.bytes())
        .await
        .expect("in-flight body completes after shutdown()");
    assert_eq!(&body[..], SLOW_BODY);

    gw.wait_stopped(secs(10))
        .await
        .expect("run() returns Ok after a graceful shutdown");
    assert!(
        TcpStream::connect(https).await.is_err(),
        "HTTPS port still accepts connections after run() returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_handle_stops_an_idle_gateway_promptly() {
    let upstream = TestUpstream::start().await;
    let mut gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    // A kept-alive idle connection must not hold shutdown up for the whole grace period.
    let mut idle = gw.raw().await;
    let response = within(
        secs(5),
        "response",
        idle.roundtrip(crate::kit::raw::get_request("/", &gw.host_header())),
    )
    .await
    .expect("response");
    assert_eq!(response.status, 200);

    gw.shutdown_handle().shutdown();
    gw.wait_stopped(secs(5))
        .await
        .expect("run() returns Ok after shutdown()");
}
