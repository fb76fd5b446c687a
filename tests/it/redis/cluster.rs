//! The shared store on a three-node Redis Cluster: sessions made on A are valid on B, the
//! rotation at login (old and new token in one transaction) works across slots and nodes, and
//! a logout on A reaches B.

use std::time::Instant;

use reqwest::StatusCode;

use super::support::{
    channel, cluster_store, redis_missing, token_bytes_hex, Pair, Probe, RedisCluster, PREFIX, PROPAGATION,
    SUBSCRIBE_LIMIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_shared_rotated_and_ended_across_a_redis_cluster() {
    if redis_missing() {
        return;
    }
    let cluster = RedisCluster::start().await;
    let Pair { a, b } = Pair::start(&cluster_store(&cluster, "")).await;
    cluster.wait_subscribers(&channel(), 2, SUBSCRIBE_LIMIT).await;
    let probe_b = Probe::new(&b).warm().await;

    // A minted session and several logins (so that sessions land in several slots).
    let (_, minted) = a.admin().mint_for("bob").await;
    b.assert_serves(&minted, "bob", "a session minted on A, on B").await;
    let mut tokens = Vec::new();
    for round in 0..4 {
        let mut alice = a.browser();
        alice.get("/page").await;
        let anonymous = alice.expect_token();
        let before = b.cache(&anonymous).await;
        assert_eq!(before.user(), None);

        alice.login("alice").await;
        let since = Instant::now();
        let token = alice.expect_token();
        probe_b
            .refused_within(&[&anonymous], since, PROPAGATION, "the pre-login token on B")
            .await;
        a.assert_refuses(&anonymous, "the pre-login token on A").await;
        b.assert_refuses(&anonymous, "the pre-login token on B").await;
        a.assert_serves(&token, "alice", "the new token on A").await;
        let after = b.cache(&token).await;
        assert_eq!(after.user(), Some("alice"), "round {round}");
        assert_eq!(after.id(), before.id(), "round {round}: login kept the session id");
        tokens.push(token);
    }

    // Logout on A: B refuses within 100 ms.
    let token = tokens.pop().expect("a logged-in token");
    let mut on_a = a.presenting(&token);
    let reply = on_a.logout().await;
    let since = Instant::now();
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "logout on A: {}", reply.text());
    probe_b
        .refused_within(&[&token], since, PROPAGATION, "B after logout on A")
        .await;
    b.assert_refuses(&token, "B after logout on A").await;
    for other in &tokens {
        b.assert_serves(other, "alice", "alice's other sessions on B").await;
    }

    // The sessions are in the cluster, spread over more than one node, and never as tokens.
    let dump = cluster.dump().await;
    let mut nodes_with_sessions = 0;
    for node in cluster.nodes() {
        if node.keys().await.iter().any(|k| k.starts_with(&format!("{PREFIX}s:"))) {
            nodes_with_sessions += 1;
        }
    }
    assert!(nodes_with_sessions > 1, "all sessions on one node: {dump:?}");
    for secret in tokens.iter().chain([&minted, &token]) {
        for spelled in [secret.clone(), token_bytes_hex(secret)] {
            assert!(
                !dump.iter().any(|(k, v)| k.contains(&spelled) || v.contains(&spelled)),
                "a token is in the cluster"
            );
        }
    }
}
