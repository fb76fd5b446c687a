//! Routes with several upstream servers: `upstream = [...]` with `balance = "sticky"` (the
//! default) or `"round-robin"`, and servers marked down when a connection to them fails.
//!
//! A request that carries a gateway session goes to the server its session's stable id ranks
//! first (rendezvous hashing; that server is then pinned in the session, see `pinning`), so
//! the session, not the token, decides: a login, which rotates the
//! token, keeps the server. Requests without a session (`auth = "none"`), and every request
//! of a `round-robin` route, take turns in the list's order, one counter per route.
//!
//! A failed connection (refused, TLS handshake failed) marks that server down for
//! `[server] upstream_fail_timeout`, counted by `sessiongate_upstream_down_total{upstream}`
//! and logged at `warn` with `event = "upstream_down"`. A request without a body, or with one
//! of at most 64 KiB (read whole first), is sent to the next server at once; one with a larger
//! body is answered 502, as its body streamed and cannot be sent again. Down servers are skipped until the timeout passes (unless all are down: then a
//! request tries only its first choice), then tried again by the next request that picks them;
//! a server's first answer clears its mark. A route with one upstream never marks it down.
//!
//! Which server answered is the echo's `"upstream"` (each `TestUpstream` is named); a server
//! that is down is a [`closed_port`].

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    kit::{
        binary::log_field_text, closed_port, millis, quoted, secs, within, BinaryGateway, Echo, GatewayAddrs,
        GatewayConfig, RouteSpec, TestGateway, TestUpstream,
    },
    sessions::support::{session_id, user, users_section, Browser},
};

/// The form body of every request with a body in these tests.
const FORM: &str = "item=42&quantity=1";

/// A fail timeout no test outlasts: a server marked down stays down for the whole test.
const LONG_FAIL_TIMEOUT: &str = "60s";

/// A server that is down: a port nothing listens on, and its origin as a route names it.
fn dead_server() -> (SocketAddr, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    (addr, format!("http://{addr}"))
}

/// The `/metrics` series counting how often `origin` was marked down.
pub(super) fn down_series(origin: &str) -> String {
    format!("sessiongate_upstream_down_total{{upstream=\"{origin}\"}}")
}

/// A gateway with `upstream_fail_timeout = fail_timeout` and the one route `route`.
fn config(fail_timeout: &str, route: RouteSpec) -> GatewayConfig {
    GatewayConfig::new()
        .server_str("upstream_fail_timeout", fail_timeout)
        .route(route)
}

/// Sends `request`, failing the test on a transport error or after 10 s.
pub(super) async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    within(secs(10), "response from the gateway", request.send())
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"))
}

/// A browser with a cookie store: its first request starts the session it keeps.
pub(super) fn browser(gw: &GatewayAddrs) -> reqwest::Client {
    gw.client_builder().cookie_store().build()
}

/// One browser whose session each of `names` serves, found among fresh browsers.
pub(super) async fn browsers_on(
    gw: &GatewayAddrs,
    names: &[&str],
) -> std::collections::BTreeMap<String, reqwest::Client> {
    let mut on = std::collections::BTreeMap::new();
    for n in 0..40 {
        let browser = browser(gw);
        let server = served_by(&browser, gw, &format!("/first/{n}")).await;
        on.entry(server).or_insert(browser);
        if names.iter().all(|name| on.contains_key(*name)) {
            return on;
        }
    }
    panic!("40 sessions and not one on each of {names:?}: {:?}", on.keys());
}

/// `GET path` with `client`: the name of the upstream that answered; fails unless a 200 echo.
pub(super) async fn served_by(client: &reqwest::Client, gw: &GatewayAddrs, path: &str) -> String {
    let echo = Echo::from_response(send(client.get(gw.url(path))).await).await;
    assert_eq!(echo.path(), path);
    echo.upstream().to_owned()
}

/// `POST path` with [`FORM`] as the body.
fn post_form(client: &reqwest::Client, gw: &GatewayAddrs, path: &str) -> reqwest::RequestBuilder {
    client
        .post(gw.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(FORM)
}

/// The `/metrics` gauge that is 1 while `origin` takes requests.
pub(super) fn ready_series(origin: &str) -> String {
    format!("sessiongate_upstream_ready{{upstream=\"{origin}\"}}")
}

/// Whether `/metrics` holds any `sessiongate_upstream_down_total` sample.
async fn has_down_series(gw: &GatewayAddrs) -> bool {
    gw.metrics_text()
        .await
        .lines()
        .any(|line| line.starts_with("sessiongate_upstream_down_total"))
}

/// Sends `GET path` every 20 ms until `done(answering upstream)` or `limit` passes; every
/// answer must be a 200 echo. Returns how long it took.
async fn poll_until(
    gw: &GatewayAddrs,
    path: &str,
    limit: Duration,
    what: &str,
    mut done: impl AsyncFnMut(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    let client = gw.client();
    loop {
        let upstream = served_by(&client, gw, path).await;
        if done(&upstream).await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        // Time must pass here (a fail timeout); there is no event to await.
        tokio::time::sleep(millis(20)).await;
    }
}

/// Three upstreams named `a`, `b` and `c`, and their origins in that order.
pub(super) async fn three_servers() -> ([TestUpstream; 3], Vec<String>) {
    let servers = [
        TestUpstream::named("a").await,
        TestUpstream::named("b").await,
        TestUpstream::named("c").await,
    ];
    let origins = servers.iter().map(TestUpstream::url).collect();
    (servers, origins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_stays_on_one_server_and_sessions_spread_over_the_servers() {
    let (servers, origins) = three_servers().await;
    // No `balance`: sticky is the default.
    let gw = TestGateway::start(
        GatewayConfig::new().route(RouteSpec::balanced("/", &origins).set("auth", quoted("optional"))),
    )
    .await;

    let mut used = BTreeSet::new();
    for n in 0..12 {
        let browser = gw.client_builder().cookie_store().build();
        let mut seen = Vec::new();
        let mut ids = BTreeSet::new();
        for i in 0..4 {
            let response = send(browser.get(gw.url(&format!("/client-{n}/{i}")))).await;
            let echo = Echo::from_response(response).await;
            ids.insert(session_id(&echo).expect("X-Session-Id on an optional route"));
            seen.push(echo.upstream().to_owned());
        }
        assert_eq!(ids.len(), 1, "client {n} changed sessions: {ids:?}");
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "client {n}'s session (its first request included) moved between servers: {seen:?}"
        );
        used.insert(seen[0].clone());
    }
    assert!(used.len() >= 2, "12 sessions all went to {used:?}");
    let total: usize = servers.iter().map(TestUpstream::request_count).sum();
    assert_eq!(total, 48, "every request reached exactly one server");
}

/// The token rotates at login, the session id stays; so does the server. Eight sessions: a
/// gateway that hashed the token would keep all eight with a chance of 1 in 6561.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_server_when_its_user_logs_in() {
    let (_servers, origins) = three_servers().await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .section(&users_section())
            .route(
                RouteSpec::balanced("/", &origins)
                    .set("auth", quoted("optional"))
                    .set("balance", quoted("sticky")),
            )
            .route(RouteSpec::balanced("/app/", &origins).set("auth", quoted("required"))),
    )
    .await;

    for (n, name) in ["alice", "bob"].into_iter().cycle().take(8).enumerate() {
        let mut browser = Browser::new(&gw, gw.client());
        let before = browser.get("/before-login").await.echo();
        let id = session_id(&before).expect("an anonymous session id");
        browser.login(name).await;
        let after = browser.get("/after-login").await.echo();
        assert_eq!(user(&after).as_deref(), Some(name), "session {n}");
        assert_eq!(session_id(&after), Some(id), "session {n}: the id changed at login");
        assert_eq!(
            after.upstream(),
            before.upstream(),
            "session {n} of {name} moved to another server at login"
        );
        // A `required` route is sticky too, now that the session has a user.
        let mut app = Vec::new();
        for i in 0..3 {
            let echo = browser.get(&format!("/app/{i}")).await.echo();
            assert_eq!(user(&echo).as_deref(), Some(name));
            app.push(echo.upstream().to_owned());
        }
        assert!(app.iter().all(|s| *s == app[0]), "session {n} on /app/: {app:?}");
    }
}

/// Without a session, requests take turns in the list's order: one counter per route, shared
/// by every connection (each request here comes on a new one, whichever worker takes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_session_take_turns_in_list_order_per_route() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let origins = [a.url(), b.url()];
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::balanced("/", &origins))
            .route(RouteSpec::balanced("/two/", &origins)),
    )
    .await;

    let mut order = Vec::new();
    for path in ["/x", "/x", "/x", "/two/x", "/two/x", "/x"] {
        order.push(served_by(&gw.client(), &gw, path).await);
    }
    assert_eq!(order, ["a", "b", "a", "a", "b", "b"], "/x, /x, /x, /two/x, /two/x, /x");

    // One kept-alive connection takes turns the same way.
    let client = gw.client();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(served_by(&client, &gw, "/y").await);
    }
    assert_eq!(order, ["a", "b", "a", "b"]);
    assert_eq!((a.request_count(), b.request_count()), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_robin_route_takes_turns_even_within_one_session() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(
        GatewayConfig::new().route(
            RouteSpec::balanced("/", &[a.url(), b.url()])
                .set("auth", quoted("optional"))
                .set("balance", quoted("round-robin")),
        ),
    )
    .await;

    let browser = gw.client_builder().cookie_store().build();
    let mut order = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        let echo = Echo::from_response(send(browser.get(gw.url(&format!("/page/{i}")))).await).await;
        ids.insert(session_id(&echo).expect("X-Session-Id on an optional route"));
        order.push(echo.upstream().to_owned());
    }
    assert_eq!(ids.len(), 1, "one session throughout: {ids:?}");
    assert_eq!(order, ["a", "b", "a", "b"]);
}

/// The first request picks the dead server, and its client still gets the live one's answer.
/// The dead server is marked down once (metric, `warn` line naming it as configured), and the
/// requests that would have been its turn are answered by the live one. (That they do not even
/// try it is pinned where it can be seen: by POSTs, which would be 502 there, and by a server
/// that counts its connections, in the TLS test.)
async fn a_get_to_a_dead_server_is_answered_by_the_next(http2: bool) {
    let live = TestUpstream::named("live").await;
    let (_, dead) = dead_server();
    let gw = BinaryGateway::start(config(
        LONG_FAIL_TIMEOUT,
        RouteSpec::balanced("/", &[dead.clone(), live.url()]),
    ))
    .await;
    let client = if http2 { gw.client_h2() } else { gw.client() };

    let response = send(client.get(gw.url("/first"))).await;
    let expected_version = if http2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    };
    assert_eq!(response.version(), expected_version);
    assert_eq!(Echo::from_response(response).await.upstream(), "live");

    let line = gw
        .wait_for_log(secs(5), |l| {
            log_field_text(l, "event").as_deref() == Some("upstream_down")
        })
        .await;
    assert_eq!(log_field_text(&line, "level").as_deref(), Some("WARN"), "{line}");
    assert_eq!(
        log_field_text(&line, "upstream").as_deref(),
        Some(dead.as_str()),
        "{line}"
    );
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));
    assert_eq!(gw.metric(&ready_series(&dead)).await, Some(0.0), "marked down for 60 s");
    assert_eq!(gw.metric(&ready_series(&live.url())).await, Some(1.0));

    for i in 0..6 {
        assert_eq!(served_by(&client, &gw, &format!("/then/{i}")).await, "live");
    }
    assert_eq!(live.request_count(), 7);
    assert_eq!(
        gw.metric(&down_series(&dead)).await,
        Some(1.0),
        "marked down again within upstream_fail_timeout"
    );
    assert_eq!(gw.metric(&down_series(&live.url())).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_to_a_dead_server_is_answered_by_the_next_and_the_server_marked_down() {
    a_get_to_a_dead_server_is_answered_by_the_next(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_to_a_dead_server_is_answered_by_the_next_over_http2() {
    a_get_to_a_dead_server_is_answered_by_the_next(true).await;
}

/// HEAD and DELETE without a body are retried like GET (a fresh gateway for each, so that
/// each is the request that finds the dead server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_without_a_body_are_retried_on_the_next_server() {
    let live = TestUpstream::named("live").await;
    for (n, method) in [Method::HEAD, Method::DELETE].into_iter().enumerate() {
        let (_, dead) = dead_server();
        let gw = TestGateway::start(config(
            LONG_FAIL_TIMEOUT,
            RouteSpec::balanced("/", &[dead.clone(), live.url()]),
        ))
        .await;
        let response = send(gw.client().request(method.clone(), gw.url("/item/7"))).await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(live.targets().len(), n + 1, "{method} reached the live server");
        assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0), "{method}");
    }
}

/// A gateway whose one route lists a dead server, then a live one named `live`
/// (round-robin from the first: the first request without a session goes to the dead one).
async fn dead_then_live() -> (TestUpstream, String, TestGateway) {
    let live = TestUpstream::named("live").await;
    let (_, dead) = dead_server();
    let gw = TestGateway::start(config(
        LONG_FAIL_TIMEOUT,
        RouteSpec::balanced("/", &[dead.clone(), live.url()]),
    ))
    .await;
    (live, dead, gw)
}

/// A small body (its length declared, at most 64 KiB) is read whole before it is sent, so a
/// POST whose connection failed goes to the next server as a GET does: the client gets the live
/// server's answer, with the whole body, and the dead server is marked down once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_to_a_dead_server_is_sent_to_the_next() {
    let (live, dead, gw) = dead_then_live().await;
    let client = gw.client();
    for i in 0..4 {
        let echo = Echo::from_response(send(post_form(&client, &gw, "/order")).await).await;
        assert_eq!(echo.upstream(), "live", "POST {i}");
        assert_eq!(echo.body_len(), FORM.len() as u64);
    }
    assert_eq!(live.request_count(), 4);
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));
}

/// A larger body streams, and is not kept: the one already on its way to the dead server
/// cannot be sent again, so 502. The server is marked down all the same, so no later request
/// (its turn or not) goes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_to_a_dead_server_is_502_and_the_next_goes_elsewhere() {
    let (live, dead, gw) = dead_then_live().await;
    let client = gw.client();
    let large = vec![b'x'; 64 * 1024 + 1];
    let upload = |path: &str| client.post(gw.url(path)).body(large.clone());

    // The head alone: the answer needs none of the body, and a client still writing it when
    // the connection closes could see its write fail before it reads the 502.
    let mut conn = gw.raw().await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        gw.host_header(),
        large.len()
    );
    conn.send(head).await.expect("send the head");
    let refused = within(secs(5), "the 502", conn.read_response())
        .await
        .expect("a response");
    assert_eq!(refused.status, 502);
    assert!(
        !refused.text().contains("127.0.0.1"),
        "the 502 names the upstream: {}",
        refused.text()
    );
    // The rest of the body would be parsed as the next request: the connection ends.
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(live.request_count(), 0, "the upload was sent again to the live server");
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));

    for i in 0..3 {
        let echo = Echo::from_response(send(upload("/upload")).await).await;
        assert_eq!(echo.upstream(), "live", "upload {i} after the server was marked down");
        assert_eq!(echo.body_len(), large.len() as u64);
    }
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));
}

/// Sessions that rank the dead server first go to their next server once it is marked down:
/// their POSTs (which would be 502 at the dead one) are answered by the live one. With twelve
/// sessions, all of them ranking the live one first has a chance of 1 in 4096.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_server_is_down_is_served_by_its_next_server() {
    let live = TestUpstream::named("live").await;
    let (_, dead) = dead_server();
    let gw = TestGateway::start(config(
        LONG_FAIL_TIMEOUT,
        RouteSpec::balanced("/", &[dead.clone(), live.url()]).set("auth", quoted("optional")),
    ))
    .await;

    for n in 0..12 {
        let browser = gw.client_builder().cookie_store().build();
        assert_eq!(served_by(&browser, &gw, "/start").await, "live", "session {n}");
        for i in 0..2 {
            let response = send(post_form(&browser, &gw, "/order")).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "POST {i} of session {n} after the dead server was marked down"
            );
            assert_eq!(Echo::from_response(response).await.upstream(), "live");
        }
    }
    assert_eq!(live.request_count(), 36);
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));
}

/// Once `upstream_fail_timeout` has passed, the next request whose turn it is tries the server
/// again: still dead, it is marked down again (no sooner than the timeout); back up, it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_is_tried_again_after_upstream_fail_timeout() {
    let live = TestUpstream::named("live").await;
    let (addr, dead) = dead_server();
    let gw = TestGateway::start(config("200ms", RouteSpec::balanced("/", &[dead.clone(), live.url()]))).await;
    let series = down_series(&dead);

    assert_eq!(served_by(&gw.client(), &gw, "/first").await, "live");
    assert_eq!(gw.metric(&series).await, Some(1.0));

    let waited = poll_until(&gw, "/still-down", secs(5), "marked down again", async |_| {
        gw.metric(&series).await == Some(2.0)
    })
    .await;
    assert!(
        waited >= millis(150),
        "tried again {waited:?} after it was marked down, the upstream_fail_timeout is 200ms"
    );

    let back = TestUpstream::named_on("back", addr).await;
    poll_until(
        &gw,
        "/back",
        secs(5),
        "the server that came back serves",
        async |upstream| upstream == "back",
    )
    .await;
    assert!(back.request_count() >= 1);
}

/// Both servers of a route, dead and so both marked down by the first request, which gets
/// 502; then the first one comes back. Returns it, with the gateway.
async fn every_server_marked_down_then_one_back() -> (TestUpstream, TestGateway) {
    let (first_addr, first) = dead_server();
    let (_, second) = dead_server();
    let gw = TestGateway::start(config(
        LONG_FAIL_TIMEOUT,
        RouteSpec::balanced("/", &[first.clone(), second.clone()]),
    ))
    .await;

    let response = send(gw.client().get(gw.url("/nobody"))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(gw.metric(&down_series(&first)).await, Some(1.0));
    assert_eq!(gw.metric(&down_series(&second)).await, Some(1.0));

    (TestUpstream::named_on("back", first_addr).await, gw)
}

/// When every server of a route is marked down they are tried anyway: a server that came back
/// serves (at the latest when it is a request's first choice, here the second request's)
/// without waiting out `upstream_fail_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_is_marked_down_requests_still_try_them() {
    let (back, gw) = every_server_marked_down_then_one_back().await;
    let client = gw.client();
    let mut statuses = Vec::new();
    for i in 0..2 {
        let response = send(client.get(gw.url(&format!("/again/{i}")))).await;
        statuses.push(response.status());
    }
    assert!(
        statuses.contains(&StatusCode::OK),
        "no request reached the server that came back: {statuses:?}"
    );
    assert!(back.request_count() >= 1);
}

/// While every server is marked down, a request tries only the one it would have had first
/// (a site that is all down costs one connect timeout, not one per server), so a request whose
/// turn is the server still dead gets 502. But the server that came back is marked up by its
/// first answer, well before `upstream_fail_timeout` (60 s here): from then on every request
/// goes to it, the dead one's turns included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_again_is_marked_up_and_takes_every_request() {
    let (back, gw) = every_server_marked_down_then_one_back().await;
    let client = gw.client();
    let mut served = false;
    for i in 0..2 {
        let response = send(client.get(gw.url(&format!("/again/{i}")))).await;
        if response.status() == StatusCode::OK {
            assert_eq!(Echo::from_response(response).await.upstream(), "back");
            served = true;
            break;
        }
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "GET {i}");
    }
    assert!(served, "two turns and the server that came back served neither");
    let before = back.request_count();
    for i in 0..6 {
        let response = send(client.get(gw.url(&format!("/after/{i}")))).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "GET {i} after the server answered again"
        );
        assert_eq!(Echo::from_response(response).await.upstream(), "back");
    }
    assert_eq!(back.request_count(), before + 6);
}

/// A WebSocket handshake has no body either: it is retried on the next server, and the
/// upgraded connection then carries frames both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_to_a_dead_server_is_upgraded_by_the_next() {
    let (live, dead, gw) = dead_then_live().await;

    let (mut ws, response) = crate::foundation::websocket::open_ws(&gw).await;
    assert_eq!(response.status(), 101);
    crate::foundation::websocket::assert_echoed(&mut ws, Message::text("to whichever server is up")).await;
    assert_eq!(live.targets(), ["/ws"]);
    assert_eq!(gw.metric(&down_series(&dead)).await, Some(1.0));
}

/// A server whose TLS handshake fails (a certificate the gateway does not trust) is marked
/// down like one that refuses connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_tls_handshake_fails_is_marked_down() {
    let trusted = tempfile::tempdir().expect("temp dir");
    let untrusted = tempfile::tempdir().expect("temp dir");
    let hosts = ["localhost".to_owned()];
    let (trusted_cert, trusted_key) = sessiongate::tls::write_self_signed(trusted.path(), &hosts).expect("certificate");
    let (untrusted_cert, untrusted_key) =
        sessiongate::tls::write_self_signed(untrusted.path(), &hosts).expect("certificate");
    let good = TestUpstream::start_tls(tls_server(&trusted_cert, &trusted_key)).await;
    let bad = TestUpstream::start_tls(tls_server(&untrusted_cert, &untrusted_key)).await;
    let bad_origin = format!("https://localhost:{}", bad.addr().port());
    let good_origin = format!("https://localhost:{}", good.addr().port());
    let gw = TestGateway::start(
        config(
            LONG_FAIL_TIMEOUT,
            RouteSpec::balanced("/", &[bad_origin.clone(), good_origin]),
        )
        .section(&format!(
            "[upstream_tls]\nca = {}\n",
            quoted(&trusted_cert.display().to_string())
        )),
    )
    .await;

    let client = gw.client();
    for i in 0..4 {
        assert_eq!(served_by(&client, &gw, &format!("/tls/{i}")).await, "tls-upstream");
    }
    assert_eq!(good.request_count(), 4);
    assert_eq!(bad.request_count(), 0);
    // Its turn came twice; marked down, it was not connected to again.
    assert_eq!(bad.accepts(), 1, "connections to the server marked down");
    assert_eq!(gw.metric(&down_series(&bad_origin)).await, Some(1.0));
}

/// An HTTPS test server with the certificate and key in these PEM files.
pub(super) fn tls_server(cert: &std::path::Path, key: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("read cert")
        .collect::<Result<_, _>>()
        .expect("parse cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("read key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    Arc::new(config)
}

/// One upstream is the route's only choice: dead, it is a 502 every time, and it is never
/// marked down (no `sessiongate_upstream_down_total` series at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_dead_upstream_is_502_every_time_and_never_marked_down() {
    let (_, dead) = dead_server();
    let gw = TestGateway::start(config(LONG_FAIL_TIMEOUT, RouteSpec::new("/", dead.clone()))).await;
    let client = gw.client();
    for i in 0..3 {
        let response = send(client.get(gw.url(&format!("/x/{i}")))).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "request {i}");
    }
    assert!(
        !has_down_series(&gw).await,
        "a single upstream was marked down:\n{}",
        gw.metrics_text().await
    );
    // Nor shown as ready: nothing watches it.
    assert_eq!(gw.metric(&ready_series(&dead)).await, None);
}

/// The admin token of [`maintenance_site`].
pub(super) const ADMIN_TOKEN: &str = "balancing-admin-token-0123456789";

/// `POST /upstreams/state` on the admin listener: status and JSON answer.
pub(super) async fn set_state(gw: &GatewayAddrs, upstream: &str, state: &str) -> (StatusCode, serde_json::Value) {
    let response = send(
        crate::kit::client::plain_client()
            .post(gw.admin_url("/upstreams/state"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "upstream": upstream, "state": state })),
    )
    .await;
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

/// `GET /upstreams`: the entry of `upstream`.
pub(super) async fn listed(gw: &GatewayAddrs, upstream: &str) -> serde_json::Value {
    let all = upstreams(gw).await;
    all.iter()
        .find(|u| u["upstream"] == upstream)
        .unwrap_or_else(|| panic!("{upstream} not listed in {all:?}"))
        .clone()
}

/// `GET /upstreams`: every entry.
pub(super) async fn upstreams(gw: &GatewayAddrs) -> Vec<serde_json::Value> {
    let response = send(
        crate::kit::client::plain_client()
            .get(gw.admin_url("/upstreams"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let all: serde_json::Value = response.json().await.expect("a JSON answer to GET /upstreams");
    all["upstreams"].as_array().expect("an `upstreams` list").clone()
}

/// An operator takes a server out for a deploy through the admin API: its sessions and its
/// turns go to the other server at once, without a failed connection (no request with a body
/// gets 502); put back, it takes turns and new sessions again, while the sessions that moved
/// stay pinned where they went. The last server in service of a route cannot be taken out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_takes_a_server_out_of_service_and_back() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let gw = TestGateway::start(
        config(
            LONG_FAIL_TIMEOUT,
            RouteSpec::balanced("/", &[a.url(), b.url()]).set("auth", quoted("optional")),
        )
        .admin("token", quoted(ADMIN_TOKEN)),
    )
    .await;

    // Without the token: nothing shown, nothing changed.
    let anonymous = send(crate::kit::client::plain_client().get(gw.admin_url("/upstreams"))).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let entry = listed(&gw, &a.url()).await;
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(entry["routes"], serde_json::json!(["/"]), "{entry}");
    assert_eq!(entry["down_for_ms"], 0, "{entry}");

    // Sessions spread over both; remember one on each.
    let on = browsers_on(&gw, &["a", "b"]).await;
    let (on_a, on_b) = (&on["a"], &on["b"]);

    let (status, answer) = set_state(&gw, &a.url(), "maintenance").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "maintenance", "{answer}");
    assert_eq!(listed(&gw, &a.url()).await["state"], "maintenance");
    let a_before = a.request_count();
    for i in 0..3 {
        assert_eq!(served_by(on_a, &gw, &format!("/out/{i}")).await, "b");
        assert_eq!(served_by(on_b, &gw, &format!("/out/{i}")).await, "b");
        let posted = send(post_form(on_a, &gw, &format!("/post/{i}"))).await;
        assert_eq!(posted.status(), StatusCode::OK);
        assert_eq!(Echo::from_response(posted).await.upstream(), "b");
    }
    assert_eq!(a.request_count(), a_before, "a server in maintenance got requests");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(0.0));
    assert_eq!(gw.metric(&ready_series(&b.url())).await, Some(1.0));
    assert!(!has_down_series(&gw).await, "nothing failed, so nothing is marked down");

    // b is now the route's last server in service.
    let (status, answer) = set_state(&gw, &b.url(), "maintenance").await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("route /")),
        "{answer}"
    );
    assert_eq!(listed(&gw, &b.url()).await["state"], "ready");

    // Unknown servers, states and bodies are refused, and change nothing.
    let (_, stranger) = dead_server();
    assert_eq!(set_state(&gw, &stranger, "ready").await.0, StatusCode::NOT_FOUND);
    assert_eq!(set_state(&gw, &a.url(), "draining").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(set_state(&gw, "not a url", "ready").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(listed(&gw, &a.url()).await["state"], "maintenance");

    // Back in service: it takes requests again, but the session that moved is pinned to
    // the server that stood in, and stays there (see `pinning`).
    let (status, answer) = set_state(&gw, &a.url(), "ready").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(served_by(on_a, &gw, "/back").await, "b");
    assert_eq!(served_by(on_b, &gw, "/back").await, "b");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(1.0));
}

/// `sessiongate upstream list | set`, the real binary against the admin API, as a deploy script
/// runs it: the server goes out of service and its requests to the other, then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_cli_lists_servers_and_takes_one_out_for_a_deploy() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let gw = TestGateway::start(
        config(LONG_FAIL_TIMEOUT, RouteSpec::balanced("/", &[a.url(), b.url()])).admin("token", quoted(ADMIN_TOKEN)),
    )
    .await;
    let token_file = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token_file.path(), format!("{ADMIN_TOKEN}\n")).expect("write the token file");
    let cli = |rest: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["upstream".into()];
        args.extend(rest.iter().map(std::ffi::OsString::from));
        args.extend(["--admin".into(), gw.admin_url("").into()]);
        args.extend(["--token-file".into(), token_file.path().as_os_str().to_owned()]);
        tokio::task::spawn_blocking(move || crate::kit::run_cli(args))
    };

    let listed = cli(&["list"]).await.expect("the CLI thread");
    assert_eq!(listed.code(), Some(0), "{listed:?}");
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "upstream\tstate\tdown_for_ms\troutes\tcheck",
            &format!("{}\tready\t0\t/\tnone", a.url()),
            &format!("{}\tready\t0\t/\tnone", b.url()),
        ]
    );

    let set = cli(&["set", "--upstream", &a.url(), "--state", "maintenance"])
        .await
        .expect("the CLI thread");
    assert_eq!(set.code(), Some(0), "{set:?}");
    assert_eq!(set.stdout.trim_end(), format!("{}\tmaintenance\t0\t/\tnone", a.url()));
    let client = gw.client();
    for i in 0..4 {
        assert_eq!(served_by(&client, &gw, &format!("/deploying/{i}")).await, "b");
    }

    // The last server in service stays: the CLI fails with the admin API's reason.
    let refused = cli(&["set", "--upstream", &b.url(), "--state", "maintenance"])
        .await
        .expect("the CLI thread");
    assert_ne!(refused.code(), Some(0), "{refused:?}");
    assert!(refused.stderr.contains("409"), "{refused:?}");
    assert!(refused.stderr.contains("no upstream server in service"), "{refused:?}");

    let back = cli(&["set", "--upstream", &a.url(), "--state", "ready"])
        .await
        .expect("the CLI thread");
    assert_eq!(back.code(), Some(0), "{back:?}");
    let turns: Vec<String> = {
        let mut t = Vec::new();
        for i in 0..2 {
            t.push(served_by(&client, &gw, &format!("/deployed/{i}")).await);
        }
        t
    };
    assert!(turns.contains(&"a".to_owned()), "{turns:?}");
}

/// A small body read whole before it is sent must arrive within `upstream_timeout`: a client
/// that declares ten bytes and sends five gets 408, and nothing reaches any server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_does_not_arrive_is_408() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let gw = TestGateway::start(
        config(LONG_FAIL_TIMEOUT, RouteSpec::balanced("/", &[a.url(), b.url()]))
            .server_str("upstream_timeout", "300ms"),
    )
    .await;
    let mut conn = gw.raw().await;
    let head = format!(
        "POST /slow HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhalf!",
        gw.host_header()
    );
    conn.send(head).await.expect("send the head and half the body");
    let response = within(secs(5), "the gateway's answer", conn.read_response())
        .await
        .expect("a response");
    assert_eq!(response.status, 408, "{}", response.text());
    assert_eq!(a.request_count() + b.request_count(), 0);
}
