//! Session pins in the shared store: the server one instance pinned a session to is the server
//! every instance sends it to, even one where the session's first server is in service.
//!
//! Maintenance is per instance: taking a server out on one leaves it in service on the other.

use std::time::Instant;

use reqwest::{Method, StatusCode};

use super::site::{Admin, ADMIN_TOKEN};
use super::support::{
    channel, fetch, redis_missing, session_id, single_store, Browser, RedisServer, PROPAGATION, SUBSCRIBE_LIMIT,
};
use crate::kit::{quoted, secs, GatewayAddrs, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

/// `sessiongate_session_pins_total{why}` of one instance, 0 when absent.
async fn pins(gw: &GatewayAddrs, why: &str) -> f64 {
    let series = format!("sessiongate_session_pins_total{{why=\"{why}\"}}");
    gw.metric(&series).await.unwrap_or(0.0)
}

/// `POST /upstreams/state` on `gw`'s admin listener; fails unless 200.
async fn set_state(gw: &GatewayAddrs, upstream: &str, state: &str) {
    let body = serde_json::json!({ "upstream": upstream, "state": state });
    let reply = fetch(Admin::new(gw).authed(Method::POST, "/upstreams/state").json(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{upstream} -> {state}: {}", reply.text());
}

/// `GET path` with `browser`: the upstream that answered, and the session id it saw.
async fn served(browser: &mut Browser, path: &str) -> (String, Option<String>) {
    let echo = browser.get(path).await.echo();
    (echo.upstream().to_owned(), session_id(&echo))
}

/// Instance 1 moves a session from a to b (a in maintenance there) and stops gracefully;
/// instance 2, where a is in service and which had served the session on a, then sends it to
/// b. Without shared pins instance 2 ranks a first for this session (its id placed it on a) and
/// keeps it there, deterministically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_by_one_instance_goes_to_its_new_server_on_the_other() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let config = GatewayConfig::new()
        .admin("token", quoted(ADMIN_TOKEN))
        .store_section(Some(&single_store(&redis, "")))
        .server_str("shutdown_grace", "2s")
        .route(RouteSpec::balanced("/", &[a.url(), b.url()]).set("auth", quoted("optional")));
    let mut one = TestGateway::start(config.clone()).await;
    let two = TestGateway::start(config).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    // A session on a, through instance 1 (a chance of 2^-40 to find none).
    let client = one.client();
    let mut found = None;
    for n in 0..40 {
        let mut browser = Browser::new(&one, client.clone());
        if served(&mut browser, &format!("/first/{n}")).await.0 == "a" {
            found = Some(browser);
            break;
        }
    }
    let mut on_one = found.expect("one of 40 sessions on a");
    let token = on_one.expect_token();
    let (_, id) = served(&mut on_one, "/on-a").await;
    let id = id.expect("a session id");
    // Instance 2 serves it on a too, and has it cached from now on.
    let mut on_two = Browser::new(&two, two.client()).with_token(&token);
    assert_eq!(
        served(&mut on_two, "/two/before").await,
        ("a".to_owned(), Some(id.clone()))
    );

    // One request that b answers pins b on instance 1; the graceful stop right after it
    // waits for the pin's write (and its invalidation).
    set_state(&one, &a.url(), "maintenance").await;
    assert_eq!(served(&mut on_one, "/moved").await.0, "b");
    drop((on_one, client));
    one.shutdown_handle().shutdown();
    let stopping = Instant::now();
    one.wait_stopped(secs(10)).await.expect("instance 1 stopped cleanly");
    let stop_took = stopping.elapsed();

    // The pin was written (and its cache invalidation published) before instance 1 stopped;
    // instance 2 must drop its cached copy within the propagation bound.
    let stopped = Instant::now();
    loop {
        let (server, seen) = served(&mut on_two, "/two/after").await;
        assert_eq!(seen.as_deref(), Some(id.as_str()), "another session on instance 2");
        if server == "b" {
            break;
        }
        assert!(
            stopped.elapsed() <= PROPAGATION,
            "instance 2 still sends the moved session to a {:?} after instance 1 stopped \
             (its stop took {stop_took:?})",
            stopped.elapsed()
        );
    }
    for i in 0..3 {
        let (server, _) = served(&mut on_two, &format!("/two/then/{i}")).await;
        assert_eq!(server, "b", "instance 2 sent the moved session back to a");
    }
    assert_eq!(on_two.token(), Some(token.as_str()), "the cookie was replaced");
    assert_eq!(pins(&two, "moved").await, 0.0, "instance 2 moved it again");
    assert!(
        stop_took < secs(2),
        "instance 1 took {stop_took:?} to stop: did it wait for a pin that never finished?"
    );
}
