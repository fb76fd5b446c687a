//! Draining a server before a deploy: `POST /upstreams/state` with `"state": "drain"` (or
//! `sessiongate upstream set --state drain`). A drained server keeps the sessions pinned to
//! it and gets no others: no new sessions, no turns of requests without a session. Its
//! answers, counted by `sessiongate_upstream_requests_total{upstream}`, fall off as its
//! sessions end; then the deploy takes it out (`maintenance`), which moves what is left.

use reqwest::StatusCode;

use super::balancing::{browser, browsers_on, listed, ready_series, served_by, set_state, ADMIN_TOKEN};
use crate::kit::{quoted, GatewayAddrs, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

/// The `/metrics` counter of the answers `origin` gave.
fn answers_series(origin: &str) -> String {
    format!("sessiongate_upstream_requests_total{{upstream=\"{origin}\"}}")
}

async fn answers(gw: &GatewayAddrs, origin: &str) -> f64 {
    gw.metric(&answers_series(origin)).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_keeps_its_sessions_and_takes_no_new_ones() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .server_str("upstream_fail_timeout", "60s")
            .route(RouteSpec::balanced("/", &[a.url(), b.url()]).set("auth", quoted("optional")))
            .route(RouteSpec::balanced("/public/", &[a.url(), b.url()]))
            .admin("token", quoted(ADMIN_TOKEN)),
    )
    .await;

    // A session on each server.
    let on = browsers_on(&gw, &["a", "b"]).await;
    let (on_a, on_b) = (&on["a"], &on["b"]);

    let (status, answer) = set_state(&gw, &a.url(), "drain").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "drain", "{answer}");
    assert_eq!(listed(&gw, &a.url()).await["state"], "drain");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(0.0));

    // Its own session stays; the other server's stays too.
    let before = answers(&gw, &a.url()).await;
    for i in 0..3 {
        assert_eq!(served_by(on_a, &gw, &format!("/draining/{i}")).await, "a");
        assert_eq!(served_by(on_b, &gw, &format!("/draining/{i}")).await, "b");
    }
    assert_eq!(answers(&gw, &a.url()).await, before + 3.0, "a's answers are counted");

    // No new session goes to it (with a's share of half, 20 new sessions all on b by
    // chance would be 1 in a million), and no turn of a request without a session.
    for n in 0..20 {
        assert_eq!(
            served_by(&browser(&gw), &gw, &format!("/new/{n}")).await,
            "b",
            "new session {n}"
        );
    }
    let anonymous = gw.client();
    for n in 0..4 {
        assert_eq!(served_by(&anonymous, &gw, &format!("/public/{n}")).await, "b");
    }
    assert_eq!(
        answers(&gw, &a.url()).await,
        before + 3.0,
        "only a's own session reached it"
    );

    // b is the route's last server ready for new sessions: it can be neither drained nor
    // taken out.
    for state in ["drain", "maintenance"] {
        let (status, answer) = set_state(&gw, &b.url(), state).await;
        assert_eq!(status, StatusCode::CONFLICT, "{state}: {answer}");
    }
    assert_eq!(listed(&gw, &b.url()).await["state"], "ready");

    // The deploy takes a out: its last session moves to b, and stays there when a is back.
    assert_eq!(set_state(&gw, &a.url(), "maintenance").await.0, StatusCode::OK);
    assert_eq!(served_by(on_a, &gw, "/deploying").await, "b");
    assert_eq!(set_state(&gw, &a.url(), "ready").await.0, StatusCode::OK);
    assert_eq!(served_by(on_a, &gw, "/deployed").await, "b");
    let mut turns = Vec::new();
    for n in 0..2 {
        turns.push(served_by(&anonymous, &gw, &format!("/public/back/{n}")).await);
    }
    assert!(turns.contains(&"a".to_owned()), "a takes turns again: {turns:?}");
}
