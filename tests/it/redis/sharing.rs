//! One session, several instances: a login on A is a login on B; what the store holds for it
//! (hashes under the configured prefix, never a token); and no instance starts without Redis.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use sessiongate::{config::Config, session::record::now_ms, Gateway, StartError};

use super::site::ALICE_EMAIL;
use super::support::{
    channel, fetch, redis_missing, session_id, session_key, single_store, site_config, token_bytes_hex, token_hash_hex,
    Instance, Pair, RedisServer, Responder, PREFIX, SUBSCRIBE_LIMIT,
};
use crate::kit::{closed_port, secs, within, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_instance_is_a_login_on_the_other() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    let mut alice = a.browser();
    alice.login("alice").await;
    let token = alice.expect_token();
    let on_a = a.assert_serves(&token, "alice", "on A, where alice logged in").await;

    // B's upstream sees the whole identity, for the same session.
    let on_b = b.assert_serves(&token, "alice", "on B").await;
    assert_eq!(on_b.header("x-forwarded-email"), [ALICE_EMAIL]);
    assert_eq!(on_b.header("x-forwarded-groups"), ["admins"]);
    let id = session_id(&on_a).expect("a session id on A");
    assert_eq!(session_id(&on_b).as_deref(), Some(id.as_str()), "one session, two ids");
    assert_eq!(b.upstream.request_count(), 1, "{:?}", b.upstream.targets());

    // The built-in endpoint and the admin API of B know the session too.
    let info = b.presenting(&token).session_info().await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    let listed = fetch(b.admin().authed(Method::GET, "/sessions?user=alice")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let listed = listed.json();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["sessions"][0]["id"], id.as_str(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_token_hashes_under_the_prefix_never_tokens() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let a = Instance::start("A", &single_store(&redis, "")).await;
    redis.wait_subscribers(&channel(), 1, SUBSCRIBE_LIMIT).await;
    let started_ms = now_ms();

    // An anonymous session rotated away by a login, the logged-in one, and a minted one.
    let mut alice = a.browser();
    alice.get("/page").await;
    let anonymous = alice.expect_token();
    alice.login("alice").await;
    let logged_in = alice.expect_token();
    let alice_id = session_id(&a.assert_serves(&logged_in, "alice", "after login").await).expect("session id");
    let (bob_id, minted) = a.admin().mint_for("bob").await;

    let dump = redis.dump().await;
    let keys: Vec<String> = dump.iter().map(|(key, _)| key.clone()).collect();
    for key in &keys {
        assert!(key.starts_with(PREFIX), "key {key:?} is outside the prefix {PREFIX:?}");
    }
    for token in [&anonymous, &logged_in, &minted] {
        // The cookie value, and the raw bytes it encodes spelled in hex.
        for secret in [token.clone(), token_bytes_hex(token)] {
            for (key, content) in &dump {
                assert!(
                    !key.contains(&secret) && !content.contains(&secret),
                    "a session token is in the store, key {key:?}: {content}"
                );
            }
        }
    }

    // The layout: the record under the token's hash, an id index and a user index.
    for (token, id, name) in [(&logged_in, &alice_id, "alice"), (&minted, &bob_id, "bob")] {
        let hash = token_hash_hex(token);
        let key =
            session_key(&keys, token).unwrap_or_else(|| panic!("no {PREFIX}s:{{..}}:{hash} for {name} among {keys:?}"));
        let record = redis.hget(key, "r").await.unwrap_or_else(|| panic!("{key} has no r"));
        serde_json::from_str::<serde_json::Value>(&record).unwrap_or_else(|e| panic!("{key} r is not JSON ({e})"));
        assert!(
            record.contains(id.as_str()),
            "{name}'s record does not name session {id}: {record}"
        );
        let seen = redis.hget(key, "s").await.unwrap_or_else(|| panic!("{key} has no s"));
        let seen: u64 = seen.parse().unwrap_or_else(|_| panic!("{key} s is not ms: {seen:?}"));
        assert!(
            (started_ms..=now_ms()).contains(&seen),
            "{key} s = {seen}, not a time during this test ({started_ms}..)"
        );
        let indexed = redis.cli(&["GET", &format!("{PREFIX}id:{id}")]).await;
        assert_eq!(indexed.trim(), hash, "{PREFIX}id:{id}");
        let members = redis.cli(&["SMEMBERS", &format!("{PREFIX}user:{name}")]).await;
        assert!(
            members.lines().any(|m| m.trim() == hash),
            "{PREFIX}user:{name}: {members}"
        );
    }
    assert_eq!(
        session_key(&keys, &anonymous),
        None,
        "the pre-login token's record outlived the login"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_does_not_start_without_redis() {
    // No redis-server here: the point is that nothing answers.
    const SECRET: &str = "hunter2-redis-password";
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"redis://:{SECRET}@127.0.0.1:{}\"\nconnect_timeout = \"300ms\"\n",
        closed_port()
    );
    let prepared = site_config(&upstream, &responder).store_section(Some(&store)).prepare();
    let config = Config::load(&prepared.path).unwrap_or_else(|e| panic!("config rejected: {e}\n{}", prepared.text));

    let start = Instant::now();
    let error = match within(secs(10), "Gateway::bind without Redis", Gateway::bind(config)).await {
        Ok(_) => panic!("the gateway started with its Redis unreachable"),
        Err(e) => e,
    };
    assert!(matches!(error, StartError::Store(_)), "{error}");
    let shown = format!("{error} / {error:?}");
    assert!(
        !shown.contains(SECRET),
        "the Redis password is in the start error: {shown}"
    );
    assert!(start.elapsed() < secs(5), "giving up took {:?}", start.elapsed());
}

/// Behind a balancer, the provider's callback may reach another instance than the one the
/// flow started on: the flow's secrets live in the session record, in the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_login_started_on_one_instance_finishes_on_the_other() {
    if redis_missing() {
        return;
    }
    let idp = crate::kit::idp::TestIdp::start().await;
    let redis = RedisServer::start().await;
    let config = format!("{}\n{}", single_store(&redis, ""), idp.gateway_section(""));
    let Pair { a, b } = Pair::start(&config).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    let mut on_a = a.browser();
    let start = on_a.get("/.sessiongate/oidc/start?rd=%2Fapp%2Fx").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text());
    let callback = idp.approve(start.header("location").expect("location")).await;
    let path = callback
        .strip_prefix(&on_a.origin())
        .unwrap_or_else(|| panic!("{callback} is not on A"))
        .to_string();

    // B gets it with the Host the browser addressed, as from a balancer.
    let mut on_b = b.presenting(&on_a.expect_token());
    let host = on_a.origin().trim_start_matches("https://").to_string();
    let reply = on_b.send(on_b.request(Method::GET, &path).header("host", host)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/app/x"));
    let token = reply.new_token();
    a.assert_serves(&token, "u-1001", "on A, after the callback on B").await;
}
