//! An ending on one instance reaches the other within [`PROPAGATION`]: logout, the rotation at
//! login (the pre-login token), and admin revocation. In each case the other instance has the
//! session in its cache first, so a refusal proves its cache entry was invalidated.

use std::time::Instant;

use reqwest::{Method, StatusCode};

use super::support::{
    channel, fetch, redis_missing, single_store, Pair, Probe, RedisServer, PREFIX, PROPAGATION, SUBSCRIBE_LIMIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_login_rotation_on_one_instance_reach_the_other_within_100ms() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;
    let probe_a = Probe::new(&a).warm().await;
    let probe_b = Probe::new(&b).warm().await;

    // An anonymous session from A, cached by both.
    let mut alice = a.browser();
    alice.get("/page").await;
    let anonymous = alice.expect_token();
    let before_login = a.cache(&anonymous).await;
    assert_eq!(before_login.user(), None);
    assert_eq!(b.cache(&anonymous).await, before_login);

    // Login on A rotates the token: the pre-login one is dead on both instances.
    alice.login("alice").await;
    let since = Instant::now();
    let token = alice.expect_token();
    probe_b
        .refused_within(&[&anonymous], since, PROPAGATION, "the pre-login token on B")
        .await;
    probe_a
        .refused_within(&[&anonymous], since, PROPAGATION, "the pre-login token on A")
        .await;
    a.assert_refuses(&anonymous, "the pre-login token on A").await;
    b.assert_refuses(&anonymous, "the pre-login token on B").await;

    // The new token is the same session, logged in, on both.
    let on_a = a.cache(&token).await;
    assert_eq!(on_a.user(), Some("alice"));
    assert_eq!(on_a.id(), before_login.id(), "login kept the session id");
    assert_eq!(b.cache(&token).await, on_a);

    // Logout on B: A refuses the token within 100 ms of B's answer.
    let mut on_b = b.presenting(&token);
    let reply = on_b.logout().await;
    let since = Instant::now();
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "logout on B: {}", reply.text());
    let took = probe_a
        .refused_within(&[&token], since, PROPAGATION, "A after logout on B")
        .await;
    eprintln!("A refused the logged-out token by a request sent {took:?} after B's answer");
    a.assert_refuses(&token, "A after logout on B").await;
    b.assert_refuses(&token, "B after logout on B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revocation_on_one_instance_reaches_the_other_within_100ms() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    // alice: one minted session and one login, both on A; bob: one minted session.
    let (_, minted) = a.admin().mint_for("alice").await;
    let mut browser = a.browser();
    browser.login("alice").await;
    let logged_in = browser.expect_token();
    let (_, bob) = a.admin().mint_for("bob").await;
    for token in [&minted, &logged_in] {
        assert_eq!(b.cache(token).await.user(), Some("alice"));
    }
    assert_eq!(b.cache(&bob).await.user(), Some("bob"));
    let probe_b = Probe::new(&b).warm().await;

    let reply = fetch(a.admin().authed(Method::DELETE, "/sessions?user=alice")).await;
    let since = Instant::now();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["revoked"], 2, "{}", reply.text());
    let took = probe_b
        .refused_within(&[&minted, &logged_in], since, PROPAGATION, "B after revocation on A")
        .await;
    eprintln!("B refused alice's sessions by requests sent {took:?} after A's answer");

    for token in [&minted, &logged_in] {
        b.assert_refuses(token, "alice on B after revocation").await;
        a.assert_refuses(token, "alice on A after revocation").await;
    }
    b.assert_serves(&bob, "bob", "bob on B after alice's revocation").await;
    let listed = fetch(b.admin().authed(Method::GET, "/sessions?user=alice"))
        .await
        .json();
    assert_eq!(listed["count"], 0, "{listed}");
    let listed = fetch(b.admin().authed(Method::GET, "/sessions?user=bob")).await.json();
    assert_eq!(listed["count"], 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_counts_both_instances_sessions_and_its_ending_reaches_the_other() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let store = format!("{}[session]\nmax_per_user = 2\n", single_store(&redis, ""));
    let Pair { a, b } = Pair::start(&store).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;
    let probe_a = Probe::new(&a).warm().await;

    // Two sessions on A, the first one least recently used; A caches both.
    let (_, oldest) = a.admin().mint_for("alice").await;
    // `last_seen` is in milliseconds: the two must not tie.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let (_, newer) = a.admin().mint_for("alice").await;
    a.assert_serves(&newer, "alice", "the newer session on A").await;

    // A login on B (the user's third session) ends the oldest one, which B learned of from
    // Redis alone; A refuses it within the bound.
    let mut third = b.browser();
    third.login("alice").await;
    let since = Instant::now();
    probe_a
        .refused_within(&[&oldest], since, PROPAGATION, "the session ended by B's login, on A")
        .await;
    a.assert_serves(&newer, "alice", "the newer session on A").await;
    a.assert_serves(&third.expect_token(), "alice", "the login on B, on A")
        .await;
    let members = redis.cli(&["SCARD", &format!("{PREFIX}user:alice")]).await;
    assert_eq!(members.trim(), "2", "alice's index");
}
