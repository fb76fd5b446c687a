//! `Strict-Transport-Security`: on every response of the HTTPS listener by default (proxied,
//! the gateway's own pages and errors), replacing an upstream's; configurable under `[tls]`.

use crate::kit::{
    quoted, run_cli, upstream::UPSTREAM_HSTS, GatewayConfig, HttpVersion, RouteSpec, TestGateway, TestUpstream,
};

const ONE_YEAR: &str = "max-age=31536000";

fn hsts(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("strict-transport-security")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A site with a proxied route, a login-required route (the gateway's own 401 and login
/// page) and the upstream's own HSTS on `/resp-headers`.
fn site(upstream: &TestUpstream) -> GatewayConfig {
    GatewayConfig::new()
        .route(RouteSpec::new("/", upstream.url()))
        .route(RouteSpec::new("/app/", upstream.url()).set("auth", quoted("required")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_https_response_promises_a_year_by_default() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(site(&upstream)).await;

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = gw.client_builder().version(version).build();
        for (path, status) in [
            ("/page", 200),
            // The upstream's own value is replaced, not doubled.
            ("/resp-headers", 200),
            ("/app/x", 401),
            ("/.sessiongate/login", 200),
            ("/a%00b", 400),
        ] {
            let response = client.get(gw.url(path)).send().await.expect("request");
            assert_eq!(response.status(), status, "{path} {version:?}");
            assert_eq!(hsts(&response), [ONE_YEAR], "{path} {version:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subdomains_and_preload_are_added_when_asked_for() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        site(&upstream)
            .tls("hsts_max_age", quoted("730d"))
            .tls("hsts_include_subdomains", "true")
            .tls("hsts_preload", "true"),
    )
    .await;
    let response = gw.client().get(gw.url("/page")).send().await.expect("request");
    assert_eq!(hsts(&response), ["max-age=63072000; includeSubDomains; preload"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hsts_off_the_upstreams_own_value_passes_through() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(site(&upstream).tls("hsts", "false")).await;
    let own = gw.client().get(gw.url("/resp-headers")).send().await.expect("request");
    assert_eq!(hsts(&own), [UPSTREAM_HSTS]);
    let none = gw.client().get(gw.url("/page")).send().await.expect("request");
    assert!(hsts(&none).is_empty(), "{:?}", hsts(&none));
}

#[test]
fn preload_without_its_requirements_is_refused_at_start() {
    let preload = GatewayConfig::new().tls("hsts_preload", "true");
    for (what, config) in [
        ("without subdomains", preload.clone()),
        (
            "for 30 days",
            preload
                .tls("hsts_include_subdomains", "true")
                .tls("hsts_max_age", quoted("30d")),
        ),
    ] {
        let tls = what;
        let prepared = config.prepare();
        let out = run_cli(["check", "--config", prepared.path.to_str().expect("utf-8 path")]);
        assert_eq!(out.code(), Some(2), "{tls}: {out:?}");
        assert!(out.stderr.contains("tls.hsts_preload"), "{}", out.stderr);
    }
}
