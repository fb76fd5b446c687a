//! `[session] new_per_ip_per_minute`: one client address may create only so many anonymous
//! sessions a minute. Past it nothing is written to the store: an `optional` route is served
//! as to an anonymous visitor without a session, a `required` one answers as before but
//! without a cookie, the login form answers 429 with `Retry-After`, and sessions that exist
//! keep working. Another address has its own allowance.

use std::net::IpAddr;

use reqwest::{Method, StatusCode};

use super::support::{fetch, session_id, user, Browser, Site};
use crate::kit::HttpVersion;

const LIMIT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_an_address_is_served_without_new_sessions() {
    let site = Site::with(|c| c.section(&format!("[session]\nnew_per_ip_per_minute = {LIMIT}\n"))).await;
    let mut visitors: Vec<Browser> = Vec::new();
    for i in 0..LIMIT {
        let mut visitor = site.browser();
        let echo = visitor.get("/page").await.echo();
        assert!(
            session_id(&echo).is_some(),
            "visitor {i} within the limit has a session"
        );
        visitors.push(visitor);
    }

    // Past it: an optional route is still served, as to an anonymous visitor with no session,
    // and a forged session header is still stripped.
    let mut late = site.browser();
    let reply = fetch(late.request(Method::GET, "/page").header("x-session-id", "forged")).await;
    assert!(reply.session_cookie().is_none(), "{:?}", reply.set_cookies());
    let echo = reply.echo();
    assert_eq!(session_id(&echo), None);
    assert_eq!(user(&echo), None);
    // A required route refuses as before, without a cookie.
    let refused = late.get("/app/x").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    assert!(refused.session_cookie().is_none());
    // The login form needs a session for its CSRF secret: 429, with when to come back.
    let form = late.navigate("/.sessiongate/login").await;
    assert_eq!(form.status, StatusCode::TOO_MANY_REQUESTS, "{}", form.text());
    let retry: u64 = form
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in {:?}", form.headers));
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // Sessions made before keep working, login included (it rotates, it does not create).
    let first = &mut visitors[0];
    first.login("alice").await;
    assert_eq!(first.upstream_user("/page").await.as_deref(), Some("alice"));

    // Another address has an allowance of its own.
    let other: IpAddr = [127, 0, 0, 2].into();
    let client = site
        .gw
        .client_builder()
        .version(HttpVersion::Http1)
        .local_address(other)
        .build();
    let mut elsewhere = Browser::new(&site.gw, client);
    assert!(session_id(&elsewhere.get("/page").await.echo()).is_some());

    let admin = site.admin();
    let metrics = admin.metrics().await;
    assert_eq!(metrics.value("sessiongate_sessions_not_issued_total", &[]), 3.0);
    assert_eq!(
        metrics.value("sessiongate_sessions_created_total", &[]),
        (LIMIT + 1) as f64
    );
    let listed = fetch(admin.authed(Method::GET, "/sessions")).await.json();
    assert_eq!(listed["count"], LIMIT + 1, "{listed}");
}
