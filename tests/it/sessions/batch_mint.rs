//! Batch minting (`POST /sessions` with `"count": N`): N distinct sessions in one request, each
//! one a working logged-in session bound like a single mint; the count is bounded; the token is
//! required; and the single-mint answer is unchanged when `count` is absent.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::support::{fetch, is_session_id_shaped, is_token_shaped, session_id, user, Site, ADMIN_TOKEN, USER_AGENT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mint_returns_distinct_sessions_that_each_work() {
    let site = Site::start().await;
    let admin = site.admin();
    let created = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);

    let minted = admin.mint_batch("alice", 5).await;
    let ids: HashSet<&str> = minted.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: HashSet<&str> = minted.iter().map(|(_, token)| token.as_str()).collect();
    assert_eq!(ids.len(), 5, "ids repeat: {minted:?}");
    assert_eq!(tokens.len(), 5, "tokens repeat: {minted:?}");

    for (id, token) in &minted {
        assert!(is_session_id_shaped(id), "{id}");
        assert!(is_token_shaped(token), "{token}");
        // Through the gateway, over TLS: the upstream sees alice and this session's own id.
        let mut client = site.browser().with_token(token);
        let reply = client.get("/app/x").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let echo = reply.echo();
        assert_eq!(user(&echo).as_deref(), Some("alice"));
        assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);
        assert_eq!(session_id(&echo).as_deref(), Some(id.as_str()));
        assert_eq!(client.token(), Some(token.as_str()), "the minted cookie was replaced");
    }

    let after = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);
    assert_eq!(after - created, 5.0);

    // Bound like a single mint: another User-Agent is refused.
    let (_, first) = &minted[0];
    let mut other_agent = site.browser().with_user_agent("X").with_token(first);
    assert_eq!(other_agent.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let listed = fetch(admin.authed(Method::GET, "/sessions?user=alice")).await.json();
    // One of the five was revoked by the mismatch above.
    assert_eq!(listed["count"], 4, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_out_of_range_is_a_bad_request_that_mints_nothing() {
    let site = Site::start().await;
    let admin = site.admin();
    let created = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);
    let body = |count: serde_json::Value| json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": USER_AGENT}, "count": count});
    for count in [
        json!(0),
        json!(100_001),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
        json!("3"),
    ] {
        let reply = fetch(admin.authed(Method::POST, "/sessions").json(&body(count.clone()))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "count {count}: {}", reply.text());
        assert!(reply.json()["error"].is_string(), "count {count}: {}", reply.text());
        assert!(!reply.text().contains("__Host-"), "count {count}: {}", reply.text());
    }
    let after = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);
    assert_eq!(after, created, "a refused batch created sessions");

    // The bounds themselves are accepted.
    assert_eq!(admin.mint_batch("alice", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mint_needs_the_bearer_token() {
    let site = Site::start().await;
    let admin = site.admin();
    let body = json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": USER_AGENT}, "count": 3});
    let wrong = format!("{ADMIN_TOKEN}x");
    for token in [None, Some(wrong.as_str())] {
        let reply = fetch(admin.request(Method::POST, "/sessions", token).json(&body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}: {}", reply.text());
        assert!(!reply.text().contains("__Host-"), "{}", reply.text());
    }
    let metrics = admin.metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_created_total", &[]),
        0.0,
        "{}",
        metrics.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_count_the_answer_is_one_id_and_cookie() {
    let site = Site::start().await;
    let reply = fetch(
        site.admin()
            .authed(Method::POST, "/sessions")
            .json(&json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": USER_AGENT}})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let json = reply.json();
    let keys: Vec<&String> = json.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    assert_eq!(keys, ["cookie", "id"], "{json}");
}
