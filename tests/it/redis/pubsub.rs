//! The invalidation feed cut (`CLIENT KILL TYPE pubsub`): an instance that may have missed
//! invalidations stops trusting its cache and reads every session from Redis, so a session
//! revoked meanwhile is never served; once subscribed again it drops what it had cached and
//! invalidations flow again.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use super::support::{
    channel, fetch, redis_missing, single_store, Pair, Probe, RedisServer, State, PROPAGATION, SUBSCRIBE_LIMIT,
};
use crate::kit::{millis, secs};

/// How long B is watched while its feed is down.
const CUT_WATCH: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_while_the_feed_is_cut_is_never_served() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    let (alice_id, alice) = a.admin().mint_for("alice").await;
    let (bob_id, bob) = a.admin().mint_for("bob").await;
    assert_eq!(b.cache(&alice).await.user(), Some("alice"));
    assert_eq!(b.cache(&bob).await.user(), Some("bob"));
    let probe_b = Probe::new(&b).warm().await;

    // Cut the feed and keep it cut: the instances cannot subscribe again until allowed, so the
    // revocation below is certainly published while B is not listening.
    redis.allow_subscribe(false).await;
    assert_eq!(redis.kill_pubsub_clients().await, 2, "A's and B's subscriptions");
    redis.wait_subscribers(&channel(), 0, secs(2)).await;

    let reply = fetch(a.admin().authed(Method::DELETE, &format!("/sessions/{alice_id}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let since = Instant::now();
    let mut checks = 0;
    while since.elapsed() < CUT_WATCH {
        let state = probe_b.state(&alice).await;
        assert_eq!(
            state,
            State::Refused,
            "B served a session revoked while its feed was cut ({:?} after the revocation, check {checks})",
            since.elapsed()
        );
        checks += 1;
    }
    assert_eq!(
        redis.subscribers(&channel()).await,
        0,
        "the feed came back during the watch"
    );
    // Sessions that are still valid keep working while the feed is down (read through).
    b.assert_serves(&bob, "bob", "on B with the feed cut").await;
    eprintln!("B refused the revoked session {checks} times in {CUT_WATCH:?} with its feed cut");

    // The feed comes back by itself once subscribing works again.
    redis.allow_subscribe(true).await;
    let back = redis.wait_subscribers(&channel(), 2, secs(2)).await;
    eprintln!("both instances subscribed again {back:?} after it was allowed");
    assert!(back <= millis(1500), "re-subscribing took {back:?}");
    b.assert_refuses(&alice, "B after the feed is back").await;
    b.assert_serves(&bob, "bob", "B after the feed is back").await;
    let (_, fresh) = a.admin().mint_for("alice").await;
    b.assert_serves(&fresh, "alice", "a session minted on A after the feed is back")
        .await;

    // And invalidations reach B's cache again.
    assert_eq!(b.cache(&bob).await.user(), Some("bob"));
    let reply = fetch(a.admin().authed(Method::DELETE, &format!("/sessions/{bob_id}"))).await;
    let since = Instant::now();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    probe_b
        .refused_within(&[&bob], since, PROPAGATION, "B after revocation on A, feed restored")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lost_with_redis_are_not_served_from_the_caches() {
    if redis_missing() {
        return;
    }
    // Nothing on disk: the restart brings back an empty Redis, as a failover to an empty
    // replica would. The instances' caches are all that is left of the session.
    let mut redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;
    let (_, token) = a.admin().mint_for("alice").await;
    assert_eq!(a.cache(&token).await.user(), Some("alice"));
    assert_eq!(b.cache(&token).await.user(), Some("alice"));

    redis.restart().await;
    assert_eq!(
        redis.keys().await,
        Vec::<String>::new(),
        "the restarted Redis is not empty"
    );
    for instance in [&a, &b] {
        instance.wait_readyz(StatusCode::OK, secs(5)).await;
    }
    redis.wait_subscribers(&channel(), 2, secs(3)).await;
    a.assert_refuses(&token, "A after Redis came back empty").await;
    b.assert_refuses(&token, "B after Redis came back empty").await;

    let mut alice = a.browser();
    alice.login("alice").await;
    b.assert_serves(&alice.expect_token(), "alice", "a login after Redis came back")
        .await;
}
