//! The optional plain-HTTP listener: every request gets a 308 to the HTTPS origin and
//! nothing is ever proxied from it.

use tokio::net::TcpStream;

use crate::kit::{secs, within, GatewayConfig, RawConn, RawResponse, TestGateway, TestUpstream};

/// Sends `request` to the redirect listener over plain TCP and reads the answer.
async fn ask_redirect_listener(gw: &TestGateway, request: &str) -> RawResponse {
    let addr = gw.redirect.expect("redirect listener is bound");
    let tcp = TcpStream::connect(addr).await.expect("connect to redirect listener");
    let mut conn = RawConn::new(tcp);
    within(secs(5), "redirect response", conn.roundtrip(request))
        .await
        .expect("redirect response")
}

/// The part of `location` after `https://{host}` and an optional `:{https port}`.
fn path_after_origin<'a>(location: &'a str, host: &str, https_port: u16) -> &'a str {
    let rest = location
        .strip_prefix(&format!("https://{host}"))
        .unwrap_or_else(|| panic!("Location {location:?} is not https://{host}..."));
    rest.strip_prefix(&format!(":{https_port}")).unwrap_or(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_308_to_the_same_path_on_https() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).redirect_listener()).await;

    let response = ask_redirect_listener(
        &gw,
        "GET /a/b?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    )
    .await;

    assert_eq!(response.status, 308, "{}", response.text());
    let location = response.header("location").expect("Location header");
    assert_eq!(
        path_after_origin(location, "example.test", gw.https.port()),
        "/a/b?x=1",
        "Location {location:?}"
    );
    assert_eq!(upstream.request_count(), 0, "redirect listener proxied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_drops_the_plain_http_port_and_never_proxies_a_post() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).redirect_listener()).await;

    let response = ask_redirect_listener(
        &gw,
        "POST /form HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;

    assert_eq!(response.status, 308, "{}", response.text());
    let location = response.header("location").expect("Location header");
    assert!(
        !location.contains(":8080"),
        "Location {location:?} kept the plain-HTTP port"
    );
    assert_eq!(path_after_origin(location, "example.test", gw.https.port()), "/form");
    assert_eq!(upstream.request_count(), 0, "redirect listener proxied");
}
