//! `last_seen` is written behind: the `s` field of a session's hash advances while the session
//! is used, at most about once per `touch_interval`, and requests served from the cache read
//! nothing from Redis.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use sessiongate::session::record::now_ms;

use super::support::{
    channel, fetch, redis_missing, session_key, single_store, Instance, RedisServer, SUBSCRIBE_LIMIT,
};
use crate::kit::secs;

/// The configured touch interval, in ms.
const TOUCH_MS: u64 = 200;
/// Requests in the counting phase.
const REQUESTS: u64 = 200;

/// The `s` field of `key` as ms.
async fn stored_last_seen(redis: &RedisServer, key: &str) -> u64 {
    let value = redis
        .hget(key, "s")
        .await
        .unwrap_or_else(|| panic!("{key} has no s field"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key}: s is not ms: {value:?}"))
}

/// How many Lua scripts (the write-behind touch) Redis has run.
async fn script_calls(redis: &RedisServer) -> u64 {
    redis.command_calls("evalsha").await + redis.command_calls("eval").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_is_written_behind_not_on_every_request() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let store = single_store(&redis, &format!("touch_interval = \"{TOUCH_MS}ms\"\n"));
    let a = Instance::start("A", &store).await;
    redis.wait_subscribers(&channel(), 1, SUBSCRIBE_LIMIT).await;

    let (_, token) = a.admin().mint_for("alice").await;
    let keys = redis.keys().await;
    let key = session_key(&keys, &token)
        .unwrap_or_else(|| panic!("no session key among {keys:?}"))
        .to_owned();
    let minted_seen = stored_last_seen(&redis, &key).await;
    assert_eq!(a.cache(&token).await.user(), Some("alice"));

    // The session in use: within a few touch intervals the stored last_seen moves.
    let start = Instant::now();
    let advanced = loop {
        a.assert_serves(&token, "alice", "using the session").await;
        let seen = stored_last_seen(&redis, &key).await;
        if seen > minted_seen {
            break seen;
        }
        assert!(
            start.elapsed() < secs(5),
            "s still {minted_seen} after {:?} of requests (touch_interval {TOUCH_MS}ms)",
            start.elapsed()
        );
    };
    assert!(advanced <= now_ms(), "s = {advanced} is in the future");
    eprintln!(
        "s advanced by {} ms after {:?}",
        advanced - minted_seen,
        start.elapsed()
    );

    // Many requests on cache hits: a few touches, not one write (nor one read) per request.
    let writes_before = script_calls(&redis).await;
    let reads_before = redis.command_calls("hmget").await;
    let hits_before = a.cache_hits().await;
    let browser = a.presenting(&token);
    let start = Instant::now();
    for n in 0..REQUESTS {
        let reply = fetch(browser.request(Method::GET, "/app/x")).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n}: {}", reply.text());
    }
    let elapsed = start.elapsed();
    let writes = script_calls(&redis).await - writes_before;
    let reads = redis.command_calls("hmget").await - reads_before;
    let hits = a.cache_hits().await - hits_before;
    eprintln!("{REQUESTS} requests in {elapsed:?}: {writes} script calls, {reads} HMGETs, {hits} cache hits");

    let allowed = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX) / TOUCH_MS + 2;
    assert!(
        writes <= allowed,
        "{writes} last_seen writes for {REQUESTS} requests in {elapsed:?}; touch_interval {TOUCH_MS}ms allows {allowed}"
    );
    assert!(
        hits >= (REQUESTS - 2) as f64,
        "only {hits} of {REQUESTS} requests were cache hits"
    );
    assert!(
        reads <= 2,
        "{reads} session reads from Redis for {REQUESTS} cached requests"
    );
    assert!(stored_last_seen(&redis, &key).await >= advanced, "s went backwards");
}
