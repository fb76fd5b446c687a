//! Clickjacking protection: the route's `framing` policy is added as `X-Frame-Options` to an
//! upstream response that states none (neither that nor a CSP `frame-ancestors`), and an
//! upstream's own policy passes untouched.

use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};

use crate::kit::{quoted, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

fn values(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ASCII header").to_owned())
        .collect()
}

/// Routes `/` (default), `/deny/` and `/allow/`, all to `upstream`.
async fn gateway(upstream: &TestUpstream) -> TestGateway {
    let config = GatewayConfig::new()
        .route(RouteSpec::new("/", upstream.url()))
        .route(RouteSpec::new("/deny/", upstream.url()).set("framing", quoted("deny")))
        .route(RouteSpec::new("/allow/", upstream.url()).set("framing", quoted("allow")));
    TestGateway::start(config).await
}

async fn headers_of(gw: &TestGateway, path: &str) -> HeaderMap {
    let resp = gw.client().get(gw.url(path)).send().await.expect("request");
    assert_eq!(resp.status(), 200, "{path}");
    resp.headers().clone()
}

#[tokio::test]
async fn pages_without_a_policy_get_the_routes_framing() {
    let upstream = TestUpstream::start().await;
    let gw = gateway(&upstream).await;

    let h = headers_of(&gw, "/page").await;
    assert_eq!(values(&h, X_FRAME_OPTIONS), ["SAMEORIGIN"]);
    assert!(values(&h, CONTENT_SECURITY_POLICY).is_empty(), "{h:?}");

    let h = headers_of(&gw, "/deny/page").await;
    assert_eq!(values(&h, X_FRAME_OPTIONS), ["DENY"]);

    let h = headers_of(&gw, "/allow/page").await;
    assert!(values(&h, X_FRAME_OPTIONS).is_empty(), "{h:?}");
    assert!(values(&h, CONTENT_SECURITY_POLICY).is_empty(), "{h:?}");

    // Over HTTP/2 as well.
    let resp = gw.client_h2().get(gw.url("/page")).send().await.expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(values(resp.headers(), X_FRAME_OPTIONS), ["SAMEORIGIN"]);
}

#[tokio::test]
async fn the_upstreams_own_policy_passes_untouched() {
    let upstream = TestUpstream::start().await;
    let gw = gateway(&upstream).await;

    // A page meant to be embedded by a portal says so; even a `deny` route leaves it.
    let h = headers_of(
        &gw,
        "/deny/with-headers?content-security-policy=frame-ancestors+https%3A%2F%2Fportal.example",
    )
    .await;
    assert_eq!(
        values(&h, CONTENT_SECURITY_POLICY),
        ["frame-ancestors https://portal.example"]
    );
    assert!(values(&h, X_FRAME_OPTIONS).is_empty(), "{h:?}");

    let h = headers_of(&gw, "/with-headers?x-frame-options=DENY").await;
    assert_eq!(values(&h, X_FRAME_OPTIONS), ["DENY"]);
    assert!(values(&h, CONTENT_SECURITY_POLICY).is_empty(), "{h:?}");

    // A policy about other things is no framing policy: the route's is added beside it.
    let h = headers_of(&gw, "/with-headers?content-security-policy=default-src+%27self%27").await;
    assert_eq!(values(&h, CONTENT_SECURITY_POLICY), ["default-src 'self'"]);
    assert_eq!(values(&h, X_FRAME_OPTIONS), ["SAMEORIGIN"]);
}
