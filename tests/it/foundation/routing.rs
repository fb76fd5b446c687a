//! Route choice (longest prefix, host-specific first, 404 when nothing matches) and the one
//! normalised path that is both routed and forwarded (SECURITY.md rule 5).
//!
//! Paths go over raw TLS: reqwest would normalise them before the gateway ever saw them.

use crate::kit::{
    raw::get_request, secs, within, Echo, GatewayAddrs, GatewayConfig, RawResponse, RouteSpec, TestGateway,
    TestUpstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_and_host_specific_routes_win() {
    let root = TestUpstream::named("root").await;
    let api = TestUpstream::named("api").await;
    let v2 = TestUpstream::named("v2").await;
    let on_host = TestUpstream::named("on-host").await;
    // Least specific first, so that file order cannot be what picks the route.
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::new("/", root.url()))
            .route(RouteSpec::new("/api/", api.url()))
            .route(RouteSpec::new("/api/v2/", v2.url()))
            .route(RouteSpec::new("/api/", on_host.url()).host("example.test")),
    )
    .await;
    let client = gw.client();

    for (host, path, expected) in [
        ("localhost", "/x", "root"),
        ("localhost", "/api/x", "api"),
        ("localhost", "/api/v2/x", "v2"),
        ("example.test", "/api/x", "on-host"),
        ("example.test", "/x", "root"),
    ] {
        let response = client.get(gw.url_for_host(host, path)).send().await.expect("request");
        let echo = Echo::from_response(response).await;
        assert_eq!(echo.upstream(), expected, "route for {host}{path}");
        assert_eq!(echo.path(), path, "forwarded path for {host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404_and_reaches_no_upstream() {
    let api = TestUpstream::named("api").await;
    let on_host = TestUpstream::named("on-host").await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::new("/api/", api.url()))
            .route(RouteSpec::new("/", on_host.url()).host("example.test")),
    )
    .await;
    let client = gw.client();

    let response = client.get(gw.url("/elsewhere")).send().await.expect("request");
    assert_eq!(response.status(), 404);
    assert_eq!(api.request_count() + on_host.request_count(), 0);
    assert_refused(&gw, "no_route", 1).await;

    // The host-specific catch-all still serves its own host.
    let response = client
        .get(gw.url_for_host("example.test", "/elsewhere"))
        .send()
        .await
        .expect("request");
    assert_eq!(Echo::from_response(response).await.upstream(), "on-host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_resolved_before_routing_and_forwarding() {
    let root = TestUpstream::named("root").await;
    let a = TestUpstream::named("a").await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::new("/", root.url()))
            .route(RouteSpec::new("/a/", a.url())),
    )
    .await;
    let host = gw.host_header();
    let mut conn = gw.raw().await;

    for (target, upstream, path, query) in [
        ("/a/./b", "a", "/a/b", None),
        ("/a/x/../b", "a", "/a/b", None),
        // Routed on the normalised path, not on the raw `/x/...` prefix.
        ("/x/../a/b", "a", "/a/b", None),
        ("/a/./b?q=1&r=%2e%2e/../x", "a", "/a/b", Some("q=1&r=%2e%2e/../x")),
    ] {
        let response = within(secs(5), "response", conn.roundtrip(get_request(target, &host)))
            .await
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        let echo = response.echo();
        assert_eq!(echo.upstream(), upstream, "route for {target}");
        assert_eq!(echo.path(), path, "forwarded path for {target}");
        assert_eq!(echo.query(), query, "forwarded query for {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_cannot_be_normalised_safely_are_400() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    assert_each_is_400(
        &gw,
        &[
            "/../etc/passwd",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/a/%2f..%2f..",
            "/a/%2F..%2F..",
            "/a%00b",
            "/a/%5c..%5cb",
            "/a%5Cb",
        ],
    )
    .await;
    assert_refused(&gw, "unsafe_path", 8).await;
    assert_eq!(
        upstream.targets(),
        Vec::<String>::new(),
        "unsafe paths reached the upstream"
    );
}

/// Each upstream reads a path its own way: Express and IIS ignore case, WSGI servers decode
/// `%2F`, servlet containers drop `;` parameters, IIS serving files drops the dots and spaces
/// that end a name (Windows does). A path whose route changes under any such
/// reading is refused, so that no upstream serves `/admin/...` that the gateway routed as
/// public; a path that every reading routes alike is forwarded exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_another_reading_routes_elsewhere_are_400() {
    let public = TestUpstream::named("public").await;
    let admin = TestUpstream::named("admin").await;
    let routes = |config: GatewayConfig| {
        config
            .route(RouteSpec::new("/", public.url()))
            .route(RouteSpec::new("/admin", admin.url()).set("auth", "\"required\""))
    };
    let gw = TestGateway::start(routes(GatewayConfig::new())).await;
    let host = gw.host_header();

    assert_each_is_400(
        &gw,
        &[
            "/ADMIN/keys",
            "/Admin",
            "/admin;jsessionid=1/keys",
            "/admin%3Bx/keys",
            "/admin%2Fkeys",
            "/x%2F..%2Fadmin/keys",
            "/ADMIN;x%2F..",
            "/admin./keys",
            "/admin%20/keys",
            "/x/..%20/admin/keys",
        ],
    )
    .await;
    assert_refused(&gw, "ambiguous_path", 10).await;
    assert_eq!(
        public.targets(),
        Vec::<String>::new(),
        "ambiguous paths reached the public upstream"
    );
    assert_eq!(admin.targets(), Vec::<String>::new());

    // Every reading routes these alike: forwarded untouched, parameters and escapes included.
    let mut conn = gw.raw().await;
    for target in ["/Docs/a%2Fb", "/cart;jsessionid=1", "/Shop;x/Cart", "/docs./x%20"] {
        let response = within(secs(5), "response", conn.roundtrip(get_request(target, &host)))
            .await
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(response.status, 200, "GET {target}: {}", response.text());
        assert_eq!(response.echo().path(), target);
    }

    // A format suffix: Rails serves `/admin.json` as `/admin`, so it is refused; with
    // `upstream_paths_format_suffix = false` it is the public route's file.
    let response = fresh_exchange(&gw, &get_request("/admin.json", &host)).await;
    assert_eq!(response.status, 400, "{}", response.text());
    let files = TestGateway::start(routes(GatewayConfig::new()).server("upstream_paths_format_suffix", "false")).await;
    let response = fresh_exchange(&files, &get_request("/admin.json", &files.host_header())).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.echo().upstream(), "public");
    assert_eq!(response.echo().path(), "/admin.json");

    // Upstreams that all tell `/ADMIN` from `/admin`: the literal route, no refusal. Dropped
    // parameters still count.
    let strict = TestGateway::start(routes(GatewayConfig::new()).server("upstream_paths_case_sensitive", "true")).await;
    let host = strict.host_header();
    let response = fresh_exchange(&strict, &get_request("/ADMIN/keys", &host)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.echo().upstream(), "public");
    let response = fresh_exchange(&strict, &get_request("/admin;x/keys", &host)).await;
    assert_eq!(response.status, 400, "{}", response.text());
}

/// Express, Rails and Spring serve `/admin` as `/admin/`, so a path that is a route's prefix
/// without its final slash is not routed by its literal text (to a public catch-all): the
/// client is redirected to the prefix, with its query, 301 for `GET` and `HEAD` and 308 for
/// other methods (the body is sent again), and no upstream sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_without_its_final_slash_is_redirected_to_it() {
    let public = TestUpstream::named("public").await;
    let admin = TestUpstream::named("admin").await;
    let config = GatewayConfig::new()
        .route(RouteSpec::new("/", public.url()))
        .route(RouteSpec::new("/admin/", admin.url()).set("auth", "\"required\""));
    let gw = TestGateway::start(config).await;
    let host = gw.host_header();

    let response = fresh_exchange(&gw, &get_request("/admin?tab=keys", &host)).await;
    assert_eq!(response.status, 301, "{}", response.text());
    assert_eq!(response.header("location"), Some("/admin/?tab=keys"));
    let post = format!("POST /admin HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhi");
    let response = fresh_exchange(&gw, &post).await;
    assert_eq!(response.status, 308, "{}", response.text());
    assert_eq!(response.header("location"), Some("/admin/"));
    // HEAD, and HTTP/2.
    for client in [gw.client_builder().build(), gw.client_builder().http2().build()] {
        let response = within(secs(5), "HEAD /admin", client.head(gw.url("/admin")).send())
            .await
            .expect("HEAD /admin");
        assert_eq!(response.status(), 301);
        assert_eq!(
            response.headers().get("location").and_then(|v| v.to_str().ok()),
            Some("/admin/")
        );
    }
    assert_refused(&gw, "missing_slash", 4).await;
    assert_eq!(
        public.targets(),
        Vec::<String>::new(),
        "the public upstream served /admin"
    );
    assert_eq!(admin.targets(), Vec::<String>::new());

    // Other paths route as before.
    let response = fresh_exchange(&gw, &get_request("/administrator", &host)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.echo().upstream(), "public");
}

/// An absolute-form request target names the host (RFC 9112 section 3.2.2: its authority
/// overrides `Host`). The host that picked the route is the one the upstream is told: a
/// `Host` naming another site, whose route requires a login, never reaches an upstream that
/// serves both sites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_names_the_host_routed_and_forwarded() {
    let shared = TestUpstream::named("shared").await;
    let gw = TestGateway::start(two_sites_one_upstream(&shared)).await;
    let port = gw.https.port();

    let mut conn = gw.raw().await;
    let target = format!("https://public.test:{port}/x");
    let response = within(secs(5), "response", conn.roundtrip(get_request(&target, "secure.test")))
        .await
        .expect("absolute-form GET");
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.echo();
    assert_eq!(echo.path(), "/x");
    assert_eq!(echo.header("host"), [format!("public.test:{port}")]);
    assert_eq!(echo.header("x-forwarded-host"), ["public.test"]);

    // Userinfo in the target never becomes part of `Host`.
    let target = format!("https://someone@public.test:{port}/y");
    let response = within(secs(5), "response", conn.roundtrip(get_request(&target, "secure.test")))
        .await
        .expect("absolute-form GET with userinfo");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.echo().header("host"), [format!("public.test:{port}")]);

    // The same `Host` in origin form picks the site's own route, which wants a login.
    let mut conn = gw.raw().await;
    let response = within(secs(5), "response", conn.roundtrip(get_request("/x", "secure.test")))
        .await
        .expect("origin-form GET");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(shared.request_count(), 2);
}

/// RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one valid `Host`. With two, the
/// gateway would route by one while the upstream might read the other; without one, a
/// host-specific route could never be told apart. HTTP/1.0 may still leave it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_without_exactly_one_valid_host_is_400() {
    let shared = TestUpstream::named("shared").await;
    let gw = TestGateway::start(two_sites_one_upstream(&shared)).await;

    for request in [
        "GET /x HTTP/1.1\r\nHost: public.test\r\nHost: secure.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public.test, secure.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public.test/x\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: user@secure.test\r\n\r\n",
        "GET /x HTTP/1.1\r\n\r\n",
    ] {
        let response = fresh_exchange(&gw, request).await;
        assert_eq!(response.status, 400, "{request:?}: {}", response.text());
    }
    assert_eq!(shared.request_count(), 0, "{:?}", shared.targets());
    assert_refused(&gw, "bad_host", 5).await;

    let response = fresh_exchange(&gw, "GET /ten HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `secure.test.` names `secure.test` (DNS, and virtual hosts such as nginx's, drop the final
/// dot): it picks that host's routes, in `Host` and in an absolute-form target alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_final_dot_picks_that_hosts_routes() {
    let shared = TestUpstream::named("shared").await;
    let gw = TestGateway::start(two_sites_one_upstream(&shared)).await;
    let port = gw.https.port();

    for request in [
        "GET /x HTTP/1.1\r\nHost: secure.test.\r\n\r\n".to_owned(),
        format!("GET /x HTTP/1.1\r\nHost: SECURE.test.:{port}\r\n\r\n"),
        format!("GET https://secure.test.:{port}/x HTTP/1.1\r\nHost: public.test\r\n\r\n"),
    ] {
        let response = fresh_exchange(&gw, &request).await;
        assert_eq!(response.status, 401, "{request:?}: {}", response.text());
    }
    assert_eq!(shared.request_count(), 0, "{:?}", shared.targets());
}

/// Upstreams named by address and by host name, one of them behind two routes: each request
/// reaches its own upstream, which sees the client's `Host`, never the name the gateway's
/// connection pool files the upstream under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_by_address_and_by_host_name_see_the_clients_host() {
    let by_address = TestUpstream::named("by-address").await;
    let by_name = TestUpstream::named("by-name").await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::new("/a/", by_address.url()))
            .route(RouteSpec::new(
                "/b/",
                format!("http://localhost:{}", by_name.addr().port()),
            ))
            .route(RouteSpec::new("/c/", by_address.url())),
    )
    .await;
    let client = gw.client();

    for (path, expected) in [
        ("/a/1", "by-address"),
        ("/b/2", "by-name"),
        ("/c/3", "by-address"),
        ("/b/4", "by-name"),
    ] {
        let response = client.get(gw.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let echo = Echo::from_response(response).await;
        assert_eq!(echo.upstream(), expected, "route for {path}");
        assert_eq!(echo.path(), path);
        // What the client sent (reqwest leaves the port out of some requests' Host).
        let host = echo.header("host");
        assert!(
            host == [gw.host_header()] || host == ["localhost"],
            "Host seen upstream for {path}: {host:?}"
        );
    }
    assert_eq!(by_address.targets(), ["/a/1", "/c/3"]);
    assert_eq!(by_name.targets(), ["/b/2", "/b/4"]);
}

/// GETs each target on a fresh connection (a 400 may close it) and expects 400.
async fn assert_each_is_400(gw: &TestGateway, targets: &[&str]) {
    let host = gw.host_header();
    for target in targets {
        let response = fresh_exchange(gw, &get_request(target, &host)).await;
        assert_eq!(response.status, 400, "GET {target}: {}", response.text());
    }
}

/// `request` on a fresh connection (a refusal may close the one before), answered in 5 s.
async fn fresh_exchange(gw: &GatewayAddrs, request: &str) -> RawResponse {
    let mut conn = gw.raw().await;
    within(secs(5), "response", conn.roundtrip(request))
        .await
        .unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

/// A public catch-all and, for `secure.test`, a route that requires a login, both served by
/// `shared`, as one app server hosting two sites would be.
fn two_sites_one_upstream(shared: &TestUpstream) -> GatewayConfig {
    GatewayConfig::new().route(RouteSpec::new("/", shared.url())).route(
        RouteSpec::new("/", shared.url())
            .host("secure.test")
            .set("auth", "\"required\""),
    )
}

/// `sessiongate_requests_refused_total{reason}` reads `n`: operators see refusals that no
/// route's counters hold.
async fn assert_refused(gw: &TestGateway, reason: &str, n: u32) {
    let metrics = gw.metrics_text().await;
    let line = format!("sessiongate_requests_refused_total{{reason=\"{reason}\"}} {n}");
    assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");
}
