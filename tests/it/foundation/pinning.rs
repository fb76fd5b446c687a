//! A sticky route with several servers pins each session to the server that answers it (in the
//! session record), and a pinned server comes first for as long as it is in service and up.
//! The ranking (rendezvous hashing of the session id) only places sessions that have no server
//! among the route's yet. So:
//!
//! - a reload that adds a server moves no session; new sessions spread over all servers;
//! - a session moved off a server in maintenance stays on its new server when the first comes
//!   back (`sessiongate_session_pins_total{why="moved"}`);
//! - with the embedded store, the pin outlives a restart (SIGTERM waits for pins in flight);
//! - round-robin routes and routes with one upstream pin nothing.
//!
//! Pins are written in the background; the metric counts a pin once it is written, so the
//! tests wait for a count to be reached before they check it is exact. Which server answered
//! is the echo's `"upstream"` (each `TestUpstream` is named).

use std::time::Instant;

use tempfile::TempDir;

use super::{
    balancing::{listed, set_state, three_servers, ADMIN_TOKEN},
    route_reload::{reload_routes, rewrite_routes},
};
use crate::{
    kit::{quoted, secs, BinaryGateway, GatewayAddrs, GatewayConfig, RouteSpec, TestGateway, TestUpstream},
    sessions::support::{session_id, Browser},
};

/// The counter of pins written, by `why` (`first` or `moved`).
fn pins_series(why: &str) -> String {
    format!("sessiongate_session_pins_total{{why=\"{why}\"}}")
}

/// `sessiongate_session_pins_total{why}`, 0 when the series is not there.
async fn pins(gw: &GatewayAddrs, why: &str) -> f64 {
    gw.metric(&pins_series(why)).await.unwrap_or(0.0)
}

/// Waits until `why` has counted `n` pins (their writes are in the background; 5 s at most),
/// then checks that it counted no more.
async fn pins_reach(gw: &GatewayAddrs, why: &str, n: f64) {
    let started = Instant::now();
    while pins(gw, why).await < n {
        assert!(
            started.elapsed() < secs(5),
            "{why} pins still below {n} after 5 s:\n{}",
            gw.metrics_text().await
        );
        // No event to await from outside the process: the pin is written in the background.
        tokio::time::sleep(crate::kit::millis(10)).await;
    }
    assert_eq!(pins(gw, why).await, n, "{why} pins:\n{}", gw.metrics_text().await);
}

/// Whether `/metrics` holds any `sessiongate_session_pins_total` sample.
async fn has_pin_samples(gw: &GatewayAddrs) -> bool {
    gw.metrics_text()
        .await
        .lines()
        .any(|line| line.starts_with("sessiongate_session_pins_total"))
}

/// A sticky route `/` over `origins` with sessions (`auth = "optional"`).
fn sticky(origins: &[String]) -> RouteSpec {
    RouteSpec::balanced("/", origins).set("auth", quoted("optional"))
}

/// A browser without a session (its first request gets it one) on `client`: many sessions
/// share one kept-alive connection, so that a test's time goes to no TLS handshakes.
fn new_session(gw: &GatewayAddrs, client: &reqwest::Client) -> Browser {
    Browser::new(gw, client.clone())
}

/// `GET path` with `browser`: the name of the upstream that answered.
async fn served(browser: &mut Browser, path: &str) -> String {
    let echo = browser.get(path).await.echo();
    assert_eq!(echo.path(), path);
    echo.upstream().to_owned()
}

/// Sends `GET path` with `browser` until `why` reaches `n` pins (each request must be answered
/// by `server`); fails after 5 s. The requests are what may decide the pin: the first one
/// after a change can find the session's previous pin still being written.
async fn until_pins(gw: &GatewayAddrs, browser: &mut Browser, path: &str, server: &str, why: &str, n: f64) {
    let started = Instant::now();
    loop {
        assert_eq!(served(browser, path).await, server, "while waiting for a pin");
        if pins(gw, why).await >= n {
            return;
        }
        assert!(
            started.elapsed() < secs(5),
            "{why} pins still below {n} after 5 s:\n{}",
            gw.metrics_text().await
        );
    }
}

/// `GET /sessions` on the admin listener: each session's id and the upstreams it is pinned to.
async fn listed_upstreams(gw: &GatewayAddrs) -> std::collections::HashMap<String, Vec<String>> {
    let response = crate::kit::client::plain_client()
        .get(gw.admin_url("/sessions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /sessions");
    assert_eq!(response.status(), 200);
    let all: serde_json::Value = response.json().await.expect("a JSON listing");
    let sessions = all["sessions"].as_array().expect("a `sessions` list");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        let items = v.as_array().expect("an `upstreams` list");
        items
            .iter()
            .map(|u| u.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    sessions
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                strings(&s["upstreams"]),
            )
        })
        .collect()
}

/// Before pinning, adding c to [a, b] moved about a third of the sessions to c (those whose
/// id ranks c first). With 24 sessions, a gateway without pins would leave them all in place
/// with a chance of (2/3)^24, about 6e-5; and it would count no pins at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_server_moves_no_session() {
    let ([_a, _b, c], origins) = three_servers().await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .admin("token", quoted(ADMIN_TOKEN))
            .route(sticky(&origins[..2])),
    )
    .await;

    let client = gw.client();
    let mut sessions = Vec::new();
    for n in 0..24 {
        let mut browser = new_session(&gw, &client);
        let server = served(&mut browser, &format!("/before/{n}")).await;
        sessions.push((browser, server));
    }
    pins_reach(&gw, "first", 24.0).await;

    rewrite_routes(gw.config_path(), &[sticky(&origins)]);
    reload_routes(&gw).await;

    let mut moved = Vec::new();
    for (n, (browser, before)) in sessions.iter_mut().enumerate() {
        for i in 0..2 {
            let now = served(browser, &format!("/after/{n}/{i}")).await;
            if now != *before {
                moved.push(format!("session {n}: {before} -> {now}"));
            }
        }
    }
    assert!(moved.is_empty(), "sessions moved by the reload: {moved:?}");
    assert_eq!(c.request_count(), 0, "an existing session reached the new server");
    assert_eq!(pins(&gw, "first").await, 24.0, "sessions pinned again after the reload");

    // New sessions are placed by the ranking over all three servers: about a third on c.
    // None of 30 on c has a chance of (2/3)^30, about 5e-6.
    let mut on_c = 0;
    for n in 0..30 {
        if served(&mut new_session(&gw, &client), &format!("/new/{n}")).await == "c" {
            on_c += 1;
        }
    }
    assert!(on_c >= 1, "no new session went to the server the reload added");
    pins_reach(&gw, "first", 54.0).await;
    assert_eq!(pins(&gw, "moved").await, 0.0, "{}", gw.metrics_text().await);
}

/// Before pinning, a session whose server came back from maintenance went back to it (its id
/// ranks it first), deterministically: the check after `ready` fails without pins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_off_a_server_in_maintenance_stays_on_its_new_server() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(
        GatewayConfig::new()
            .admin("token", quoted(ADMIN_TOKEN))
            .route(sticky(&[a.url(), b.url()])),
    )
    .await;

    // One session on each server (a chance of 2^-40 to find none on one of them).
    let client = gw.client();
    let mut on = std::collections::BTreeMap::new();
    let mut opened = 0;
    for n in 0..40 {
        let mut browser = new_session(&gw, &client);
        let server = served(&mut browser, &format!("/first/{n}")).await;
        opened += 1;
        on.entry(server).or_insert(browser);
        if on.len() == 2 {
            break;
        }
    }
    let (mut on_a, mut on_b) = (on["a"].clone(), on["b"].clone());
    pins_reach(&gw, "first", f64::from(opened)).await;
    assert_eq!(pins(&gw, "moved").await, 0.0);

    let (status, answer) = set_state(&gw, &a.url(), "maintenance").await;
    assert_eq!(status, 200, "{answer}");
    until_pins(&gw, &mut on_a, "/out", "b", "moved", 1.0).await;
    assert_eq!(served(&mut on_b, "/out").await, "b");

    // The admin's listing names the server each session is pinned to.
    let listed = listed_upstreams(&gw).await;
    for browser in [&mut on_a, &mut on_b] {
        let id = session_id(&browser.get("/whose").await.echo()).expect("a session id");
        assert_eq!(listed.get(&id), Some(&vec![b.url()]), "session {id} in {listed:?}");
    }

    let (status, answer) = set_state(&gw, &a.url(), "ready").await;
    assert_eq!(status, 200, "{answer}");
    let a_before = a.request_count();
    for i in 0..3 {
        assert_eq!(
            served(&mut on_a, &format!("/back/{i}")).await,
            "b",
            "the moved session went back to its first server"
        );
        assert_eq!(served(&mut on_b, &format!("/back/{i}")).await, "b");
    }
    assert_eq!(a.request_count(), a_before, "{:?}", a.targets());
    assert_eq!(pins(&gw, "moved").await, 1.0, "{}", gw.metrics_text().await);
    assert_eq!(
        pins(&gw, "first").await,
        f64::from(opened),
        "{}",
        gw.metrics_text().await
    );
    // a is in service: new sessions still reach it (a chance of 2^-40 that none of 40 does).
    let mut reached_a = false;
    for n in 0..40 {
        if served(&mut new_session(&gw, &client), &format!("/later/{n}")).await == "a" {
            reached_a = true;
            break;
        }
    }
    assert!(reached_a, "no new session went to a after it came back");
}

/// Maintenance is per process: after the restart a is ready. Before pinning, the session went
/// back to a, which its id ranks first (it was placed there by the ranking): the check after
/// the restart fails without a pin in the store. SIGTERM is sent right after the one request
/// that b answered, so the pin's write may still be in flight, or even queued behind the
/// session's first pin: graceful shutdown must wait for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_keeps_its_new_server_after_a_restart() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    // Outside the per-start config dir, so that both starts open the same file.
    let state = TempDir::new().expect("state dir");
    let store = format!(
        "[store]\nkind = \"embedded\"\npath = {}\n",
        quoted(&state.path().join("sessions.redb").display().to_string())
    );
    let config = GatewayConfig::new()
        .store_section(Some(&store))
        .server_str("shutdown_grace", "2s")
        .admin("token", quoted(ADMIN_TOKEN))
        .route(sticky(&[a.url(), b.url()]));

    let mut gw = BinaryGateway::start(config.clone()).await;
    let client = gw.client();
    let mut found = None;
    for n in 0..40 {
        let mut browser = Browser::new(&gw, client.clone());
        if browser.get(&format!("/first/{n}")).await.echo().upstream() == "a" {
            found = Some(browser);
            break;
        }
    }
    let mut browser = found.expect("one of 40 sessions on a");
    let token = browser.expect_token();
    let id = session_id(&browser.get("/on-a").await.echo()).expect("a session id");

    // One request that b answers pins b; its answer comes after the pin is asked.
    let (status, answer) = set_state(&gw, &a.url(), "maintenance").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(served(&mut browser, "/moved").await, "b");
    assert_eq!(browser.token(), Some(token.as_str()), "the cookie was replaced");
    drop((browser, client));

    let stopping = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(secs(15)).await;
    let stop_took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.stderr_text());
    let log = gw.stderr_text();
    assert!(
        !log.contains("pins not yet written"),
        "shutdown did not wait for the pin (took {stop_took:?}):\n{log}"
    );
    drop(gw);

    let gw = BinaryGateway::start(config).await;
    assert_eq!(listed(&gw, &a.url()).await["state"], "ready", "a fresh process");
    let mut browser = Browser::new(&gw, gw.client()).with_token(&token);
    let a_before = a.request_count();
    for i in 0..3 {
        let echo = browser.get(&format!("/restarted/{i}")).await.echo();
        assert_eq!(
            session_id(&echo).as_deref(),
            Some(id.as_str()),
            "the session did not survive"
        );
        assert_eq!(
            echo.upstream(),
            "b",
            "the moved session went back to a after the restart"
        );
    }
    assert_eq!(browser.token(), Some(token.as_str()), "the cookie was replaced");
    assert_eq!(a.request_count(), a_before);
    assert_eq!(pins(&gw, "moved").await, 0.0, "pinned again after the restart");
    assert_eq!(pins(&gw, "first").await, 0.0, "pinned again after the restart");
}

/// Round-robin routes and routes with one upstream pin nothing: one session's requests take
/// turns, and no pin is counted, until the session reaches a sticky route with several
/// servers (that one pin shows the counter exists, so its absence before is no accident of
/// naming; without pinning there is none at all, and the test fails there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_routes_pin_nothing() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let origins = [a.url(), b.url()];
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(
                RouteSpec::balanced("/rr/", &origins)
                    .set("auth", quoted("optional"))
                    .set("balance", quoted("round-robin")),
            )
            .route(RouteSpec::new("/one/", b.url()).set("auth", quoted("optional")))
            .route(sticky(&origins)),
    )
    .await;

    let mut browser = new_session(&gw, &gw.client());
    let mut turns = Vec::new();
    for i in 0..2 {
        turns.push(served(&mut browser, &format!("/rr/{i}")).await);
    }
    assert_eq!(served(&mut browser, "/one/x").await, "b");
    assert!(
        !has_pin_samples(&gw).await,
        "a round-robin or one-server route pinned:\n{}",
        gw.metrics_text().await
    );

    let sticky_server = served(&mut browser, "/sticky").await;
    pins_reach(&gw, "first", 1.0).await;
    // The pin changes nothing on the round-robin route: the turns go on.
    for i in 2..4 {
        turns.push(served(&mut browser, &format!("/rr/{i}")).await);
    }
    assert_eq!(turns, ["a", "b", "a", "b"], "sticky route's server: {sticky_server}");
    assert_eq!(pins(&gw, "first").await, 1.0);
    assert_eq!(pins(&gw, "moved").await, 0.0);
}
