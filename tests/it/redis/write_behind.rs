//! `last_seen` is written behind: the `s` field of a session's hash advances while the session
//! is used, at most about once per `touch_interval`, and requests served from the cache read
//! nothing from Redis.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use sessiongate::config::RedisConfig;
use sessiongate::session::record::{now_ms, ClientBinding, Fingerprint, SessionRecord};
use sessiongate::session::store::redis::RedisStore;
use sessiongate::session::store::SessionStore;
use sessiongate::session::token::{SessionId, TokenHash};

use super::support::{
    channel, fetch, redis_missing, session_key, single_store, Instance, RedisCluster, RedisServer, PREFIX,
    SUBSCRIBE_LIMIT,
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

/// A record for the store-level test below.
fn record(n: u16, seen: u64) -> SessionRecord {
    SessionRecord {
        id: SessionId([(n % 251) as u8; 16]),
        identity: None,
        binding: ClientBinding {
            ip: None,
            fingerprint: Fingerprint([0; 32]),
        },
        created_at: seen,
        authenticated_at: seen,
        last_seen: seen,
        expires_at: seen + 3_600_000,
        data: String::new(),
        csrf: String::new(),
        login_entry: None,
        provider_login: false,
        servers: Vec::new(),
    }
}

/// Hashes in two runs of 1,250 sharing their first byte: the store pipelines a run per hash
/// tag, 1,000 touches at a time.
fn hashes(n: u16) -> Vec<TokenHash> {
    (0..n)
        .map(|i| {
            let mut h = [7u8; 32];
            h[0] = (i % 2) as u8;
            h[1..3].copy_from_slice(&i.to_be_bytes());
            TokenHash(h)
        })
        .collect()
}

/// One flush of many touches (several per hash tag, more than one pipeline for some) moves
/// every stored `last_seen` forward, never back, and creates nothing for a session that is
/// gone: on one node, and on a cluster, where a pipeline must stay within one slot.
async fn a_flush_of_many_touches_writes_each(config: RedisConfig, nodes: &[RedisServer]) {
    let store = RedisStore::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
    let now = now_ms();
    let (n, minted, touched, later_seen) = (2_500u16, now - 10_000, now - 5_000, now);
    let all = hashes(n);
    let (live, gone) = all.split_at(usize::from(n) - 10);
    for (i, h) in live.iter().enumerate() {
        let i = u16::try_from(i).unwrap_or(u16::MAX);
        store.put(*h, record(i, minted)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    // One session already seen later than this flush says.
    let later = live[3];
    store
        .touch(vec![(later, later_seen)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let keys_before = key_count(nodes).await;
    let flush: Vec<_> = all.iter().map(|h| (*h, touched)).collect();
    store.touch(flush).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        key_count(nodes).await,
        keys_before,
        "the touches of deleted sessions created keys"
    );
    for h in live {
        let seen = store
            .get(*h)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.last_seen);
        let want = if *h == later { later_seen } else { touched };
        assert_eq!(seen, Some(want), "last_seen of {:?}", &h.0[..3]);
    }
    for h in gone {
        assert!(store.get(*h).await.unwrap_or_else(|e| panic!("{e}")).is_none());
    }
}

/// Keys on all of `nodes`.
async fn key_count(nodes: &[RedisServer]) -> usize {
    let mut n = 0;
    for node in nodes {
        n += node.keys().await.len();
    }
    n
}

fn config(urls: Vec<String>, cluster: bool) -> RedisConfig {
    RedisConfig {
        urls,
        cluster,
        password: None,
        key_prefix: PREFIX.to_owned(),
        connect_timeout: secs(5),
        response_timeout: secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_many_touches_writes_each_on_one_node() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    a_flush_of_many_touches_writes_each(config(vec![redis.url()], false), std::slice::from_ref(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_many_touches_writes_each_on_a_cluster() {
    if redis_missing() {
        return;
    }
    let cluster = RedisCluster::start().await;
    let urls = cluster.nodes().iter().map(RedisServer::url).collect();
    a_flush_of_many_touches_writes_each(config(urls, true), cluster.nodes()).await;
}
