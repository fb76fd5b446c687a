//! Binding: a session belongs to the client that logged in (its User-Agent, and its address
//! or subnet). A cookie presented by another client is refused, and with `on_mismatch =
//! "revoke"` (the default) the session is ended for everyone, so a stolen cookie is worthless.

use std::net::IpAddr;

use reqwest::StatusCode;

use super::support::{Browser, Site, USER_AGENT};
use crate::kit::GatewayConfig;

fn browser_from(site: &Site, ip: [u8; 4]) -> Browser {
    let client = site.gw.client_builder().local_address(IpAddr::from(ip)).build();
    Browser::new(&site.gw, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_agent_revokes_the_session() {
    let site = Site::start().await;
    let mut owner = site.browser().with_user_agent("Browser A");
    owner.login("alice").await;
    let token = owner.expect_token();
    assert_eq!(owner.upstream_user("/page").await.as_deref(), Some("alice"));

    let mut thief = owner.with_user_agent("Browser B");
    let stolen = thief.get("/app/x").await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{}", stolen.text());
    assert_ne!(thief.token(), Some(token.as_str()), "the mismatching cookie was kept");
    // A request without the header at all is a mismatch too.
    let mut bare = owner.with_user_agent("");
    assert_eq!(bare.get("/app/x").await.status, StatusCode::UNAUTHORIZED);

    // Revoked: the owner's own User-Agent no longer works either.
    let mut again = owner.with_token(&token);
    assert_eq!(again.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let metrics = site.admin().metrics().await;
    assert!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "fingerprint")]) >= 1.0,
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "binding_mismatch")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reject_only_the_mismatching_request_is_refused() {
    let site = Site::with(|c| c.section("[session.binding]\non_mismatch = \"reject\"\n")).await;
    let mut owner = site.browser().with_user_agent("Browser A");
    owner.login("alice").await;
    let token = owner.expect_token();

    let mut thief = owner.with_user_agent("Browser B");
    assert_eq!(thief.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let mut thief = owner.with_user_agent("Browser B");
    assert_eq!(thief.upstream_user("/page").await, None);

    let mut again = owner.with_token(&token);
    assert_eq!(again.upstream_user("/app/x").await.as_deref(), Some("alice"));
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "fingerprint")]),
        2.0
    );
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "binding_mismatch")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_ip_binding_refuses_the_cookie_from_another_address() {
    let site = Site::start().await;
    let mut owner = browser_from(&site, [127, 0, 0, 1]);
    owner.login("alice").await;
    let token = owner.expect_token();
    assert_eq!(owner.upstream_user("/app/x").await.as_deref(), Some("alice"));

    let mut elsewhere = browser_from(&site, [127, 0, 1, 5]).with_token(&token);
    assert_eq!(elsewhere.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "ip")]),
        1.0
    );

    // Revoked (the default): gone for the owner too.
    let mut again = owner.with_token(&token);
    assert_eq!(again.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

fn subnet_16(c: GatewayConfig) -> GatewayConfig {
    c.section("[session.binding]\nip = \"subnet\"\nipv4_prefix = 16\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_binding_accepts_a_neighbour_but_not_another_network() {
    let site = Site::with(subnet_16).await;
    let mut owner = browser_from(&site, [127, 0, 0, 1]);
    owner.login("alice").await;
    let token = owner.expect_token();

    let mut neighbour = browser_from(&site, [127, 0, 1, 5]).with_token(&token);
    assert_eq!(neighbour.upstream_user("/app/x").await.as_deref(), Some("alice"));
    assert_eq!(neighbour.token(), Some(token.as_str()));

    let mut far = browser_from(&site, [127, 1, 0, 1]).with_token(&token);
    assert_eq!(far.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "ip")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_binding_off_ignores_the_address_but_not_the_user_agent() {
    let site = Site::with(|c| c.section("[session.binding]\nip = \"off\"\n")).await;
    let mut owner = browser_from(&site, [127, 0, 0, 1]);
    owner.login("alice").await;
    let token = owner.expect_token();

    let mut elsewhere = browser_from(&site, [127, 9, 9, 9]).with_token(&token);
    assert_eq!(elsewhere.upstream_user("/app/x").await.as_deref(), Some("alice"));
    let mut other_ua = elsewhere.with_user_agent("Another Browser");
    assert_eq!(other_ua.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_the_session_is_bound_to_the_client_its_proxy_header_names() {
    let site = Site::with(|c| c.server("proxy_protocol_from", "[\"127.0.0.2\"]")).await;
    let (_, cookie) = site
        .admin()
        .mint(serde_json::json!({
            "user": "alice",
            "client_ip": "203.0.113.7",
            "headers": {"user-agent": USER_AGENT},
        }))
        .await;
    let balancer = IpAddr::from([127, 0, 0, 2]);
    let via = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 50000 443\r\n");
    let request = format!(
        "GET /app/x HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nCookie: {cookie}\r\n\r\n",
        site.gw.host_header()
    );

    let mut owner = site
        .gw
        .raw_via(balancer, via("203.0.113.7").as_bytes())
        .await
        .expect("connect");
    let served = owner.roundtrip(&request).await.expect("response");
    assert_eq!(served.echo().header("x-forwarded-user"), ["alice"]);

    let mut elsewhere = site
        .gw
        .raw_via(balancer, via("198.51.100.7").as_bytes())
        .await
        .expect("connect");
    let refused = elsewhere.roundtrip(&request).await.expect("response");
    assert_eq!(refused.status, 401, "{}", refused.text());
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_binding_mismatches_total", &[("kind", "ip")]),
        1.0
    );
}
