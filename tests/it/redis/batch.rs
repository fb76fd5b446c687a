//! Batch minting on the shared store: every session of a `"count": N` mint is written to
//! Redis (hash-tag groups, one MULTI/EXEC each) with its indexes, so another instance serves
//! all of them, on a single node and across a cluster's slots.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::support::{
    channel, cluster_store, fetch, redis_missing, single_store, Pair, RedisCluster, RedisServer, PREFIX,
    SUBSCRIBE_LIMIT,
};

/// A batch must fit under `[session] max_per_user` (default 10); appended after `[store]`.
const ROOM_FOR_BATCHES: &str = "[session]\nmax_per_user = 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_minted_on_one_instance_is_served_by_the_other_with_its_indexes() {
    if redis_missing() {
        return;
    }
    let redis = RedisServer::start().await;
    let Pair { a, b } = Pair::start(&format!("{}{ROOM_FOR_BATCHES}", single_store(&redis, ""))).await;
    redis.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    let minted = a.admin().mint_batch("bob", 40).await;
    for (i, (_, token)) in minted.iter().enumerate() {
        b.assert_serves(token, "bob", &format!("batch session {i} on B")).await;
    }
    // The indexes: bob's set holds all forty, and every id key names its session.
    let members = redis.cli(&["SCARD", &format!("{PREFIX}user:bob")]).await;
    assert_eq!(members.trim(), "40", "bob's index");
    for (id, _) in &minted {
        let hash = redis.cli(&["GET", &format!("{PREFIX}id:{id}")]).await;
        assert_eq!(hash.trim().len(), 64, "id key of {id}: {hash:?}");
    }
    let keys = redis.keys().await;
    let sessions = keys.iter().filter(|k| k.starts_with(&format!("{PREFIX}s:"))).count();
    assert_eq!(sessions, 40, "{keys:?}");

    // Listed from B by a scan of the store, bounded: the newest five of forty.
    let listed = fetch(b.admin().authed(Method::GET, "/sessions?limit=5")).await.json();
    assert_eq!(
        (&listed["count"], &listed["total"], &listed["truncated"]),
        (&json!(5), &json!(40), &json!(true)),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spans_the_slots_of_a_cluster() {
    if redis_missing() {
        return;
    }
    let cluster = RedisCluster::start().await;
    let Pair { a, b } = Pair::start(&format!("{}{ROOM_FOR_BATCHES}", cluster_store(&cluster, ""))).await;
    cluster.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;

    let minted = a.admin().mint_batch("bob", 30).await;
    for (i, (_, token)) in minted.iter().enumerate() {
        b.assert_serves(token, "bob", &format!("batch session {i} on B")).await;
    }
    let mut nodes_with_sessions = 0;
    for node in cluster.nodes() {
        if node.keys().await.iter().any(|k| k.starts_with(&format!("{PREFIX}s:"))) {
            nodes_with_sessions += 1;
        }
    }
    assert!(nodes_with_sessions > 1, "the batch landed on one node only");

    // Every session at once is not listed on a cluster: a 400 that says why, not a store
    // failure (no 503, no store error counted); by user it is.
    let metrics = a.admin().metrics().await;
    assert!(metrics.0.contains("sessiongate_store_errors_total"), "{}", metrics.0);
    let errors = metrics.value("sessiongate_store_errors_total", &[]);
    let reply = fetch(a.admin().authed(Method::GET, "/sessions")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply.text().contains("needs ?user= on a Redis cluster"),
        "{}",
        reply.text()
    );
    let after = a.admin().metrics().await.value("sessiongate_store_errors_total", &[]);
    assert_eq!(
        after, errors,
        "a listing the store cannot do was counted as a store error"
    );
    let bob = fetch(a.admin().authed(Method::GET, "/sessions?user=bob")).await.json();
    assert_eq!((&bob["count"], &bob["total"]), (&json!(30), &json!(30)), "{bob}");
}
