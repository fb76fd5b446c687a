//! One kept-alive connection presenting the same session again and again: the gateway
//! remembers the session each connection verified last (`session::recent`), and that memory
//! must never outlive what it remembers. Every request here goes over ONE TLS connection,
//! so a second request is answered from that memory unless something invalidated it.

use reqwest::{Method, StatusCode};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::support::{fetch, respond_path, session_id, user, Site, COOKIE, USER_AGENT};
use crate::kit::{RawConn, RawResponse};

type Conn = RawConn<TlsStream<TcpStream>>;

/// `GET path` on `conn` with the session cookie (when given) and `agent` as User-Agent.
async fn get(site: &Site, conn: &mut Conn, path: &str, token: &str, agent: &str) -> RawResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nCookie: {COOKIE}={token}\r\n\r\n",
        host = site.gw.host_header()
    );
    conn.roundtrip(request)
        .await
        .expect("response on the kept-alive connection")
}

/// The user the upstream was told about, or `None` when the gateway refused.
async fn seen_user(site: &Site, conn: &mut Conn, token: &str, agent: &str) -> Option<String> {
    let reply = get(site, conn, "/app/x", token, agent).await;
    match reply.status {
        200 => user(&reply.echo()),
        401 => None,
        other => panic!("unexpected {other}: {}", reply.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_elsewhere_is_refused_on_a_connection_that_just_used_it() {
    let site = Site::start().await;
    let admin = site.admin();
    let (id, token) = admin.mint_for("alice").await;
    let (_, other_token) = admin.mint_for("bob").await;
    let mut conn = site.gw.raw().await;
    for _ in 0..3 {
        assert_eq!(
            seen_user(&site, &mut conn, &token, USER_AGENT).await.as_deref(),
            Some("alice")
        );
    }

    // Another session ending (same cache, maybe the same generation group) changes nothing.
    let (other_id, _) = admin.mint_for("bob").await;
    let reply = fetch(admin.authed(Method::DELETE, &format!("/sessions/{other_id}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        seen_user(&site, &mut conn, &token, USER_AGENT).await.as_deref(),
        Some("alice")
    );

    let reply = fetch(admin.authed(Method::DELETE, &format!("/sessions/{id}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(seen_user(&site, &mut conn, &token, USER_AGENT).await, None);
    // The connection itself is fine: another session works on it, then the ended one still not.
    assert_eq!(
        seen_user(&site, &mut conn, &other_token, USER_AGENT).await.as_deref(),
        Some("bob")
    );
    assert_eq!(seen_user(&site, &mut conn, &token, USER_AGENT).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_agent_on_the_same_connection_is_a_binding_mismatch() {
    let site = Site::start().await;
    let (_, token) = site.admin().mint_for("alice").await;
    let mut conn = site.gw.raw().await;
    assert_eq!(
        seen_user(&site, &mut conn, &token, USER_AGENT).await.as_deref(),
        Some("alice")
    );
    assert_eq!(seen_user(&site, &mut conn, &token, "Another Browser/2").await, None);
    // The mismatch revoked the session (the default): the owner's agent is refused too.
    assert_eq!(seen_user(&site, &mut conn, &token, USER_AGENT).await, None);
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "fingerprint")]),
        1.0,
        "{}",
        metrics.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_data_set_by_the_upstream_reaches_the_next_request_on_the_same_connection() {
    let site = Site::start().await;
    let (id, token) = site.admin().mint_for("alice").await;
    let mut conn = site.gw.raw().await;
    let first = get(&site, &mut conn, "/respond/a", &token, USER_AGENT).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.echo().header("x-session-data").is_empty(), "{}", first.text());

    let set = respond_path("/respond/b", &[("X-Session-Data-Set", "cart=3")]);
    assert_eq!(get(&site, &mut conn, &set, &token, USER_AGENT).await.status, 200);
    let next = get(&site, &mut conn, "/respond/c", &token, USER_AGENT).await;
    assert_eq!(
        next.echo().header("x-session-data"),
        vec!["cart=3".to_owned()],
        "{}",
        next.text()
    );
    assert_eq!(session_id(&next.echo()).as_deref(), Some(id.as_str()));

    let set = respond_path("/respond/d", &[("X-Session-Data-Set", "cart=4")]);
    assert_eq!(get(&site, &mut conn, &set, &token, USER_AGENT).await.status, 200);
    let next = get(&site, &mut conn, "/respond/e", &token, USER_AGENT).await;
    assert_eq!(
        next.echo().header("x-session-data"),
        vec!["cart=4".to_owned()],
        "{}",
        next.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_each_request_looks_every_request_up() {
    for (recheck, recalled) in [(false, 4.0), (true, 0.0)] {
        let site = Site::with(|c| c.section(&format!("[session]\nrecheck_each_request = {recheck}\n"))).await;
        let (_, token) = site.admin().mint_for("alice").await;
        let mut conn = site.gw.raw().await;
        for _ in 0..5 {
            assert_eq!(
                seen_user(&site, &mut conn, &token, USER_AGENT).await.as_deref(),
                Some("alice")
            );
        }
        let metrics = site.admin().metrics().await;
        assert_eq!(
            metrics.value("sessiongate_session_recalls_total", &[]),
            recalled,
            "{}",
            metrics.0
        );
        assert!(
            metrics.value("sessiongate_session_cache_hits_total", &[]) >= 4.0,
            "{}",
            metrics.0
        );
    }
}
